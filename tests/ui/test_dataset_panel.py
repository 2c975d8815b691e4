"""The Dataset panel in a real window: drop a folder, wait for the index, select a channel in
Feature maps, see its top images and patches; click one and it becomes every panel's input, with
the neuron at its maximum selected. Neighbours of the input, and the map."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent
from PySide6.QtWidgets import QApplication
from skimage import data

from tests.ui.conftest import drop_files


def _mouse(widget, kind, at, button) -> None:
    """A real mouse event with Shift held and the left button down (a box drag)."""
    held = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else Qt.MouseButton.LeftButton
    event = QMouseEvent(kind, QPointF(at), QPointF(widget.mapToGlobal(at)), button, held,
                        Qt.KeyboardModifier.ShiftModifier)
    QApplication.sendEvent(widget, event)


def _folder(root: Path) -> Path:
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera"):
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        photo.save(folder / f"{name}.jpg", quality=90)
        photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "sub" / f"{name}_flip.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return folder


def test_drop_a_folder_select_a_channel_see_its_top_images_and_click_one(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = _folder(tmp_path)
    panel = window.dataset
    assert "To start, drop a folder" in panel.top_tab.unit.text()     # before any folder: how to start
    assert "being looked for" not in panel.top_tab.unit.text()
    drop_files(panel.tabs, [folder])                                   # dropped on the panel: indexed
    assert window.docks["dataset"].isVisible()
    stalls, last = [], time.perf_counter()
    deadline = time.perf_counter() + 120
    while panel.index is None and time.perf_counter() < deadline:     # the window stays responsive
        qtbot.wait(10)
        now = time.perf_counter()
        stalls.append(now - last)
        last = now
    assert panel.index is not None, panel.folder_label.text()
    assert len(panel.index.rows) == 10 and panel.skipped_button.isVisible()
    assert "1 unreadable" in panel.skipped_button.text() and "broken.jpg" in panel.skipped_list.item(0).text()
    assert "10 images indexed" in panel.folder_label.text()
    window.session.select(layer="features.14", channel=5)             # as a click in Feature maps does
    grid = panel.top_tab.images
    qtbot.waitUntil(lambda: grid.count() == 9, timeout=30000)
    expected = panel.index.top("features.14", 5, 9)
    assert grid.rows() == [hit.row for hit in expected]
    assert panel.top_tab.patches.count() == 9 and "features.14 channel 5" in panel.top_tab.unit.text()
    assert panel.top_tab.histogram.bars.opts["height"].sum() == 10   # every indexed image counted once
    assert panel.top_tab.histogram.getPlotItem().layout.getContentsMargins()[1] >= 10   # room for the top tick
    width = grid.gridSize().width()
    for caption, hit in zip(grid.captions(), expected):                # value and name under every image
        value, name = caption.split("\n")
        head, _, tail = name.partition("…")                            # elided in the middle to fit its cell
        assert float(value) == pytest.approx(hit.value, abs=2e-3)
        assert hit.path.name.startswith(head) and hit.path.name.endswith(tail)
        assert grid.fontMetrics().horizontalAdvance(name) <= width        # elided to the cell, never cut
    assert len({len(c.split("\n")[0].split(".")[-1]) for c in grid.captions()}) == 1   # one value format
    assert all(str(hit.path) in grid.item(i).toolTip() for i, hit in enumerate(expected))
    best = expected[0]
    grid.itemClicked.emit(grid.item(0))                               # click the best image
    qtbot.waitUntil(lambda: window.session.image is not None and Path(window.session.image.source) == best.path,
                    timeout=30000)
    assert window.session.selection.layer == "features.14" and window.session.selection.channel == 5
    assert window.session.selection.neuron == best.position
    qtbot.waitUntil(lambda: panel.top_tab.neuron_button.isVisible(), timeout=30000)
    panel.top_tab.neuron_button.click()                               # rank by that neuron: images read again
    qtbot.waitUntil(lambda: panel.top_tab.view is not None and panel.top_tab.view.neuron == best.position,
                    timeout=60000)
    assert grid.rows()[0] == best.row and "value at (y=" in panel.top_tab.unit.text()
    panel.top_tab.k.setValue(3)
    qtbot.waitUntil(lambda: grid.count() == 3, timeout=30000)

    panel.tabs.setCurrentWidget(panel.neighbours_tab)                 # neighbours of the new input
    near = panel.neighbours_tab.grid
    qtbot.waitUntil(lambda: near.count() == 9, timeout=30000)
    rows = near.rows()
    names = [panel.index.path(row).name for row in rows[:2]]
    assert names[0] == best.path.name and names[1] == best.path.stem + "_flip.png"

    panel.tabs.setCurrentWidget(panel.map_tab)
    panel.map_tab.compute_button.click()
    qtbot.waitUntil(lambda: panel.map_tab.result is not None, timeout=60000)
    found = panel.map_tab.result[0]
    assert found.points.shape == (10, 2) and np.isfinite(found.points).all()
    assert len(panel.map_tab.view.scatter.data) == 10
    view = panel.map_tab.view
    qtbot.waitUntil(lambda: view.thumbnail_count == 10, timeout=10000)   # one item paints them all

    def painted() -> int:     # pixels off the map's background
        picture = view.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
        pixels = np.frombuffer(picture.constBits(), np.uint8).reshape(picture.height(), picture.bytesPerLine())
        pixels = pixels[:, :picture.width() * 3].reshape(picture.height(), picture.width(), 3).astype(int)
        return int((np.abs(pixels - (24, 24, 28)).sum(axis=2) > 30).sum())
    with_thumbnails = painted()
    view.set_thumbnails_visible(False)
    assert with_thumbnails > 3 * painted()                                # the photos, not only the dots
    view.set_thumbnails_visible(True)
    assert view.scatter.opts["tip"] is None                               # no raw pyqtgraph tooltip
    legend = panel.map_tab.legend
    assert legend.text().count("■") >= 1 and legend.text().count("■</span>&nbsp;") == legend.text().count("■")
    assert legend.minimumHeight() >= legend.heightForWidth(legend.width())   # wrapped lines all shown
    port = view.viewport()
    corner, far = QPoint(3, 3), QPoint(port.width() - 3, port.height() - 3)
    _mouse(port, QEvent.Type.MouseButtonPress, corner, Qt.MouseButton.LeftButton)
    for step in range(1, 6):                                             # a Shift+drag over the whole map
        _mouse(port, QEvent.Type.MouseMove, corner + (far - corner) * (step / 5), Qt.MouseButton.NoButton)
    qtbot.wait(50)
    assert not view.view_box.outline.isEmpty()                            # the rubber band, while dragging
    _mouse(port, QEvent.Type.MouseButtonRelease, far, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.map_tab.selection.count() == 10, timeout=10000)
    assert view.highlighted == 10 and not view.view_box.outline.isEmpty()  # what was selected stays visible
    view.view_box.clear_outline()
    rows_inside = panel.map_tab.view.rows[:4]
    panel.map_tab.wants_selection.emit(rows_inside)
    qtbot.waitUntil(lambda: panel.map_tab.selection.count() == 4, timeout=10000)
    assert view.highlighted == 4
    panel.map_tab._on_hovered(int(rows_inside[0]))                      # a hover preview shown
    assert panel.map_tab.preview.pixmap() is not None and not panel.map_tab.preview.pixmap().isNull()
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(data.coffee()).save(other / "coffee.png")
    panel.open_folder(other)                                             # another folder: no old map left
    assert panel.map_tab.result is None and len(view.scatter.data) == 0 and view.highlighted == 0
    assert panel.map_tab.preview.pixmap().isNull() and "Hover a point" in panel.map_tab.preview.text()
    assert "images at" not in panel.map_tab.info.text() and panel.map_tab.selection.count() == 0
    assert max(stalls) < 0.5, f"the window stalled {max(stalls) * 1000:.0f} ms while indexing"


def test_cancel_then_resume_and_reopen_without_reading_again(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("cnnviewer.ui.panels.dataset.indexing.SLICE_SECONDS", 0.0)   # one batch per slice
    folder = _folder(tmp_path)
    for i in range(30):
        Image.fromarray(data.coffee()[::2, ::2][:, ::-1] // (1 + i % 3)).save(folder / f"more_{i:02d}.png")
    panel = window.dataset
    window.docks["dataset"].raise_()
    panel.open_folder(folder)
    qtbot.waitUntil(lambda: panel.progress.isVisible() and panel.progress.value() > 0, timeout=60000)
    panel.cancel_button.click()
    assert "cancelling" in panel.folder_label.text() and not panel.cancel_button.isEnabled()   # said at once
    assert "left" not in panel.folder_label.text() and panel.progress.format() == "Cancelling…"  # no stale ETA
    qtbot.waitUntil(lambda: "paused at" in panel.folder_label.text(), timeout=30000)
    assert panel.index_button.text() == "Resume"
    partial = panel.index                                              # Cancel kept what was done: browsable
    assert partial is not None and partial.manifest["complete"] is False and partial.directory.name == ".building"
    done = len(partial.rows) + len(partial.skipped)
    assert 0 < len(partial.rows) < 40 and f"paused at {done} of 41" in panel.folder_label.text()
    window.session.select(layer="features.10", channel=7)
    grid = panel.top_tab.images
    qtbot.waitUntil(lambda: grid.count() == min(9, len(partial.rows)), timeout=30000)
    assert grid.rows() == [hit.row for hit in partial.top("features.10", 7, 9)]
    assert set(grid.rows()) <= set(partial.rows)                      # only rows computed before the cancel
    assert f"paused: {done} of 41 indexed; Resume to finish" in panel.top_tab.unit.text()
    panel.tabs.setCurrentWidget(panel.neighbours_tab)                 # the input's neighbours among them
    qtbot.waitUntil(lambda: panel.neighbours_tab.grid.count() == min(9, len(partial.rows)), timeout=30000)
    assert set(panel.neighbours_tab.grid.rows()) <= set(partial.rows)
    assert "Resume to finish" in panel.neighbours_tab.info.text()
    panel.tabs.setCurrentWidget(panel.map_tab)                         # and a map of them
    panel.map_tab.compute_button.click()
    qtbot.waitUntil(lambda: panel.map_tab.result is not None, timeout=60000)
    assert list(panel.map_tab.result[0].rows) == sorted(partial.rows)
    assert "Resume to finish" in panel.map_tab.info.text()
    panel.tabs.setCurrentWidget(panel.top_tab)
    panel.open_folder(folder, start=False)                             # days later, still paused: shown again
    qtbot.waitUntil(lambda: panel.index is not None, timeout=30000)
    assert panel.index.directory.name == ".resume" and sorted(panel.index.rows) == sorted(partial.rows)
    assert panel.index_button.text() == "Resume" and panel.index_button.isVisible()
    qtbot.waitUntil(lambda: "Resume to finish" in panel.top_tab.unit.text(), timeout=30000)
    panel.index_button.click()
    qtbot.waitUntil(lambda: panel.index is not None and panel.index.manifest["complete"], timeout=120000)
    assert 0 < panel.index.manifest["reused"] < 40 and len(panel.index.rows) == 40
    qtbot.waitUntil(lambda: grid.count() == 9 and "paused" not in panel.top_tab.unit.text(), timeout=30000)
    panel.open_folder(folder)                                          # days later: found, nothing read
    qtbot.waitUntil(lambda: panel.index is not None, timeout=30000)
    assert "read in" not in panel.folder_label.text() and len(panel.index.rows) == 40
    window.session.select(layer="features.10", channel=3)
    qtbot.waitUntil(lambda: panel.top_tab.images.count() == 9, timeout=30000)
    window.controller.load_model("resnet18")                           # another model: its own index
    qtbot.waitUntil(lambda: panel.index_button.isVisible() and panel.index_button.text() == "Index", timeout=60000)
    assert panel.index is None and panel.top_tab.images.count() == 0    # nothing of mobilenet_v2 left on screen
    assert "still to index for resnet18" in panel.folder_label.text()
    window.controller.load_model("mobilenet_v2")                       # back: its index is found again
    qtbot.waitUntil(lambda: panel.index is not None, timeout=60000)
    assert "up to date" in panel.folder_label.text()


def test_a_folder_another_process_indexes_is_waited_for_visibly_and_cancel_frees_the_job_thread(
        window, qtbot, tmp_path, monkeypatch):
    """A command-line `index` holds the folder's lock: the panel says so, the job thread every panel
    shares is not stuck behind it (Cancel stops the wait), and after the other run the folder indexes."""
    from cnnviewer.engine.dataset.index import default_directory
    from cnnviewer.engine.dataset.lock import IndexLock

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = _folder(tmp_path)
    panel = window.dataset
    directory = default_directory(folder, window.session.model)
    directory.mkdir(parents=True)
    other = IndexLock(directory)                     # another open file: flock conflicts as across processes
    assert other.acquire()
    try:
        window.open_folder(folder, index=True)
        qtbot.waitUntil(lambda: "waiting for it to finish" in panel.folder_label.text(), timeout=30000)
        assert panel.cancel_button.isVisible() and panel.index is None
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
        assert "stopped waiting" in panel.folder_label.text()
        done = []
        window.jobs.submit("probe", lambda _context: 42, on_done=done.append)   # the job thread is free again
        qtbot.waitUntil(lambda: done == [42], timeout=10000)
    finally:
        other.release()
    window.open_folder(folder, index=True)
    qtbot.waitUntil(lambda: panel.index is not None, timeout=120000)
    assert len(panel.index.rows) == 10
