"""The same hostile files as the CLI matrix, through every load path of the window.

Each must end in a one-line message naming the file, with the previous model and image still
shown, no hook left on the model, and the job thread free again.
"""

from __future__ import annotations

import pytest

from cnnviewer.ui.window_menus import refresh_recent_menu
from tests.bad_files import bad_images, bad_weights
from tests.ui.conftest import drop_files


def hooks_on(module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in module.modules())


def settle(window, qtbot, before: str) -> str:
    """Wait for the job thread to finish and a new status message; return it."""
    qtbot.waitUntil(lambda: not window.jobs.runner.is_busy()
                    and window.statusBar().currentMessage() not in ("", before), timeout=30000)
    return window.statusBar().currentMessage()


def check_state(window, model, image) -> None:
    assert window.session.model is model and window.session.image is image
    assert hooks_on(model.module) == 0
    assert window.predictions.predictions != ()


@pytest.fixture
def refuse_trust(monkeypatch):
    asked: list[str] = []

    def ask(_parent, path, _message) -> bool:
        asked.append(path)
        return False
    monkeypatch.setattr("cnnviewer.ui.main_window.ask_trust", ask)
    return asked


def test_bad_images_through_open_drop_and_recent(window, qtbot, tmp_path):
    model, image = window.session.model, window.session.image
    files = bad_images(tmp_path / "images")
    for kind, path in files.items():
        for how in ("open", "drop", "recent"):
            window.show_message(f"before {kind} {how}")
            if how == "open":
                window.open_image(path)
            elif how == "drop":
                if not path.exists() or path.is_dir():
                    continue              # a file manager cannot drop what is not there; folders: below
                drop_files(window, [path])
            else:
                window.settings.setValue("recent_files", [str(path)])
                refresh_recent_menu(window)
                window.recent_menu.actions()[0].trigger()
            message = settle(window, qtbot, f"before {kind} {how}")
            assert path.name in message, f"{kind} via {how}: {message!r}"
            assert "\n" not in message
            check_state(window, model, image)
    assert str(files["empty"]) not in window.recent_files()           # only files that opened are remembered


def test_bad_weights_through_load_drop_and_launch_keep_the_model(window, qtbot, tmp_path, refuse_trust):
    model, image = window.session.model, window.session.image
    files = bad_weights(tmp_path / "weights")
    for kind, path in files.items():
        for how in ("load", "drop"):
            if how == "drop" and (not path.exists() or path.is_dir()):
                continue
            before = f"before {kind} {how}"
            window.show_message(before)
            window.load_weights(path) if how == "load" else drop_files(window, [path])
            message = settle(window, qtbot, before)
            assert path.name in message or "Not an image or weights file" in message, f"{kind} via {how}: {message!r}"
            assert "\n" not in message
            check_state(window, model, image)
    assert refuse_trust == [str(files["evil-pickle"])] * 2          # asked, refused, not unpickled


def test_bad_files_as_live_sources_keep_the_previous_source(window, qtbot, tmp_path):
    panel = window.live_detection
    files = bad_images(tmp_path / "images")

    def last_note() -> str:
        return panel.message.text().splitlines()[-1] if panel.message.text() else ""

    def frame_error(name: str) -> bool:   # the note under the picture names the file and why
        return any(name in line and not line.startswith("Playing") for line in panel.message.text().splitlines())

    for kind, path in files.items():
        opened = panel.open_file(path)
        if opened:        # readable as a source until the first frame: the frame's error is shown
            qtbot.waitUntil(lambda: frame_error(path.name), timeout=20000)
        else:
            assert path.name in last_note(), (kind, last_note())
