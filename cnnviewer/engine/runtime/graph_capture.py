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
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.runtime.tracing import ConfinedTracer
from cnnviewer.engine.types import LayerId

log = logging.getLogger(__name__)

_INPLACE_OPERATORS = {operator.iadd: operator.add, operator.isub: operator.sub,
                      operator.imul: operator.mul, operator.itruediv: operator.truediv}
# Per-element (or per-channel affine) modules whose output is cheap to recompute.
_RECOMPUTABLE = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU,
                 nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.GELU, nn.Identity,
                 nn.Dropout)
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
            with eval_mode(module), torch.inference_mode():   # BatchNorm: running statistics
                self._stored[node] = module(source_value)
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


def _first_proxy(value: Any) -> fx.Proxy | None:
    """The first traced value in what a module returned (what a forward hook would record)."""
    if isinstance(value, fx.Proxy):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_proxy(item)
            if found is not None:
                return found
    return None


class _OutputTracer(ConfinedTracer):
    """A tracer that notes, for every module call, the node its forward returned."""

    def __init__(self) -> None:
        super().__init__()
        self.module_outputs: dict[LayerId, fx.Node] = {}

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        output = super().call_module(m, forward, args, kwargs)
        proxy = _first_proxy(output)
        if proxy is not None:
            self.module_outputs[self.path_of_module(m)] = proxy.node   # the last call wins, as with hooks
        return output


# Operations whose result shares its input's storage: an in-place op on it writes its input.
_ALIAS_METHODS = {"view", "view_as", "reshape", "flatten", "transpose", "permute", "squeeze", "unsqueeze",
                  "narrow", "expand", "expand_as", "detach", "contiguous", "t", "chunk", "split",
                  "unflatten", "__getitem__"}
_ALIAS_FUNCTIONS = {torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze,
                    torch.unsqueeze, torch.narrow, torch.detach, torch.chunk, torch.split,
                    operator.getitem, torch.nn.functional.dropout}
_ALIAS_MODULES = (nn.Identity, nn.Dropout, nn.Flatten, nn.Unflatten)


def _inplace_name(node: fx.Node) -> str | None:
    """The name of an in-place function or method ('relu_', 'leaky_relu_'), else None."""
    if node.op == "call_function" and node.target in _INPLACE_OPERATORS:
        return getattr(node.target, "__name__", "iop")
    name = getattr(node.target, "__name__", "") if node.op == "call_function" else \
        str(node.target) if node.op == "call_method" else ""
    if name.endswith("_") and not name.startswith("_"):
        return name
    if node.kwargs.get("inplace") is True:
        return name or "inplace"
    return None


class GraphRecorder:
    """A traced, out-of-place copy of a model that also returns all module outputs."""

    def __init__(self, model: nn.Module) -> None:
        tracer = _OutputTracer()
        graph = tracer.trace(model)
        module = fx.GraphModule(tracer.root, graph)
        self.module = module
        kept = self._choose_outputs(tracer.module_outputs, dict(model.named_modules()))
        self._make_out_of_place(module, kept)
        self._return_outputs(module.graph, kept)
        module.recompile()
        self.verified = False   # set once its output has matched the model's own

    def __call__(self, inputs: Tensor) -> tuple[Any, Activations]:
        """Run the model once: (its output, module name -> output tensor)."""
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
        """Make in-place operations that would write a kept tensor out of place.

        'Would write' follows aliases: an in-place ReLU after an Identity, a
        Dropout or a view writes the tensor those were given. In-place ops on
        tensors that are not kept (a BatchNorm output recomputed on demand)
        stay in place: nothing recorded changes, and no memory is spent. The
        original model is untouched.
        """
        owner: dict[str, str] = {}          # node -> the node whose storage it uses

        def storage(arg: Any) -> str | None:
            return owner.get(arg.name, arg.name) if isinstance(arg, fx.Node) else None

        for node in list(module.graph.nodes):
            first = node.args[0] if node.args else node.kwargs.get("input")
            source = storage(first)
            target = module.get_submodule(node.target) if node.op == "call_module" else None
            in_place = _inplace_name(node) is not None or getattr(target, "inplace", False) is True
            if in_place and source in kept:
                GraphRecorder._out_of_place(module, node, target)
                in_place = False
            aliasing = (in_place or isinstance(target, _ALIAS_MODULES)
                        or (node.op == "call_method" and node.target in _ALIAS_METHODS)
                        or (node.op == "call_function" and node.target in _ALIAS_FUNCTIONS))
            if aliasing and source is not None:
                owner[node.name] = source

    @staticmethod
    def _out_of_place(module: fx.GraphModule, node: fx.Node, target: nn.Module | None) -> None:
        """Rewrite one in-place node to its out-of-place twin, or give it a copy to write."""
        if target is not None:
            replacement = copy.copy(target)
            replacement.inplace = False
            parent, _, leaf = node.target.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, leaf, replacement)
            return
        if node.op == "call_function" and node.target in _INPLACE_OPERATORS:
            node.target = _INPLACE_OPERATORS[node.target]
            return
        if node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
            return
        name = _inplace_name(node) or ""
        if node.op == "call_method" and hasattr(Tensor, name[:-1]):
            node.target = name[:-1]
            return
        for namespace in (torch, torch.nn.functional):
            if node.op == "call_function" and hasattr(namespace, name[:-1]):
                node.target = getattr(namespace, name[:-1])
                return
        with module.graph.inserting_before(node):   # no twin (e.g. fill_): let it write a copy
            copied = module.graph.call_method("clone", (node.args[0],))
        node.args = (copied, *node.args[1:])

    def _choose_outputs(self, module_outputs: dict[LayerId, fx.Node],
                        modules: dict[str, nn.Module]) -> dict[str, fx.Node]:
        """Decide which nodes the graph returns; the rest are recomputed from them on demand."""
        wanted = {name: module_outputs[name] for name in modules if name and name in module_outputs}
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
    with eval_mode(model):
        try:
            recorder: GraphRecorder | None = GraphRecorder(model)
        except Exception as error:  # noqa: BLE001 - any tracing failure means: use hooks
            log.info("torch.fx cannot trace %s (%s); recording with hooks", type(model).__name__, error)
            recorder = None
    with _lock:
        _recorders[model] = recorder
    return recorder


def forget(model: nn.Module) -> None:
    """Drop a model's recorder (e.g. after it failed at run time)."""
    with _lock:
        _recorders[model] = None
