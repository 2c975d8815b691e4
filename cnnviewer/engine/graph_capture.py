"""Record every module's output without hooks, through a torch.fx rewrite.

Forward hooks cost a Python call per module per pass, plus clones where
in-place operations would overwrite a recorded tensor. For a small, fast model
(MobileNetV2: 213 modules, ~16 ms a pass) that overhead is larger than the
15 % the app allows. Instead, the model is traced once with torch.fx into a
graph module that:

- shares every parameter and leaf module with the original (nothing copied),
- returns, beside the model's output, what each named module produced (for a
  container: the last node executed inside it, as a hook would see),
- runs out of place: in-place ReLUs, `+=` and `relu_()` become their
  out-of-place forms, so no recorded tensor is overwritten and none is cloned.

Keeping ~100 MiB of activations alive per pass costs memory bandwidth, so the
outputs of cheap per-element modules (BatchNorm in eval mode, ReLU and its
kin, Identity, Dropout) are not kept: they are recomputed from their recorded
input, by the same module, only when someone looks at them (`Activations`).
That is exact: the same operation on the same tensor.

Models that torch.fx cannot trace (data-dependent control flow) return None
from `graph_recorder`; the caller falls back to hooks.
"""

from __future__ import annotations

import copy
import logging
import operator
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from cnnviewer.engine.types import LayerId

log = logging.getLogger(__name__)

_INPLACE_OPERATORS = {operator.iadd: operator.add, operator.isub: operator.sub,
                      operator.imul: operator.mul, operator.itruediv: operator.truediv}
# Per-element (or per-channel affine) modules whose output is cheap to recompute.
_RECOMPUTABLE = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU,
                 nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.GELU, nn.Identity,
                 nn.Dropout)
