"""The architecture graph: skip connections and concatenations as such, layout, folding, fallback."""

from __future__ import annotations

import torchvision
from torch import nn

from cnnviewer.engine.structure.architecture import default_collapsed, layout
from cnnviewer.engine.structure.architecture_graph import build_graph
from cnnviewer.engine.structure.summary_graph import summarize


def graph_of(model: nn.Module, size: int = 64):
    model.eval()
    return build_graph(model, summarize(model, (size, size)))


def test_resnet_skip_connections_are_merges_with_two_inputs():
    graph = graph_of(torchvision.models.resnet18(weights=None))
    adds = [node for node in graph.nodes if node.label == "add"]
    assert len(adds) == 8 and all(node.kind == "merge" for node in adds)
    inputs = {node.id: [a for a, b in graph.edges if b == node.id] for node in adds}
    assert all(len(sources) == 2 for sources in inputs.values())
    conv1 = next(node for node in graph.nodes if node.layer == "conv1")
    assert conv1.kind == "conv" and conv1.params == 9408 and conv1.hyper["kernel"] == (7, 7)
    assert conv1.rf.startswith("7 ")
    assert "layer1.0" in next(node for node in graph.nodes if node.layer == "layer1.0.conv1").blocks


def test_densenet_and_googlenet_concatenate():
    dense = graph_of(torchvision.models.densenet121(weights=None))
    cats = [node for node in dense.nodes if node.label == "concat"]
    assert len(cats) >= 58 and max(sum(b == node.id for _, b in dense.edges) for node in cats) > 10
    google = graph_of(torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False))
    assert sum(node.label == "concat" for node in google.nodes) == 9    # one per inception module


def test_layout_runs_top_to_bottom_and_folds_blocks():
    graph = graph_of(torchvision.models.resnet18(weights=None))
    placed = layout(graph)
    position = {p.node.id: p for p in placed.nodes}
    assert len(placed.nodes) == len(graph.nodes)
    for polyline in placed.edges:                                   # every edge goes down
        assert all(b[1] > a[1] for a, b in zip(polyline, polyline[1:]))
    assert any(len(polyline) > 2 for polyline in placed.edges)     # skip connections bend round
    folded = layout(graph, frozenset({"layer1", "layer2"}))
    blocks = [p for p in folded.nodes if p.node.kind == "block"]
    assert {p.node.label for p in blocks} == {"layer1", "layer2"}
    assert len(folded.nodes) == len(graph.nodes) - sum(len(p.members) for p in blocks) + 2
    assert position["x"].y < position["output"].y


def test_big_models_open_folded():
    graph = graph_of(torchvision.models.densenet121(weights=None))
    collapsed = default_collapsed(graph)
    assert collapsed and len(layout(graph, collapsed).nodes) <= 160
    assert default_collapsed(graph_of(torchvision.models.resnet18(weights=None))) == frozenset()


def test_untraceable_models_get_a_graph_from_hooks():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            if x.sum() > 0:                          # data-dependent: torch.fx cannot trace this
                x = -x
            return self.pool(self.relu(self.conv(x)))

    model = Branchy()
    graph = graph_of(model, 16)
    assert graph.method.startswith("forward hooks")
    assert [node.label for node in graph.nodes] == ["input", "conv", "relu", "pool"]
    assert graph.edges == (("input", "conv"), ("conv", "relu"), ("relu", "pool"))
    assert len(layout(graph).nodes) == 4
    assert not any(m._forward_hooks for m in model.modules())
