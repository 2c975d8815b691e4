"""Make the blocks of a converted ONNX graph run as modules of their own, as they do in PyTorch.

onnx2torch gives one flat graph: with the exporter's names back (onnx_names),
'features.3' is a container of layers that are each called from the top-level
graph, so the container itself never runs: it has no output to show, no input
to skip in a lesion study. Here every container whose layers form one
contiguous stretch of the graph with a single value leaving it becomes a
``torch.fx.GraphModule`` computing that stretch (its inputs: the values coming
in), nested as the exporter's scopes are. A container that does not qualify
(its layers interleaved with others', or two values leaving it) stays a plain
container, and its children are tried instead.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import fx, nn

SEQUENCE = "Sequential"   # a container whose children are named 0, 1, 2, …, as PyTorch's Sequential's are
BLOCK = "Block"


def nest_blocks(module: fx.GraphModule) -> fx.GraphModule:
    """The same computation with each qualifying container a module that runs (see the module doc)."""
    _nest_level(module, module.graph)
    module.recompile()
    return module


def _nest_level(owner: nn.Module, graph: fx.Graph) -> None:
    """Nest the containers directly below `owner` whose layers are called in `graph`."""
    for name, child in list(owner.named_children()):
        if type(child) is not nn.Module:   # a layer, or a block nested already
            continue
        region = [node for node in graph.nodes if node.op == "call_module" and node.target.startswith(name + ".")]
        built = _as_block(owner, graph, name, region) if region else None
        if built is None:                  # stays a container: its own children may still qualify
            _nest_children(owner, graph, name, child)


def _nest_children(owner: nn.Module, graph: fx.Graph, name: str, container: nn.Module) -> None:
    """Try the children of a container that stays one, in the graph that calls them."""
    for child_name, child in list(container.named_children()):
        if type(child) is not nn.Module:
            continue
        dotted = f"{name}.{child_name}"
        region = [node for node in graph.nodes if node.op == "call_module" and node.target.startswith(dotted + ".")]
        if not region or _as_block(owner, graph, dotted, region) is None:
            _nest_children(owner, graph, dotted, child)


def _as_block(owner: nn.Module, graph: fx.Graph, name: str, calls: list[fx.Node]) -> fx.GraphModule | None:
    """Replace the stretch of `graph` that `calls` (and what only they use) spans by one call of a new
    GraphModule at `name`; None, leaving everything as it was, when the stretch does not qualify."""
    order = {node: i for i, node in enumerate(graph.nodes)}
    first, last = min(order[n] for n in calls), max(order[n] for n in calls)
    inside = set(calls)
    for node in graph.nodes:   # getitem & co. between the calls, computed from them, belong to the block
        if first < order[node] < last and node.op == "call_function" and node.all_input_nodes \
                and all(arg in inside for arg in node.all_input_nodes):
            inside.add(node)
    stretch = [node for node in graph.nodes if first <= order[node] <= last and node.op != "get_attr"]
    if any(node not in inside for node in stretch):
        return None                                          # interleaved with other layers
    leaving = [node for node in inside if any(user not in inside for user in node.users)]
    if len(leaving) != 1 or leaving[0].op == "output":
        return None
    inputs: list[fx.Node] = []
    for node in stretch:
        for arg in node.all_input_nodes:
            if arg not in inside and arg.op != "get_attr" and arg not in inputs:
                inputs.append(arg)
    block = _build(owner, graph, name, stretch, inputs, leaving[0])
    with graph.inserting_before(stretch[0]):
        call = graph.call_module(name, tuple(inputs))
    leaving[0].replace_all_uses_with(call)
    for node in reversed(stretch):
        graph.erase_node(node)
    for node in list(graph.nodes):     # constants only the block used: it holds its own reference
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    _nest_level(block, block.graph)
    block.recompile()
    chain = _as_sequential(block)
    _set(owner, name, chain if chain is not None else block)
    return block


def _as_sequential(block: fx.GraphModule) -> nn.Sequential | None:
    """The block as an nn.Sequential when it only calls its children in turn, each on the one before's
    output (as a Sequential does): tools that know containers (the lesion study) then treat it as one."""
    nodes = [node for node in block.graph.nodes]
    calls = nodes[1:-1]
    if len(nodes) < 3 or nodes[0].op != "placeholder" or nodes[-1].op != "output" or nodes[-1].args[0] is not nodes[-2]:
        return None
    previous = nodes[0]
    for node in calls:
        if node.op != "call_module" or "." in str(node.target) or node.args != (previous,) or node.kwargs:
            return None
        previous = node
    if [str(node.target) for node in calls] != [name for name, _ in block.named_children()]:
        return None      # each child called once, in the order a Sequential would call them
    return nn.Sequential(OrderedDict((name, child) for name, child in block.named_children()))


def _build(owner: nn.Module, graph: fx.Graph, name: str, stretch: list[fx.Node], inputs: list[fx.Node],
           result: fx.Node) -> fx.GraphModule:
    """A GraphModule computing `stretch` from `inputs`, its layers at names relative to `name`."""
    inner = fx.Graph()
    values: dict[fx.Node, fx.Node] = {}
    for i, node in enumerate(inputs):
        values[node] = inner.placeholder(f"input_{i}")
    root = nn.Module()
    for node in stretch:
        for arg in node.all_input_nodes:
            if arg.op == "get_attr" and arg not in values:     # a constant: the block holds it too
                buffer = str(arg.target).replace(".", "_")
                root.register_buffer(buffer, owner.get_buffer(str(arg.target)))
                values[arg] = inner.get_attr(buffer)
        copied = inner.node_copy(node, lambda arg: values[arg])
        if node.op == "call_module":
            relative = str(node.target)[len(name) + 1:]
            _set(root, relative, owner.get_submodule(str(node.target)), create=True)
            copied.target = relative
        values[node] = copied
    inner.output(values[result])
    container = owner.get_submodule(name)
    children = [child for child, _ in container.named_children()]
    kind = SEQUENCE if children and all(child.isdigit() for child in children) else BLOCK
    return fx.GraphModule(root, inner, class_name=kind)


def _set(root: nn.Module, dotted: str, module: nn.Module, create: bool = False) -> None:
    """Put `module` at a dotted path (creating plain containers on the way when `create`)."""
    *path, leaf = dotted.split(".")
    parent = root
    for part in path:
        if create and not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    parent._modules[leaf] = module     # replaces the container in place, keeping the children's order
