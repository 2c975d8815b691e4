"""Models and weights from the window: bad files, trust, launch choices, cancel, remembered state."""


from __future__ import annotations

import torch
import torchvision
from PySide6.QtCore import Qt

from tests.ui.conftest import drop_files, make_window

GRAY_NET = """
import torch.nn as nn
class Gray(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 3)
    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))
class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 2)
    def forward(self, x):
        return self.fc(x)
"""



def test_bad_weights_keep_the_previous_model(window, qtbot, tmp_path):
    model = window.session.model
    top = window.predictions.predictions
    bad = tmp_path / "notes.pth"
    bad.write_text("these are not weights")
    drop_files(window.feature_maps.canvas.viewport(), [bad])
    qtbot.waitUntil(lambda: "Weights not loaded" in window.statusBar().currentMessage(), timeout=10000)
    assert "notes.pth" in window.statusBar().currentMessage()
    assert window.session.model is model
    assert window.predictions.predictions == top

    wrong = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), wrong)
    window.load_weights(wrong)
    qtbot.waitUntil(lambda: window.session.model is not model, timeout=30000)
    assert window.session.model.name == "resnet18"                # inferred from the file
    assert window.session.model.categories == ("class 0", "class 1", "class 2")


def test_custom_weights_change_the_predictions(window, qtbot, tmp_path):
    torch.manual_seed(0)
    state = torchvision.models.mobilenet_v2().state_dict()
    path = tmp_path / "random.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    old = window.predictions.predictions
    window.load_weights(path)
    qtbot.waitUntil(lambda: window.session.model.weights_path == str(path), timeout=30000)
    qtbot.waitUntil(lambda: window.predictions.predictions != old, timeout=20000)
    assert window.session.model.name == "mobilenet_v2"
    assert "random.pth" in window.model_label.toolTip()
    assert window.windowTitle() == "cnnviewer — mobilenet_v2 — custom: random.pth"   # trial row 32
    assert "custom: random.pth" in window.model_label.text()


def test_last_model_and_weights_are_remembered(window, qtbot, settings, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), path)
    window.load_weights(path)
    qtbot.waitUntil(lambda: window.session.model.weights_path == str(path), timeout=30000)
    assert settings.value("last_model") == "resnet18"
    assert settings.value("last_weights") == str(path)
    window.controller.load_model("squeezenet1_1")
    qtbot.waitUntil(lambda: window.session.model.name == "squeezenet1_1", timeout=30000)
    assert settings.value("last_model") == "squeezenet1_1" and settings.value("last_weights") == ""
    assert "untrained" in window.model_label.text()
    qtbot.waitUntil(lambda: "squeezenet1_1" in window.predictions.title.text(), timeout=20000)
    assert "untrained" in window.predictions.title.text()


def test_choose_model_dialog_lists_and_filters(qtbot):
    from cnnviewer.ui.dialogs import ChooseModelDialog

    catalogue = {"MobileNet": [("mobilenet_v3_large", "download"), ("mobilenet_v2", "offline weights pack")],
                 "ResNet": [("resnet18", "download"), ("resnet50", "download")]}
    dialog = ChooseModelDialog(catalogue, "mobilenet_v2")
    qtbot.addWidget(dialog)
    assert dialog.chosen() == "mobilenet_v2"
    ready = dialog.tree.currentItem()                  # real weights here: marked, and counted per family
    assert ready.text(1).startswith("✓") and ready.font(0).bold() and ready.parent().text(1) == "1 with weights here"
    dialog.search.setText("resnet5")
    root = dialog.tree.invisibleRootItem()
    visible = [root.child(i).child(j).text(0) for i in range(root.childCount())
               for j in range(root.child(i).childCount()) if not root.child(i).child(j).isHidden()]
    assert visible == ["resnet50"]
    assert dialog.chosen() == "resnet50"           # Enter loads the one match shown, not the hidden selection
    qtbot.keyClick(dialog.search, Qt.Key.Key_Return)
    assert dialog.result() == dialog.DialogCode.Accepted and dialog.chosen() == "resnet50"
    dialog.search.setText("mobilenet")
    assert dialog.chosen() == "mobilenet_v2"       # of two matches, the one whose weights are here
    dialog.search.setText("no such model")
    assert dialog.chosen() is None


