"""Build the architecture graph of a model (torch side; see `architecture`)."""

from __future__ import annotations

import operator

import torch
from torch import nn

from cnnviewer.engine.runtime.hooks import leaf_hooks
from cnnviewer.engine.runtime.tracing import trace
from cnnviewer.engine.structure.architecture import ArchitectureGraph, GraphNode
from cnnviewer.engine.structure.summary import Summary, field_text

_MERGES = {operator.add: "add", torch.add: "add", torch.cat: "concat", operator.mul: "multiply",
           torch.mul: "multiply", torch.flatten: "flatten", operator.sub: "subtract"}


_ACTIVATION_FUNCTIONS = {"relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
                         "leaky_relu", "elu", "softmax", "hardtanh", "mish"}


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                           nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
        return "pool"
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)):
        return "norm"
    if isinstance(module, (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
                           nn.Tanh, nn.LeakyReLU, nn.Softmax, nn.Hardtanh, nn.ELU)):
        return "activation"
    if isinstance(module, nn.Linear):
        return "linear"
    return "other"


def build_graph(model: nn.Module, summary: Summary) -> ArchitectureGraph:
    """Trace `model` into nodes and edges annotated from `summary`."""
    try:
        return _from_fx(model, summary)
    except Exception:  # noqa: BLE001 - untraceable: follow tensors through hooks instead
        return _from_hooks(model, summary)


def _from_fx(model: nn.Module, summary: Summary) -> ArchitectureGraph:
    graph = trace(model).graph
    modules = dict(model.named_modules())
    rows = {row.name: row for row in summary.rows}
    nodes, edges, ids = [], [], set()
    for node in graph.nodes:
        stack = [path.split("@")[0] for path in (node.meta.get("nn_module_stack") or {})]
        if node.op == "placeholder":
            nodes.append(GraphNode(node.name, "input", "input", None, (), "input",
                                   summary.input_shape))
        elif node.op == "output":
            nodes.append(GraphNode(node.name, "output", "output", None, (), "output"))
        elif node.op == "call_module":
            name = str(node.target)
            module, row = modules[name], rows.get(name)
            blocks = tuple(path for path in stack if path != name)
            nodes.append(GraphNode(
                node.name, name, _kind(module), name, blocks, type(module).__name__,
                row.output_shape if row else (), (row.params + row.bias_params) if row else 0,
                row.macs if row else 0, field_text(row) if row else "",
                {k: v for k, v in (row.hyper if row else {}).items()}))
        elif node.op in ("call_function", "call_method"):
            label = _MERGES.get(node.target) or getattr(node.target, "__name__", str(node.target))
            merge = len(node.all_input_nodes) > 1 or label in ("add", "concat", "multiply")
            kind = "merge" if merge else "activation" if label.rstrip("_") in _ACTIVATION_FUNCTIONS else \
                "pool" if "pool" in label else "other"
            shape = tuple(node.meta["tensor_meta"].shape)[1:] if hasattr(node.meta.get("tensor_meta"), "shape") \
                else tuple(summary.node_shapes.get(node.name, ()))   # same tracer, same node names
            nodes.append(GraphNode(node.name, label, kind, None, tuple(stack), label, shape))
        else:
            continue
        ids.add(node.name)
        edges += [(source.name, node.name) for source in node.all_input_nodes if source.name in ids]
    return ArchitectureGraph(summary.model, tuple(nodes), tuple(edges), "torch.fx")


def _from_hooks(model: nn.Module, summary: Summary) -> ArchitectureGraph:
    """Leaf modules in execution order; an edge wherever a module consumed another's output tensor."""
    rows = {row.name: row for row in summary.rows}
    producers: dict[int, str] = {}
    nodes = [GraphNode("input", "input", "input", None, (), "input", summary.input_shape)]
    edges: list[tuple[str, str]] = []
    calls: dict[str, int] = {}

    def hook_for(name: str):
        def hook(mod, args, output):
            count = calls[name] = calls.get(name, 0) + 1
            node_id = name if count == 1 else f"{name}@{count}"
            row = rows.get(name)
            parents = name.split(".")[:-1]
            blocks = tuple(".".join(parents[:i + 1]) for i in range(len(parents)))
            nodes.append(GraphNode(node_id, name, _kind(mod), name, blocks, type(mod).__name__,
                                   row.output_shape if row else (), (row.params + row.bias_params) if row else 0,
                                   row.macs if row else 0, field_text(row) if row else ""))
            for arg in args:
                if isinstance(arg, torch.Tensor):
                    edges.append((producers.get(id(arg), "input"), node_id))
            if isinstance(output, torch.Tensor):
                producers[id(output)] = node_id
        return hook

    parameter = next(model.parameters(), None)
    inputs = torch.zeros(1, *summary.input_shape, device=parameter.device if parameter is not None else "cpu",
                         dtype=parameter.dtype if parameter is not None else torch.float32)
    producers[id(inputs)] = "input"
    with leaf_hooks(model, hook_for), torch.no_grad():
        model(inputs)
    known = {node.id for node in nodes}
    return ArchitectureGraph(summary.model, tuple(nodes),
                             tuple((a, b) for a, b in edges if a in known and b in known),
                             "forward hooks (module-to-module data flow)")
