"""The Dataset panel's "Evaluate attribution" tab in a real window: a tiny indexed folder, two methods,
a sortable table whose headers say which way is better; asking again shows the kept table at once;
Cancel leaves a clear message and no table."""

from __future__ import annotations

import json

from PIL import Image
from PySide6.QtCore import Qt
from skimage import data

from cnnviewer.engine.attribution import evaluate_cache


def test_evaluate_fills_a_sortable_table_reuses_it_and_cancels_cleanly(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "coffee"):
        Image.fromarray(getattr(data, name)()).convert("RGB").resize((256, 256)).save(folder / f"{name}.jpg")
    panel = window.dataset
    window.docks["dataset"].show()
    window.docks["dataset"].raise_()
    panel.open_folder(folder)
    qtbot.waitUntil(lambda: panel.index is not None, timeout=120000)
    tab = panel.evaluation_tab
    panel.tabs.setCurrentWidget(tab)
    for method, box in tab.methods.items():
        box.setChecked(method in ("saliency", "grad-cam"))
    tab.metrics["road"].setChecked(False)                          # ROAD is ~4x the cost of both curves
    tab.steps.setValue(5)
    assert [tab.target.itemText(i) for i in range(tab.target.count())] == ["each image's top-1"]
    window.session.select(class_index=285)                          # a class chosen elsewhere is offered
    assert tab.target.itemText(1) == "class 285 (Egyptian cat), selected" and tab.target.itemData(1) == 285
    assert tab.target.currentIndex() == 0                           # the top-1 stays the choice
    tab.evaluate_button.click()
    assert tab.cancel_button.isVisible() and not tab.evaluate_button.isEnabled()
    qtbot.waitUntil(lambda: tab.result is not None, timeout=120000)
    table, found = tab.table, tab.result
    assert not found.cached and table.rowCount() == 2 and not tab.cancel_button.isVisible()
    headers = [table.horizontalHeaderItem(i).text() for i in range(table.columnCount())]
    assert headers == ["method", "deletion AUC ↓", "insertion AUC ↑", "Average Drop ↓", "Increase in Confidence ↑",
                       "n images", "seconds"]
    assert "lower is better" in table.horizontalHeaderItem(1).toolTip()
    assert "higher is better" in table.horizontalHeaderItem(2).toolTip()
    assert "2 images" in tab.info.text()
    means = {row.method: row.mean("deletion") for row in found.methods}
    table.sortItems(1, Qt.SortOrder.AscendingOrder)                 # a click on the header
    assert [table.item(r, 0).text() for r in range(2)] == sorted(means, key=means.get)
    table.sortItems(1, Qt.SortOrder.DescendingOrder)
    assert [table.item(r, 0).text() for r in range(2)] == sorted(means, key=means.get, reverse=True)
    row = [table.item(r, 0).text() for r in range(2)].index("grad-cam")
    assert table.item(row, 1).text() == f"{means['grad-cam']:.3f} ± {found.methods[1].sd('deletion'):.3f}"
    assert table.item(row, 5).text() == "2"
    saliency = [table.item(r, 0).text() for r in range(2)].index("saliency")
    assert table.item(saliency, 3).text() == "—"                   # Average Drop: CAM methods only

    tab.evaluate_button.click()                                     # again: the kept table, at once
    qtbot.waitUntil(lambda: tab.result is not None and tab.result.cached, timeout=10000)
    assert tab.result.methods == found.methods and "kept from an earlier run" in tab.info.text()

    path = evaluate_cache.path_of(panel.index)
    entries = set(json.loads(path.read_text())["entries"])
    tab.steps.setValue(7)                                           # not computed yet: runs, then Cancel
    tab.evaluate_button.click()
    qtbot.waitUntil(lambda: tab.progress.value() > 0, timeout=60000)
    answered = []                                                   # another panel's job is not held up for minutes:
    window.jobs.submit("probe", lambda _context: "ok", on_done=answered.append)   # it runs between two slices
    qtbot.waitUntil(lambda: answered == ["ok"], timeout=60000)
    assert tab.cancel_button.isVisible() and tab.result is None     # while the evaluation still runs
    qtbot.waitUntil(lambda: window.busy_label.isVisible() and "Evaluating attribution" in window.busy_label.text(),
                    timeout=30000)                                  # the status bar says it too, slice after slice
    tab.cancel_button.click()
    assert "cancelled" in tab.info.text() and "no half table" in tab.info.text()
    assert tab.table.rowCount() == 0 and tab.result is None and tab.evaluate_button.isEnabled()
    assert not tab.cancel_button.isVisible() and not tab.progress.isVisible()
    assert "Evaluating attribution" not in window.busy_label.text()
    qtbot.waitUntil(lambda: not window.jobs.runner.is_busy(), timeout=60000)
    qtbot.wait(200)                                                 # nothing late arrives
    assert tab.result is None and tab.table.rowCount() == 0
    assert set(json.loads(path.read_text())["entries"]) == entries  # nothing of it was kept