def test_untrusted_pickle_asks_and_loads_only_when_trusted(window, qtbot, tmp_path, monkeypatch):
    torch.manual_seed(0)
    path = tmp_path / "whole.pth"
    torch.save(torchvision.models.squeezenet1_1(num_classes=5), path)
    answers: list[str] = []
    monkeypatch.setattr("cnnviewer.ui.main_window.ask_trust",
                        lambda _parent, p, _message: answers.append(p) or False)
    model = window.session.model
    window.load_weights(path)
    qtbot.waitUntil(lambda: answers == [str(path)], timeout=10000)
    assert window.session.model is model
    assert "not trusted" in window.statusBar().currentMessage()
    monkeypatch.setattr("cnnviewer.ui.main_window.ask_trust", lambda *_args: True)
    window.load_weights(path)
    qtbot.waitUntil(lambda: window.session.model is not model, timeout=30000)
    assert window.session.model.weights_path == str(path)


def test_startup_never_reruns_an_architecture_file(settings, tmp_path):
    from cnnviewer.ui.app import startup_model

    assert startup_model(None, None, settings) == ("mobilenet_v2", None, "")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    settings.setValue("last_model", "resnet18")
    settings.setValue("last_weights", str(weights))
    assert startup_model(None, None, settings) == ("resnet18", str(weights), "")
    assert startup_model("vgg11", None, settings) == ("vgg11", None, "")
    settings.setValue("last_model", str(tmp_path / "net.py") + ":Net")
    spec, chosen_weights, note = startup_model(None, None, settings)
    assert (spec, chosen_weights) == ("mobilenet_v2", None) and "not reopened" in note


def test_failed_launch_choices_still_leave_a_model(qtbot, settings, tmp_path):
    window = make_window(qtbot, settings)
    bad = tmp_path / "bad.pth"
    bad.write_text("not weights")
    window.controller.load_model("mobilenet_v2", weights=str(bad))
    qtbot.waitUntil(lambda: window.session.model is not None, timeout=30000)
    assert window.session.model.name == "mobilenet_v2"
    qtbot.waitUntil(lambda: "Weights not loaded" in window.statusBar().currentMessage(), timeout=5000)

    other = make_window(qtbot, settings)
    other.controller.load_model("resnet_18")                     # a typo
    qtbot.waitUntil(lambda: other.session.model is not None, timeout=30000)
    assert other.session.model.name == "mobilenet_v2"
    window.jobs.runner.close()
    other.jobs.runner.close()


