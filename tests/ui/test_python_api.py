"""`cnnviewer.show(model)` from Python: the real window on a real in-process model.

Oracles: the module's own forward pass (torchvision's own preprocessing of the same pixels) for the
top-5; a state dict, modes, flags and hooks recorded before, for "left exactly as found".
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
from torch import nn
from torchvision import transforms as T

import cnnviewer
from cnnviewer.engine.runtime.hooks import has_hooks

LABELS = [f"thing {i}" for i in range(10)]
SMALL_PRE = T.Compose([T.Resize(40), T.CenterCrop(32), T.ToTensor(), T.Normalize([0.5] * 3, [0.25] * 3)])


class SmallNet(nn.Module):
    """Random weights, BatchNorm and Dropout (so a mode change would change its answers), 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.features(x).flatten(1)))


@pytest.fixture(autouse=True)
def private_settings(tmp_path):
    """show() reads QSettings("cnnviewer", "cnnviewer"): point it at a private folder."""
    torch.set_num_threads(1)
    for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
        QSettings.setPath(QSettings.Format.NativeFormat, scope, str(tmp_path / "settings"))
        QSettings.setPath(QSettings.Format.IniFormat, scope, str(tmp_path / "settings"))
    yield
    for widget in QApplication.topLevelWidgets():
        if widget.isVisible():
            widget.close()


def state(module: nn.Module) -> tuple:
    """What must not change: weights, buffers, every module's mode, every flag, no hooks."""
    return ({k: v.clone() for k, v in module.state_dict().items()}, [m.training for m in module.modules()],
            [p.requires_grad for p in module.parameters()])


def assert_same(module: nn.Module, before: tuple) -> None:
    weights, modes, flags = state(module)
    assert weights.keys() == before[0].keys() and all(torch.equal(weights[k], before[0][k]) for k in weights)
    assert modes == before[1] and flags == before[2]
    assert not has_hooks(module)


def own_top5(module: nn.Module, viewer, mean, std) -> list[tuple[int, float]]:
    """The module's own answer on the crop the window's model saw (the forward's display pixels),
    normalised here: a deep copy in eval mode, so the module itself is not touched."""
    import copy
    net = copy.deepcopy(module).eval()
    crop = torch.from_numpy(viewer.window.session.forward.display.copy()).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        probs = torch.softmax(net(T.Normalize(mean, std)(crop).unsqueeze(0)), 1)[0]
    top = torch.topk(probs, 5)
    return list(zip(top.indices.tolist(), top.values.tolist()))


@pytest.fixture(scope="module")
def mobilenet():
    from cnnviewer.engine.models.loading import load_model
    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(load_model("mobilenet_v2").module.state_dict())
    return net.train()   # as a training script holds it: the window must not switch it to eval


