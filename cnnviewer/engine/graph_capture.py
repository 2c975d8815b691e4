"""Record every module's output without hooks, through a torch.fx rewrite.

Forward hooks cost a Python call per module per pass, plus clones where
in-place operations would overwrite a recorded tensor. For a small, fast model
(MobileNetV2: 213 modules, ~18 ms a pass) that overhead is larger than the
15 % the app allows. Instead, the model is traced once with torch.fx into a
graph module that:

- shares every parameter and leaf module with the original (nothing copied),
- returns, beside the model's output, the tensor each named module produced
  (for a container: the last node executed inside it, as a hook would see),
- runs out of place: in-place ReLUs, `+=` and `relu_()` become their
  out-of-place forms, so no recorded tensor is overwritten and none is cloned.

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
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from cnnviewer.engine.types import LayerId

log = logging.getLogger(__name__)

_INPLACE_OPERATORS = {operator.iadd: operator.add, operator.isub: operator.sub,
                      operator.imul: operator.mul, operator.itruediv: operator.truediv}
_CALL_SUFFIX = re.compile(r"@\d+$")
_recorders: weakref.WeakKeyDictionary[nn.Module, GraphRecorder | None] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class GraphRecorder:
    """A traced, out-of-place copy of a model that also returns all module outputs."""

    def __init__(self, model: nn.Module) -> None:
        tracer = fx.Tracer()
        graph = tracer.trace(model)
        module = fx.GraphModule(tracer.root, graph)
        self._make_out_of_place(module)
        self.names = self._rewrite_outputs(module.graph, dict(model.named_modules()))
        module.recompile()
        self.module = module
        self.verified = False   # set once its output has matched the model's own

    def __call__(self, inputs: Tensor) -> tuple[Any, dict[LayerId, Tensor]]:
        """Run the model once: (its output, module name -> output tensor)."""
        from cnnviewer.engine.hooks import first_tensor

        output, recorded = self.module(inputs)
        tensors = {name: first_tensor(value) for name, value in zip(self.names, recorded)}
        tensors[""] = first_tensor(output)
        return output, {name: value for name, value in tensors.items() if value is not None}

    @staticmethod
    def _make_out_of_place(module: fx.GraphModule) -> None:
        """Turn in-place operations into out-of-place ones (the original model is untouched)."""
        for node in module.graph.nodes:
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

    @staticmethod
    def _rewrite_outputs(graph: fx.Graph, modules: dict[str, nn.Module]) -> list[LayerId]:
        """Make the graph return (original output, outputs of every named module)."""
        last_node: dict[LayerId, fx.Node] = {}
        for node in graph.nodes:
            stack = node.meta.get("nn_module_stack") or {}
            for path in stack:
                last_node[_CALL_SUFFIX.sub("", path)] = node
            if node.op == "call_module":
                last_node[str(node.target)] = node
        names = [name for name in modules if name and name in last_node]
        output = next(node for node in graph.nodes if node.op == "output")
        original = output.args[0]
        with graph.inserting_before(output):
            new_output = graph.output((original, tuple(last_node[name] for name in names)))
        graph.erase_node(output)
        del new_output
        return names


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