def test_weights_dropped_while_a_model_loads_go_to_that_model(window, qtbot, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    window.controller.load_model("resnet18")
    window.load_weights(path)                                     # before resnet18 has arrived
    qtbot.waitUntil(lambda: window.session.model.weights_path == str(path), timeout=30000)
    assert window.session.model.name == "resnet18"


def test_grayscale_models_run_and_broken_ones_are_refused(window, qtbot, tmp_path):
    source = tmp_path / "nets.py"
    source.write_text(GRAY_NET)
    window.controller.load_model(f"{source}:Gray")
    qtbot.waitUntil(lambda: window.session.model.name == "nets.py:Gray", timeout=30000)
    assert window.session.model.input_channels == 1
    qtbot.waitUntil(lambda: len(window.predictions.predictions) == 3, timeout=20000)
    assert "nets.py:Gray" in window.predictions.title.text()
    model = window.session.model
    window.controller.load_model(f"{source}:Broken")
    qtbot.waitUntil(lambda: "Model not changed" in window.statusBar().currentMessage(), timeout=30000)
    assert "cannot run" in window.statusBar().currentMessage()
    assert window.session.model is model


def test_cancelling_a_model_load_keeps_the_shown_model(window, qtbot, tmp_path):
    model = window.session.model
    window.controller.load_model("resnet50")
    window._on_cancel_clicked()
    assert window.controller._pending is None
    torch.manual_seed(0)
    path = tmp_path / "mnv2.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), path)
    window.load_weights(path)                          # goes to the model on screen
    qtbot.waitUntil(lambda: window.session.model is not model, timeout=30000)
    assert window.session.model.name == "mobilenet_v2"
    assert window.session.model.weights_path == str(path)


def test_cancel_stops_the_latest_job_only_and_frees_the_thread(window, qtbot):
    """Cancel (or Esc) stops one job, the last started; a load stuck in model building lets go at once."""
    panel = window.gradients
    window.docks["gradients"].raise_()
    qtbot.waitUntil(lambda: bool(panel.results), timeout=30000)
    panel.stride.setValue(1)                                          # slow: thousands of patches
    panel.method.setCurrentText("occlusion")
    qtbot.waitUntil(lambda: window.jobs.runner.running() == "gradients", timeout=10000)
    window.controller.load_model("vgg19")                             # waits behind the occlusion
    assert "vgg19" in window.cancel_button.toolTip()
    window._on_cancel_clicked()
    assert "Cancelled: Loading vgg19" in window.statusBar().currentMessage()
    assert "Computing occlusion" in panel.info.text()                # the other job goes on
    assert window.cancel_button.isVisible() and "occlusion" in window.cancel_button.toolTip().lower()
    assert window.jobs.runner.running() == "gradients"
    window._on_cancel_clicked()
    assert "Cancelled: occlusion" in panel.info.text()
    assert window.jobs.runner.wait_idle(2.0)
    assert not window.cancel_button.isVisible()

    model = window.session.model
    window.controller.load_model("vgg19")                             # ~2 s of building, no cancel checks
    qtbot.waitUntil(lambda: window.jobs.runner.running() == "model", timeout=5000)
    window._on_cancel_clicked()
    assert window.jobs.runner.wait_idle(0.5)                          # free before vgg19 is even built
    qtbot.wait(3000)
    assert window.session.model is model                              # the late result is dropped


def test_weights_that_cannot_run_keep_the_chosen_model(window, qtbot, tmp_path):
    mlp = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)))
    path = tmp_path / "mlp.pt"
    mlp.save(str(path))
    window.controller.load_model("resnet18", weights=str(path))
    qtbot.waitUntil(lambda: window.session.model.name == "resnet18", timeout=30000)
    qtbot.waitUntil(lambda: "Weights not loaded" in window.statusBar().currentMessage(), timeout=5000)
    assert "cannot run" in window.statusBar().currentMessage()


def test_trust_never_applies_to_remembered_weights(qtbot, settings, tmp_path, monkeypatch):
    """`cnnviewer --trust` without --weights: the remembered pickle is not unpickled unasked."""
    import argparse

    from cnnviewer.ui.app import start_window

    torch.manual_seed(0)
    pickled = tmp_path / "whole.pth"
    torch.save(torchvision.models.squeezenet1_1(num_classes=5), pickled)
    settings.setValue("last_model", "squeezenet1_1")
    settings.setValue("last_weights", str(pickled))
    asked: list[str] = []
    monkeypatch.setattr("cnnviewer.ui.main_window.ask_trust",
                        lambda _parent, path, _message: asked.append(path) or False)
    args = argparse.Namespace(image=None, model=None, weights=None, labels=None, trust=True,
                              device=None, precision="fp32")
    window = start_window(args, settings, 0.0)
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: asked == [str(pickled)], timeout=30000)
        qtbot.waitUntil(lambda: window.session.model is not None, timeout=30000)
        assert window.session.model.weights_path != str(pickled)
    finally:
        window.jobs.runner.close()


def test_torchscript_weights_predict_and_say_what_they_cannot_show(window, qtbot, tmp_path):
    """A TorchScript archive becomes the model: predictions work, the inside says why it is closed, and a
    state dict dropped afterwards still loads."""
    torch.manual_seed(0)
    scripted = torch.jit.script(torchvision.models.squeezenet1_1(num_classes=4).eval())
    archive = tmp_path / "net.pt"
    scripted.save(str(archive))
    window.load_weights(archive)
    qtbot.waitUntil(lambda: window.session.model.name.startswith("net.pt"), timeout=30000)
    qtbot.waitUntil(lambda: len(window.predictions.predictions) == 4, timeout=30000)
    window.docks["model_summary"].raise_()
    qtbot.waitUntil(lambda: "TorchScript" in window.model_summary.totals.text(), timeout=30000)
    state = tmp_path / "small.pth"
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=3).state_dict(), state)
    window.load_weights(state)
    qtbot.waitUntil(lambda: window.session.model.name == "mobilenet_v3_small", timeout=30000)
    qtbot.waitUntil(lambda: len(window.predictions.predictions) == 3, timeout=30000)