_CALL_SUFFIX = re.compile(r"@\d+$")
_recorders: weakref.WeakKeyDictionary[nn.Module, GraphRecorder | None] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class Activations(Mapping[LayerId, Tensor]):
    """Module name -> output tensor, recomputing derived outputs on first access.

    `transform` (e.g. drop the batch dimension, move to the CPU) is applied to
    every value handed out. Used from the job thread only.
    """

    def __init__(self, names: dict[LayerId, str], stored: dict[str, Tensor],
                 recipes: dict[str, tuple[nn.Module, str]],
                 transform: Callable[[Tensor], Tensor] | None = None) -> None:
        self._names, self._stored, self._recipes = names, stored, recipes
        self._transform = transform
        self._done: dict[LayerId, Tensor] = {}

    @staticmethod
    def of(recorded: dict[LayerId, Tensor]) -> Activations:
        """Wrap plainly recorded tensors (the hook path)."""
        return Activations({name: name for name in recorded}, dict(recorded), {})

    def with_transform(self, transform: Callable[[Tensor], Tensor]) -> Activations:
        """The same activations, each passed through `transform` when read."""
        return Activations(self._names, self._stored, self._recipes, transform)

    def shape(self, name: LayerId) -> tuple[int, ...]:
        """A module's output shape without computing a derived output (they keep their input's)."""
        node = self._names[name]
        while node in self._recipes:
            node = self._recipes[node][1]
        shape = tuple(self._stored[node].shape)
        return shape[1:] if self._transform is not None else shape

    def _value(self, node: str) -> Tensor:
        if node not in self._stored:
            module, source = self._recipes[node]
            source_value = self._value(source)
            training = module.training
            module.training = False          # BatchNorm: running statistics, as in the pass
            try:
                with torch.inference_mode():
                    self._stored[node] = module(source_value)
            finally:
                module.training = training
        return self._stored[node]

    def __getitem__(self, name: LayerId) -> Tensor:
        if name not in self._done:
            value = self._value(self._names[name])
            self._done[name] = self._transform(value) if self._transform is not None else value
        return self._done[name]

    def __iter__(self) -> Iterator[LayerId]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class GraphRecorder:
    """A traced, out-of-place copy of a model that also returns all module outputs."""

    def __init__(self, model: nn.Module) -> None:
        tracer = fx.Tracer()
        graph = tracer.trace(model)
        module = fx.GraphModule(tracer.root, graph)
        self.module = module
        kept = self._choose_outputs(module.graph, dict(model.named_modules()))
        self._make_out_of_place(module, kept)
        self._return_outputs(module.graph, kept)
        module.recompile()
        self.verified = False   # set once its output has matched the model's own

    def __call__(self, inputs: Tensor) -> tuple[Any, Activations]:
        """Run the model once: (its output, module name -> output tensor)."""
        from cnnviewer.engine.hooks import first_tensor

        output, kept = self.module(inputs)
        stored = {node: first_tensor(value) for node, value in zip(self._kept, kept)}
        stored = {node: value for node, value in stored.items() if value is not None}
        names = {name: node for name, node in self._layer_nodes.items()
                 if node in stored or node in self._recipes}
        stored["__output__"] = first_tensor(output)
        if stored["__output__"] is not None:
            names[""] = "__output__"
        return output, Activations(names, stored, dict(self._recipes))

    @staticmethod
    def _make_out_of_place(module: fx.GraphModule, kept: dict[str, fx.Node]) -> None:
        """Make in-place operations on kept tensors out of place (the original model is untouched).

        An in-place ReLU after a BatchNorm whose output is recomputed, not kept,
        stays in place: nothing recorded is overwritten, and no memory is spent.
        """
        for node in module.graph.nodes:
            first = node.args[0] if node.args else None
            if not (isinstance(first, fx.Node) and first.name in kept):
                continue
            if node.op == "call_module":
                target = module.get_submodule(node.target)
                if getattr(target, "inplace", False) is True:
                    replacement = copy.copy(target)
                    replacement.inplace = False
                    parent, _, leaf = node.target.rpartition(".")
                    setattr(module.get_submodule(parent) if parent else module, leaf, replacement)
            elif node.op == "call_function":
                if node.target in _INPLACE_OPERATORS:
                    node.target = _INPLACE_OPERATORS[node.target]
                elif node.kwargs.get("inplace") is True:
                    node.kwargs = {**node.kwargs, "inplace": False}
                else:
                    name = getattr(node.target, "__name__", "")
                    if name.endswith("_") and not name.startswith("_") and hasattr(torch, name[:-1]):
                        node.target = getattr(torch, name[:-1])
            elif node.op == "call_method":
                name = str(node.target)
                if name.endswith("_") and not name.startswith("_") and hasattr(Tensor, name[:-1]):
                    node.target = name[:-1]

    def _choose_outputs(self, graph: fx.Graph, modules: dict[str, nn.Module]) -> dict[str, fx.Node]:
        """Decide which nodes the graph returns; the rest are recomputed from them on demand."""
        last_node: dict[LayerId, fx.Node] = {}
        for node in graph.nodes:
            for path in node.meta.get("nn_module_stack") or {}:
                last_node[_CALL_SUFFIX.sub("", path)] = node
            if node.op == "call_module":
                last_node[str(node.target)] = node
        wanted = {name: last_node[name] for name in modules if name and name in last_node}
        self._recipes: dict[str, tuple[nn.Module, str]] = {}
        kept: dict[str, fx.Node] = {}

        def require(node: fx.Node) -> None:
            if node.name in kept or node.name in self._recipes:
                return
            source = node.args[0] if node.args else None
            target = self.module.get_submodule(node.target) if node.op == "call_module" else None
            if (isinstance(target, _RECOMPUTABLE) and len(node.args) == 1 and not node.kwargs
                    and isinstance(source, fx.Node)):
                recompute = copy.copy(target)
                if getattr(recompute, "inplace", False):
                    recompute.inplace = False     # recomputing must not touch its source
                self._recipes[node.name] = (recompute, source.name)
                require(source)
            else:
                kept[node.name] = node

        for node in wanted.values():
            require(node)
        self._layer_nodes = {name: node.name for name, node in wanted.items()}
        self._kept = list(kept)
        return kept

    @staticmethod
    def _return_outputs(graph: fx.Graph, kept: dict[str, fx.Node]) -> None:
        """Make the graph return (original output, kept tensors)."""
        output = next(node for node in graph.nodes if node.op == "output")
        with graph.inserting_before(output):
            graph.output((output.args[0], tuple(kept.values())))
        graph.erase_node(output)


def graph_recorder(model: nn.Module) -> GraphRecorder | None:
    """The cached recorder of `model` (traced in eval mode), or None if it does not trace."""
    with _lock:
        if model in _recorders:
            return _recorders[model]
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        recorder: GraphRecorder | None = GraphRecorder(model)
    except Exception as error:  # noqa: BLE001 - any tracing failure means: use hooks
        log.info("torch.fx cannot trace %s (%s); recording with hooks", type(model).__name__, error)
        recorder = None
    finally:
        for module, training in modes.items():
            module.training = training
    with _lock:
        _recorders[model] = recorder
    return recorder


def forget(model: nn.Module) -> None:
    """Drop a model's recorder (e.g. after it failed at run time)."""
    with _lock:
        _recorders[model] = None
