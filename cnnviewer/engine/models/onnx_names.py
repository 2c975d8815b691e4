"""Give a converted ONNX graph's modules the exporting framework's layer names.

onnx2torch names each module after its ONNX node ('features/features/0/
features/0/0/Conv'). PyTorch's exporters say which module a node came from:
the legacy exporter in the node name's scope path ('/features/features.0/
features.0.0/Conv'), the dynamo exporter in the node's metadata
(``pkg.torch.onnx.name_scopes``). Named back ('features.0.0'), the layer tree
reads like the PyTorch model's, and Compare lines the two up layer by layer.
"""

from __future__ import annotations

import ast
import re

import onnx
from torch import fx, nn

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def scope_of(node: onnx.NodeProto) -> str | None:
    """The exporting framework's module path for a node ('' at the root), or None when it does not say.

    PyTorch's dynamo exporter stores the scopes in the node's metadata; the
    legacy exporter names nodes '/features/features.0/features.0.0/Conv'.
    """
    for prop in node.metadata_props:
        if prop.key == _SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                return None
            return _chained(scopes[1:-1])
    if node.name.startswith("/"):
        return _chained(node.name.split("/")[1:-1])
    return None


def _chained(path: list[str]) -> str | None:
    """The dotted module name a scope path spells.

    A scope either qualifies the one before ('features' -> 'features.0', as a
    Sequential's children are named) or is an attribute of it ('conv' inside
    'features.3'): the legacy exporter writes the first kind relative to the
    last module that was not a container, the dynamo exporter writes full names.
    """
    full, previous = "", ""
    for scope in path:
        if previous and scope.startswith(previous + "."):
            full += scope[len(previous):]
        else:
            full = f"{full}.{scope}" if full else scope
        previous = scope
    return full if not full or _DOTTED.match(full) else None


def layer_names(model: onnx.ModelProto, reserved: frozenset[str] = frozenset()) -> dict[str, str]:
    """onnx2torch's module name for each node -> the name it is given here.

    `reserved`: names already used at the root (the constants' buffers), which no module takes.

    A node takes its scope's name when it is the only node there and no other
    node lies inside that scope; else '<scope>.<Op>' (numbered when repeated)
    keeps it beside the scope's other layers; else onnx2torch's own name.
    """
    from onnx2torch.onnx_graph import OnnxGraph

    unique = list(OnnxGraph(model.graph).nodes)
    scopes = [scope_of(node) for node in model.graph.node]
    counts: dict[str, int] = {}
    for scope in scopes:
        if scope:
            counts[scope] = counts.get(scope, 0) + 1
    parents = {scope.rsplit(".", i)[0] for scope in counts for i in range(1, scope.count(".") + 1)}
    names: dict[str, str] = {}
    taken: set[str] = set(reserved)
    inside: set[str] = set()     # the containers the names chosen so far create
    ops: dict[tuple[str, str], int] = {}
    for own, node, scope in zip(unique, model.graph.node, scopes):
        chosen = own
        if scope and counts[scope] == 1 and scope not in parents:
            chosen = scope
        elif scope:
            index = ops[scope, node.op_type] = ops.get((scope, node.op_type), -1) + 1
            chosen = f"{scope}.{node.op_type}" + (f"_{index}" if index else "")
        if chosen != own and (chosen in taken or chosen in inside or chosen != scope and chosen in counts
                              or any(p in taken for p in _prefixes(chosen))
                              or any(hasattr(nn.Module, part) for part in chosen.split("."))):
            chosen = own     # a leaf would also be a parent, two modules would share a name, or a part
            #                  would shadow nn.Module's own attributes ('train', 'forward')
        while chosen == own and (chosen in taken or chosen in inside):   # onnx2torch's names are unique only
            chosen += "_"                                                 # among themselves
        names[own] = chosen
        taken.add(chosen)
        inside.update(_prefixes(chosen))
    return names


def _prefixes(dotted: str) -> list[str]:
    """'a.b.c' -> ['a', 'a.b']."""
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def renamed(module: fx.GraphModule, model: onnx.ModelProto) -> fx.GraphModule:
    """The graph with modules at the names of `layer_names`, and its constants as the root's buffers."""
    graph = module.graph
    buffers = frozenset(str(node.target).removeprefix("initializers.") for node in graph.nodes
                        if node.op == "get_attr" and str(node.target).startswith("initializers."))
    names = layer_names(model, buffers)   # a node named 'onnx_initializer_0' must not take a buffer's name
    root = nn.Module()
    for node in graph.nodes:
        if node.op == "call_module":
            new = names.get(node.target, node.target)
            _install(root, new, module.get_submodule(node.target))
            node.target = new
        elif node.op == "get_attr" and str(node.target).startswith("initializers."):
            buffer = str(node.target).removeprefix("initializers.")
            root.register_buffer(buffer, module.get_buffer(node.target))
            node.target = buffer
    converted = fx.GraphModule(root, graph, class_name="OnnxGraph")
    return converted


def _install(root: nn.Module, dotted: str, child: nn.Module) -> None:
    """Set `child` at a dotted path, creating plain containers on the way."""
    *path, leaf = dotted.split(".")
    parent = root
    for part in path:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    parent.add_module(leaf, child)