def test_show_returns_while_the_window_is_visible_with_the_modules_own_top5(qtbot, mobilenet):
    before = state(mobilenet)
    viewer = cnnviewer.show(mobilenet, block=False)
    assert viewer.window.isVisible()
    assert viewer.window.windowTitle() == "cnnviewer — MobileNetV2 (from Python)"
    viewer.wait_until_ready(60)
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    expected = own_top5(mobilenet, viewer, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    names = weights.meta["categories"]
    assert viewer.window.session.forward.display.shape == (224, 224, 3)   # ImageNet's crop, inferred
    assert [label for label, _ in viewer.predictions] == [names[i] for i, _ in expected]
    assert np.allclose([p for _, p in viewer.predictions], [p for _, p in expected], atol=1e-5)
    assert viewer.predictions[0][0] in ("Egyptian cat", "tabby", "tiger cat")
    shot = viewer.screenshot("Gradients")   # a gradient view: requires_grad switched on the copy only
    assert viewer.window.gradients.results and viewer.window.gradients.results[0].attribution.std() > 0
    picture = shot[shot.shape[0] // 3: shot.shape[0] * 2 // 3, shot.shape[1] // 3: shot.shape[1] * 2 // 3, :3]
    assert shot.ndim == 3 and shot.shape[2] == 4 and picture.std() > 5   # the map is drawn, not a blank canvas
    assert_same(mobilenet, before)
    assert viewer.window.session.model.module is not mobilenet
    viewer.close()


def test_small_model_labels_preprocess_images_selection_and_screenshots(qtbot, tmp_path):
    torch.manual_seed(0)
    net = SmallNet()
    before = state(net)
    picture = np.random.default_rng(0).random((48, 64, 3))    # float HWC in [0, 1]
    viewer = cnnviewer.show(net, image=picture, labels=LABELS, preprocess=SMALL_PRE, block=False, title="Small")
    viewer.wait_until_ready(30)
    assert viewer.window.windowTitle() == "cnnviewer — Small (from Python)"
    model = viewer.window.session.model
    assert (model.preprocess.resize_size, model.preprocess.crop_size, model.preprocess.mean) == (40, 32, (0.5,) * 3)
    expected = own_top5(net, viewer, [0.5] * 3, [0.25] * 3)
    assert [label for label, _ in viewer.predictions] == [LABELS[i] for i, _ in expected]
    assert np.allclose([p for _, p in viewer.predictions], [p for _, p in expected], atol=1e-5)

    chw = torch.rand(3, 30, 50)                                # tensor CHW float
    viewer.set_image(chw)
    assert viewer.window.session.image.pixels.shape == (30, 50, 3)
    viewer.set_image(np.full((20, 20), 200, np.uint8))        # grey HW uint8
    assert viewer.window.session.image.pixels[0, 0].tolist() == [200, 200, 200]
    viewer.set_image(Image.new("RGB", (33, 44), (10, 20, 30)))
    shown = viewer.window.session.image
    with pytest.raises(ValueError, match="shape"):
        viewer.set_image(np.zeros((5, 7, 9)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        viewer.set_image(np.full((8, 8, 3), 3.5))
    assert viewer.window.session.image is shown                # the previous image stays

    viewer.select(layer="features.3", channel=5, class_index=7)
    selection = viewer.window.session.selection
    assert (selection.layer, selection.channel, selection.class_index) == ("features.3", 5, 7)
    with pytest.raises(ValueError, match=r"no layer 'features\.33'.*features\.3"):
        viewer.select(layer="features.33")
    with pytest.raises(ValueError, match="16 channels"):
        viewer.select(channel=16)
    with pytest.raises(ValueError, match="10 outputs"):
        viewer.select(class_index=10)

    path = viewer.screenshot("feature_maps", tmp_path / "maps.png")
    assert viewer.window.feature_maps.view.layer == "features.3"   # drawn for the selection before the grab
    with Image.open(path) as saved:
        assert saved.size[0] > 100 and np.asarray(saved.convert("L")).std() > 5
    assert [p.name for p in tmp_path.iterdir()] == ["maps.png"]   # atomic: no temporary left
    with pytest.raises(ValueError, match="no panel"):
        viewer.screenshot("nowhere")

    other = SmallNet()
    viewer.load_model(other, labels=[f"other {i}" for i in range(10)], preprocess=SMALL_PRE, title="Other")
    viewer.wait_until_ready(30)
    assert viewer.window.windowTitle() == "cnnviewer — Other (from Python)"
    assert viewer.predictions[0][0].startswith("other ")
    with pytest.raises(TypeError, match="nn.Module"):
        viewer.load_model(3.5)
    assert viewer.window.windowTitle() == "cnnviewer — Other (from Python)"

    errors = []
    worker = threading.Thread(target=lambda: errors.append(pytest.raises(RuntimeError, viewer.refresh)))
    worker.start()
    worker.join()
    assert "thread that called cnnviewer.show" in str(errors[0].value)
    assert_same(net, before)
    viewer.close()
    with pytest.raises(RuntimeError, match="closed"):
        viewer.set_image(picture)


@pytest.mark.parametrize("live", [False, True])
def test_snapshot_keeps_its_weights_and_live_follows_them_after_refresh(qtbot, live):
    torch.manual_seed(1)
    net = SmallNet().train()
    for p in net.parameters():    # as in training: flags on; an optimizer's step writes in place
        p.requires_grad_(True)
    before_flags = [p.requires_grad for p in net.parameters()]
    viewer = cnnviewer.show(net, labels=LABELS, preprocess=SMALL_PRE, block=False, live=live)
    viewer.wait_until_ready(30)
    first = viewer.predictions
    viewer.select(layer="features.0", channel=2)
    with torch.no_grad():
        net.fc.bias[7] += 50.0     # in place, as optimizer.step() does
    viewer.refresh()
    viewer.wait_until_ready(30)
    after = viewer.predictions
    if live:
        assert after[0][0] == "thing 7" and after[0][1] > 0.99
    else:
        assert after == first
    selection = viewer.window.session.selection
    assert (selection.layer, selection.channel) == ("features.0", 2)   # refresh keeps what was shown
    viewer.screenshot("gradients")   # a backward pass through the (shared) weights
    assert viewer.window.gradients.results
    assert all(p.grad is None for p in net.parameters())   # nothing accumulated into the caller's .grad
    assert net.training and [p.requires_grad for p in net.parameters()] == before_flags and not has_hooks(net)
    assert viewer.window.session.model.module is not net
    viewer.close()


@pytest.fixture
def collector_on():
    """A Python session's state: the cycle collector on. Windows of earlier tests in this process handed
    it to their GUI-thread timer for good (ui/main_thread.py), so it is switched on here, and back after."""
    import gc
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_bad_inputs_give_one_line_and_leave_no_window(qtbot, collector_on):
    net = SmallNet()
    cases = [
        (lambda: cnnviewer.show("not a module", block=False), TypeError, "needs a torch.nn.Module, got str"),
        (lambda: cnnviewer.show(net, image=np.zeros((5, 7, 9)), block=False), ValueError, "shape"),
        (lambda: cnnviewer.show(net, image=torch.zeros(2, 3, 8, 8), block=False), ValueError, "shape"),
        (lambda: cnnviewer.show(net, image=object(), block=False), TypeError, "path, a PIL image"),
        (lambda: cnnviewer.show(net, labels="cat dog", block=False), TypeError, "sequence of class names"),
        (lambda: cnnviewer.show(net, preprocess=T.Compose([T.RandomHorizontalFlip(), T.ToTensor()]), block=False),
         ValueError, "RandomHorizontalFlip"),
        (lambda: cnnviewer.show(net, preprocess=T.Compose([T.Resize((32, 48)), T.ToTensor()]), block=False),
         ValueError, r"Resize\(size=\(32, 48\)"),
    ]
    for call, kind, words in cases:
        with pytest.raises(kind, match=words) as error:
            call()
        assert "\n" not in str(error.value)
        assert not any(w.isVisible() for w in QApplication.topLevelWidgets())
        assert __import__("gc").isenabled()   # no window left, so the collector is back on


def test_load_model_by_name_and_a_name_that_fails(qtbot):
    viewer = cnnviewer.show(SmallNet(), preprocess=SMALL_PRE, block=False)
    viewer.load_model("mobilenet_v2")
    viewer.wait_until_ready(60)
    assert viewer.window.windowTitle() == "cnnviewer — mobilenet_v2"
    assert viewer.predictions[0][0] == "Egyptian cat"
    assert QSettings("cnnviewer", "cnnviewer").value("last_model") == "mobilenet_v2"   # a name is remembered
    with pytest.raises(ValueError, match="no_such_net") as error:
        viewer.load_model("no_such_net")
    assert "\n" not in str(error.value) and viewer.window.windowTitle() == "cnnviewer — mobilenet_v2"
    viewer.close()


def test_the_remembered_launch_model_is_kept_and_the_collector_handed_back(qtbot, collector_on):
    import gc
    assert gc.isenabled()
    settings = QSettings("cnnviewer", "cnnviewer")
    settings.setValue("last_model", "resnet18")
    settings.sync()
    viewer = cnnviewer.show(SmallNet(), preprocess=SMALL_PRE, block=False)
    viewer.wait_until_ready(30)
    assert not gc.isenabled()   # collected from the GUI thread's timer while the window lives
    viewer.close()
    assert QSettings("cnnviewer", "cnnviewer").value("last_model") == "resnet18"
    assert gc.isenabled()


SCRIPT = """
import sys, time, torch
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
sys.path.insert(0, {tests!r})
from test_python_api import SmallNet, SMALL_PRE
import cnnviewer
app = QApplication([])
closed = []
def close_when_ready():
    window = next((w for w in app.topLevelWidgets() if w.isVisible() and "(from Python)" in w.windowTitle()), None)
    if window is not None and window.session.forward is not None:
        closed.append(time.monotonic())
        window.close()
    else:
        QTimer.singleShot(50, close_when_ready)
QTimer.singleShot(50, close_when_ready)
viewer = cnnviewer.show(SmallNet(), preprocess=SMALL_PRE)   # a plain script: runs until the window closes
print("returned after the close:", bool(closed) and time.monotonic() >= closed[0], viewer.window.isVisible())
"""


def test_a_plain_script_blocks_until_the_window_closes(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=str(Path(__file__).parent))], env=env,
                         capture_output=True, text=True, timeout=120)
    assert "returned after the close: True False" in out.stdout, out.stderr[-2000:]


def test_show_off_the_main_thread_or_beside_another_qt_binding_refuses_in_one_line(qtbot, monkeypatch, collector_on):
    """Widgets made on a worker thread hung or crashed the process; two Qt bindings are unsafe (IPython's
    qt_loaders says so): both are refused before any window or collector pause."""
    import gc
    import sys
    import types
    net = SmallNet()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            cnnviewer.show(net, preprocess=SMALL_PRE, block=False)
        except BaseException as error:  # noqa: BLE001 - the test reads it
            errors.append(error)

    worker = threading.Thread(target=call, name="trainer")
    worker.start()
    worker.join(20)
    assert not worker.is_alive() and len(errors) == 1
    assert isinstance(errors[0], RuntimeError) and "main thread" in str(errors[0]) and "'trainer'" in str(errors[0])
    monkeypatch.setitem(sys.modules, "PyQt5.QtCore", types.ModuleType("PyQt5.QtCore"))
    with pytest.raises(ImportError, match="already imported PyQt5") as error:
        cnnviewer.show(net, preprocess=SMALL_PRE, block=False)
    assert "\n" not in str(error.value)
    assert not any(w.isVisible() for w in QApplication.topLevelWidgets()) and gc.isenabled()


class PickyNet(SmallNet):
    """Fails on bright inputs only: the blank input of the load check passes, a white image does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0.5:
            raise ValueError("too bright for this net")
        return super().forward(x)


def test_an_error_on_one_image_is_forgotten_with_the_next_and_titles_name_their_panels(qtbot):
    viewer = cnnviewer.show(PickyNet(), image=np.ones((40, 40, 3)), preprocess=SMALL_PRE, block=False)
    with pytest.raises(RuntimeError, match="too bright"):
        viewer.wait_until_ready(30)
    viewer.set_image(np.zeros((40, 40, 3)))
    viewer.wait_until_ready(30)   # the white image's error was answered for that image only
    assert len(viewer.predictions) == 5
    for key, dock in viewer.window.docks.items():   # "Input && predictions": the title bar shows one "&"
        title = dock.windowTitle().replace("&&", "&")
        assert viewer._dock_key(title) == key and viewer._dock_key(title.upper()) == key
    assert viewer.screenshot("Input & predictions").shape[2] == 4
    viewer.close()
