"""The model as a graph: nodes for layers and merges, edges for data flow, a layered layout.

`build_graph` (job thread, torch) traces the model with torch.fx, keeping leaf
modules as nodes and functional merges (add, cat, mul, flatten, ...) as nodes
of their own, each annotated from the model summary (shape, weights, MACs,
receptive field). Models torch.fx cannot trace get a graph from forward hooks
that records which module's output tensor each module consumed.

`layout` (torch-free) collapses chosen blocks into single nodes and places
everything with igraph's Sugiyama (layered) layout: longest-path layers top to
bottom, one dummy vertex per layer that a long edge crosses (so edges get room
and bend points), crossings reduced by igraph's barycentre heuristic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnviewer.engine.types import LayerId

KINDS = ("input", "conv", "pool", "norm", "activation", "linear", "merge", "block", "other", "output")


@dataclass(frozen=True)
class GraphNode:
    """One operation (or a collapsed block) in the architecture graph."""

    id: str
    label: str
    kind: str                           # one of KINDS
    layer: LayerId | None               # the module it runs, for selection (None for functions)
    blocks: tuple[str, ...] = ()        # enclosing modules, outermost first ('layer1', 'layer1.0')
    type_name: str = ""
    output_shape: tuple[int, ...] = ()
    params: int = 0
    macs: int = 0
    rf: str = ""                        # e.g. '35 (jump 4)' or 'whole image'
    hyper: dict = field(default_factory=dict)

    def tooltip(self) -> str:
        """Type, hyper-parameters, shape, weights, MACs and receptive field, one per line."""
        lines = [f"{self.label}  ({self.type_name or self.kind})"]
        if self.hyper:
            lines.append(", ".join(f"{k} {v}" for k, v in self.hyper.items()))
        if self.output_shape:
            lines.append("output " + "×".join(map(str, self.output_shape)))
        if self.params or self.macs:
            lines.append(f"{self.params:,} weights, {self.macs:,} MACs")
        if self.rf:
            lines.append(f"receptive field {self.rf}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ArchitectureGraph:
    """Nodes in execution order and directed edges between their ids."""

    model: str
    nodes: tuple[GraphNode, ...]
    edges: tuple[tuple[str, str], ...]
    method: str

    def blocks(self) -> set[str]:
        """Every module that encloses at least one node (what can be collapsed)."""
        return {block for node in self.nodes for block in node.blocks}


@dataclass(frozen=True)
class PlacedNode:
    """A visible node (or collapsed block) with its centre in layout units."""

    node: GraphNode
    x: float
    y: float
    members: tuple[str, ...]            # ids of the original nodes it stands for


@dataclass(frozen=True)
class Layout:
    """Positions of visible nodes and polyline edges (layout units: one layer = 1.0)."""

    nodes: tuple[PlacedNode, ...]
    edges: tuple[tuple[tuple[float, float], ...], ...]
    collapsed: frozenset[str]


def _visible_id(node: GraphNode, collapsed: frozenset[str]) -> str:
    """The block a node is folded into (its outermost collapsed block), or the node itself."""
    for block in node.blocks:
        if block in collapsed:
            return f"block:{block}"
    return node.id


def layout(graph: ArchitectureGraph, collapsed: frozenset[str] = frozenset()) -> Layout:
    """Place the graph with collapsed blocks shown as single nodes."""
    import igraph

    visible: dict[str, GraphNode] = {}
    members: dict[str, list[str]] = {}
    for node in graph.nodes:
        key = _visible_id(node, collapsed)
        members.setdefault(key, []).append(node.id)
        if key not in visible:
            if key.startswith("block:"):
                block = key[len("block:"):]
                inside = [n for n in graph.nodes if block in n.blocks]
                visible[key] = GraphNode(
                    id=key, label=block, kind="block", layer=block,
                    blocks=node.blocks[:node.blocks.index(block)], type_name="block (double-click to open)",
                    output_shape=inside[-1].output_shape, params=sum(n.params for n in inside),
                    macs=sum(n.macs for n in inside), rf=inside[-1].rf)
            else:
                visible[key] = node
    keys = list(visible)
    index = {key: i for i, key in enumerate(keys)}
    owner = {node_id: key for key, ids in members.items() for node_id in ids}
    edges = sorted({(index[owner[a]], index[owner[b]]) for a, b in graph.edges
                    if owner[a] != owner[b]})
    # Longest-path layering (keys are in execution order, so edges point forward), then one
    # dummy vertex per layer crossed by a long edge: igraph places them like nodes, which
    # reserves room for the edge and gives its bend points.
    level = [0] * len(keys)
    for a, b in edges:
        level[b] = max(level[b], level[a] + 1)
    extended, layers, chains = [], list(level), []
    for a, b in edges:
        chain = [a]
        for step in range(level[a] + 1, level[b]):
            layers.append(step)
            chain.append(len(layers) - 1)
        chain.append(b)
        extended += list(zip(chain, chain[1:]))
        chains.append(chain)
    ig = igraph.Graph(n=len(layers), edges=extended, directed=True)
    coords = ig.layout_sugiyama(layers=layers, maxiter=100).coords
    positions = coords[:len(keys)]
    polylines = [tuple(tuple(coords[v]) for v in chain) for chain in chains]
    placed = tuple(PlacedNode(visible[key], positions[i][0], positions[i][1], tuple(members[key]))
                   for i, key in enumerate(keys))
    return Layout(placed, tuple(polylines), collapsed)


def default_collapsed(graph: ArchitectureGraph, limit: int = 160) -> frozenset[str]:
    """Blocks to fold at first so a big model opens readable.

    The deepest level of blocks whose folding leaves at most `limit` nodes and
    not many more edges than nodes (DenseNet's layers fan into every later
    concatenation, so there the dense blocks themselves fold).
    """
    blocks = graph.blocks()
    if len(graph.nodes) <= limit or not blocks:
        return frozenset()

    def readable(chosen: frozenset[str]) -> bool:
        owner = {n.id: _visible_id(n, chosen) for n in graph.nodes}
        edges = {(owner[a], owner[b]) for a, b in graph.edges if owner[a] != owner[b]}
        count = len(set(owner.values()))
        return count <= limit and len(edges) <= 2 * count

    deepest = max(block.count(".") for block in blocks)
    for depth in range(deepest, -1, -1):
        chosen = frozenset(b for b in blocks if b.count(".") == depth)
        if readable(chosen):
            return chosen
    return frozenset(b for b in blocks if "." not in b)
