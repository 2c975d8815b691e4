"""Model summary, receptive field and architecture panels."""


from __future__ import annotations

from PIL import Image
from PySide6.QtCore import Qt


def test_model_summary_panel_sorts_selects_and_exports(window, qtbot, tmp_path):
    panel = window.model_summary
    assert panel.summary is None                   # tabbed behind the feature maps: nothing computed yet
    window.docks["model_summary"].raise_()
    qtbot.waitUntil(lambda: panel.summary is not None, timeout=30000)
    assert panel.summary.model == "mobilenet_v2" and panel.proxy.rowCount() == len(panel.summary.rows)
    assert f"{3_504_872:,} parameters" in panel.totals.text()      # MobileNetV2's known size
    panel.table.sortByColumn(6, Qt.SortOrder.DescendingOrder)        # MACs, numerically
    macs = [panel.summary.rows[panel.proxy.mapToSource(panel.proxy.index(i, 0)).row()].macs
            for i in range(panel.proxy.rowCount())]
    assert macs == sorted(macs, reverse=True)
    top = panel.proxy.index(0, 0)
    panel.table.setCurrentIndex(top)                                 # widget -> session
    assert window.session.selection.layer == panel.summary.rows[panel.proxy.mapToSource(top).row()].name
    window.session.select(layer="features.5.conv.1.0")               # session -> widget
    current = panel.proxy.mapToSource(panel.table.currentIndex()).row()
    assert panel.summary.rows[current].name == "features.5.conv.1.0"
    panel.search.setText("classifier")
    assert panel.proxy.rowCount() == 2
    panel.search.setText("relu6")                                     # the type column matches too
    assert panel.proxy.rowCount() == 35 and "35 of" in panel.matches.text()
    panel.search.setText("no such layer")
    assert panel.proxy.rowCount() == 0 and "No layer name or type contains" in panel.matches.text()
    panel.search.setText("classifier")
    out = tmp_path / "summary.csv"
    assert panel.export_csv(str(out))
    lines = out.read_text().splitlines()
    assert lines[0].startswith("name,type,output_shape") and len(lines) == len(panel.summary.rows) + 1
    assert not panel.export_csv(str(tmp_path / "missing" / "s.csv"))        # said, not raised in the slot
    assert "Not exported" in panel.totals.text() and "does not exist" in panel.totals.text()


def test_selecting_a_block_shows_its_last_layer_in_the_summary(window, qtbot):
    panel = window.model_summary
    window.docks["model_summary"].raise_()
    qtbot.waitUntil(lambda: panel.summary is not None, timeout=30000)
    window.session.select(layer="features.4")
    current = panel.proxy.mapToSource(panel.table.currentIndex()).row()
    assert panel.summary.rows[current].name == "features.4.conv.3"
    assert window.session.selection.layer == "features.4"        # the block stays selected elsewhere


def test_receptive_field_panel_follows_clicks(window, qtbot):
    panel = window.receptive_field
    window.docks["receptive_field"].raise_()
    window.session.select(layer="features.3")
    qtbot.waitUntil(lambda: panel.result is not None and panel.result.layer == "features.3", timeout=30000)
    assert panel.result.neuron == (28, 28)                        # the centre by default
    panel.layer_canvas.clicked.emit(0.4, 1.8)                     # click a neuron on the layer map
    assert window.session.selection.neuron == (0, 1)
    qtbot.waitUntil(lambda: panel.result.neuron == (0, 1), timeout=10000)
    top, left, bottom, right = panel.result.box
    extent = panel.result.effective_extent
    assert top <= extent[0] and left <= extent[1] and extent[2] <= bottom + 1 and extent[3] <= right + 1
    assert panel.padding_box.isVisible()                          # near the corner: part on padding
    assert panel.input_canvas.view.viewRect().contains(panel.padding_box.rect())   # dashed part in view
    window.session.select(layer="features.17")                    # a 7x7 layer: the map is refitted
    qtbot.waitUntil(lambda: panel.result.layer == "features.17", timeout=10000)
    visible = panel.layer_canvas.view.viewRect()
    assert visible.width() < 8 or visible.height() < 8            # 7x7 fills the view, not a corner of it
    window.session.select(layer="features.3", neuron=(0, 1))
    qtbot.waitUntil(lambda: panel.result.layer == "features.3", timeout=10000)
    panel.input_canvas.clicked.emit(100.0, 150.0)                 # click the input: nearest neuron
    jump = panel.result.field.jump[0]
    assert window.session.selection.neuron == (round((100 - 0.5) / jump), round((150 - 0.5) / jump))
    assert "Theoretical field" in panel.details.text()


