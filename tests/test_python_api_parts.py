"""The torch-free parts of `cnnviewer.show`: event-loop planning, transform mapping, a light import."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from cnnviewer.engine.errors import ModelError
from cnnviewer.python_api.inputs import image_problem
from cnnviewer.python_api.loop import LoopPlan, plan_event_loop, qt_gui_active
from cnnviewer.python_api.transforms import to_preprocess


def shell(loop=None, kernel_loop=None):
    """Stand-ins for IPython's shells: the terminal keeps `active_eventloop`, ipykernel its kernel's."""
    kernel = SimpleNamespace(eventloop=kernel_loop) if kernel_loop is not None else None
    return SimpleNamespace(active_eventloop=loop, kernel=kernel)


def loop_qt():   # ipykernel's eventloop is a function named after its toolkit
    pass


@pytest.mark.parametrize(("block", "ipython", "running", "plan"), [
    (None, None, False, LoopPlan(block=True)),                     # a plain script runs until closed
    (False, None, False, LoopPlan(block=False)),
    (None, None, True, LoopPlan(block=False)),                     # inside a running Qt app
    (True, None, True, LoopPlan(block=False)),                     # never a nested loop
    (None, shell("qt"), False, LoopPlan(block=False)),             # %gui qt active: return at once
    (None, shell("qt6"), False, LoopPlan(block=False)),
    (None, shell(None, loop_qt), False, LoopPlan(block=False)),    # ipykernel with %gui qt
    (None, shell(None), False, LoopPlan(block=False, enable_gui=True)),        # IPython without it
    (False, shell("inline"), False, LoopPlan(block=False, enable_gui=True)),   # not a Qt loop
    (True, shell(None), False, LoopPlan(block=True)),              # asked to block: blocks
])
def test_plan_event_loop(block, ipython, running, plan):
    assert plan_event_loop(block, shell=ipython, qt_loop_running=running) == plan


def test_qt_gui_active_reads_terminal_and_kernel_shells():
    assert qt_gui_active(shell("qt5")) and qt_gui_active(shell(None, loop_qt))
    assert not qt_gui_active(shell(None)) and not qt_gui_active(shell("tk"))


def test_transforms_map_onto_preprocess():
    import torchvision
    from torchvision import transforms as T
    from torchvision.transforms import v2

    from cnnviewer.engine.models.handle import Preprocess
    from cnnviewer.engine.models.pretrained import preprocess_for
    for weights in (torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
                    torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1):   # bicubic, 256 / 224
        assert to_preprocess(weights.transforms()) == preprocess_for(weights)
    compose = T.Compose([T.Resize(72, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(64),
                         T.ToTensor(), T.Normalize([0.5], [0.2])])
    assert to_preprocess(compose) == Preprocess(72, 64, (0.5,) * 3, (0.2,) * 3, "bicubic")
    assert to_preprocess(v2.Compose([v2.Resize([40]), v2.CenterCrop((32, 32)), v2.ToImage(),
                                     v2.ToDtype(__import__("torch").float32, scale=True)])) == \
        Preprocess(40, 32, (0.0,) * 3, (1.0,) * 3, "bilinear")   # no Normalize: [0, 1] inputs
    assert to_preprocess(T.Compose([T.Resize(50), T.ToTensor()])).crop_size == 50


@pytest.mark.parametrize(("transform", "words"), [
    ("T.Compose([T.Resize(64), T.RandomCrop(56), T.ToTensor()])", "RandomCrop"),
    ("T.Compose([T.Resize((32, 40)), T.ToTensor()])", r"Resize\(size=\(32, 40\)"),
    ("T.Compose([T.CenterCrop(32), T.ToTensor()])", "no Resize"),
    ("T.Compose([T.Resize(40), T.Normalize([0.1, 0.2], [1, 1])])", "1 or 3 channels"),
    ("T.Grayscale()", "Grayscale"),
    ("lambda image: image", "cannot be mapped"),
])
def test_unmappable_transforms_name_the_step(transform, words):
    from torchvision import transforms as T  # noqa: F401 - used by eval
    with pytest.raises(ModelError, match=words) as error:
        to_preprocess(eval(transform))
    assert "\n" not in str(error.value)


def test_image_shapes():
    assert image_problem((10, 12)) is None and image_problem((10, 12, 3)) is None
    assert image_problem((3, 10, 12), "CHW") is None and image_problem((1, 3, 10, 12), "CHW") is None
    assert "shape (3, 10, 12)" in image_problem((3, 10, 12))            # numpy is channels last
    assert image_problem((2, 3, 8, 8), "CHW") and image_problem((0, 5, 3)) and image_problem((4,))


def test_import_cnnviewer_loads_neither_torch_nor_qt():
    code = ("import sys, cnnviewer; assert callable(cnnviewer.__getattr__); "
            "print('torch' in sys.modules, 'PySide6' in sys.modules, 'show' in dir(cnnviewer))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


def test_another_qt_binding_is_refused_before_pyside6_is_imported():
    code = ("import sys, types; sys.modules['PyQt6.QtCore'] = types.ModuleType('PyQt6.QtCore'); import cnnviewer\n"
            "try:\n    cnnviewer.show\nexcept ImportError as error:\n    print('refused:', error)\n"
            "print('PySide6' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("refused: ") and "already imported PyQt6" in lines[0] and lines[1] == "False"


def test_enormous_images_are_refused_and_floats_convert_in_bands():
    import tracemalloc

    import numpy as np
    import torch

    from cnnviewer.engine.errors import ImageError
    from cnnviewer.python_api.inputs import check_image, to_input_image
    huge = np.broadcast_to(np.zeros((1, 1, 1), np.float32), (12000, 11000, 3))   # no memory behind it
    with pytest.raises(ValueError, match=r"12000 x 11000 pixels is too large"):
        check_image(huge)
    with pytest.raises(ImageError, match="too large"):
        to_input_image(huge)
    with pytest.raises(ValueError, match=r"12000 x 11000 pixels is too large"):
        check_image(torch.zeros(1, 1, 1).expand(3, 12000, 11000))
    picture = np.random.default_rng(0).random((2000, 1500, 3), dtype=np.float32)
    tracemalloc.start()
    image = to_input_image(picture)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(image.pixels, np.round(picture * 255.0).astype(np.uint8))
    assert peak < picture.nbytes   # a whole-image round(array * 255) alone was twice the input
    with pytest.raises(ImageError, match=r"\[0, 1\].*NaN"):
        to_input_image(np.full((4, 4), np.nan))


@pytest.mark.parametrize("scale", [True, False])
def test_a_v2_pipeline_gives_the_tensor_the_app_feeds(scale):
    """Oracle: the user's own transform on the same pixels. v2.ToDtype(float32) without scale=True keeps
    0..255 values (it was mapped as if scaled: a model fed 1/255 of what it was trained on)."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    from cnnviewer.engine.media.images import from_pil
    from cnnviewer.engine.runtime.inference import prepare_input
    mean, std = ([120.0, 110.0, 100.0], [60.0, 55.0, 50.0]) if not scale else ([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    transform = v2.Compose([v2.Resize(32), v2.CenterCrop(32), v2.ToImage(), v2.ToDtype(torch.float32, scale=scale),
                            v2.Normalize(mean, std)])
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    expected = transform(picture)
    fed = prepare_input(from_pil(picture, "test"), to_preprocess(transform), torch.device("cpu")).tensor[0]
    assert torch.allclose(fed, expected, atol=1e-4)