def test_architecture_panel_selects_folds_and_exports(window, qtbot, tmp_path):
    panel = window.architecture
    window.docks["architecture"].raise_()
    qtbot.waitUntil(lambda: panel.layout_result is not None, timeout=30000)
    assert panel.graph.method == "torch.fx" and len(panel.graph.nodes) > 150
    assert len(panel.items) == len(panel.layout_result.nodes) <= panel.FOLDED_LIMIT   # opens folded
    window.session.select(layer="features.16.conv.1")          # inside a folded block: the block lights up
    block = next(item for item in panel.items.values() if item.placed.node.label == "features.16.conv")
    assert block.pen().width() == 3
    from PySide6.QtWidgets import QGraphicsSimpleTextItem
    texts = [child.text() for item in panel.items.values() for child in item.childItems()
             if isinstance(child, QGraphicsSimpleTextItem)]
    assert "input" in texts and not [t for t in texts if len(set(t.split("\n"))) < len(t.split("\n"))]  # row 29
    panel.fit_whole()
    visible = panel.view.mapToScene(panel.view.viewport().rect()).boundingRect()
    assert visible.contains(panel.scene.itemsBoundingRect().adjusted(5, 5, -5, -5))   # Fit: all of it
    panel.search.setText("features.3")
    panel.expand_all()
    qtbot.waitUntil(lambda: len(panel.items) > 150, timeout=10000)
    assert panel.search.text() == "features.3"                 # same model: the search stays
    conv = next(item for item in panel.items.values() if item.placed.node.layer == "features.0.0")
    panel.view.node_clicked.emit(conv)                                   # graph -> session
    assert window.session.selection.layer == "features.0.0"
    assert conv.pen().width() == 3                                       # highlighted
    window.session.select(layer="features.5")                            # session -> graph
    assert conv.pen().width() != 3
    shown = len(panel.items)
    panel.view.node_double_clicked.emit(conv)                            # fold features.0.0's block
    qtbot.waitUntil(lambda: len(panel.items) < shown, timeout=10000)
    block = next(item for item in panel.items.values() if item.placed.node.kind == "block")
    assert "features.0.0" in block.placed.members[0] or len(block.placed.members) > 1
    panel.view.node_double_clicked.emit(block)                           # and open it again
    qtbot.waitUntil(lambda: len(panel.items) == shown, timeout=10000)
    svg, png = tmp_path / "g.svg", tmp_path / "g.png"
    assert panel.save_graph(str(svg)) and panel.save_graph(str(png))
    assert not panel.save_graph(str(tmp_path / "missing" / "g.svg"))
    assert "Not exported" in panel.status.text()
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    assert Image.open(png).size[1] > 1000
    window.session.select(layer="features.17.conv.2")             # selected elsewhere: scrolled into view
    target = next(item for item in panel.items.values() if item.placed.node.layer == "features.17.conv.2")
    assert panel.view.mapToScene(panel.view.viewport().rect()).boundingRect().contains(target.sceneBoundingRect())
    panel.search.setText("features.3")
    window.controller.load_model("resnet18")
    qtbot.waitUntil(lambda: panel.graph is not None and panel.graph.model.startswith("resnet18"), timeout=30000)
    assert panel.search.text() == ""                               # a new model clears the search
