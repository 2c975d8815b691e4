"""Synthesis (issue 13, engine first): class ascent with the real MobileNetV2 weights, each
regularizer moving the image its intended way, DeepDream, the Fourier parameterization,
determinism from a seed, and the model left exactly as it was found."""

from __future__ import annotations

import os
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from skimage import data

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.models.loading import load_model
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.synthesis.deepdream import (
    DeepDream,
    DreamSettings,
    activation_energy,
)
from cnnviewer.engine.synthesis.fourier import FourierAscent, FourierSettings
from cnnviewer.engine.synthesis.pixels import (
    PixelAscent,
    total_variation,
    total_variation_gradient,
)
from cnnviewer.engine.synthesis.settings import FACETS, PixelSettings, preset


@pytest.fixture(scope="module")
def model():
    return load_model("mobilenet_v2")


def top1(model, ascent) -> int:
    with torch.no_grad():
        return int(model.module(ascent.model_input()).argmax(dim=1)[0])


@pytest.mark.parametrize("class_index", [130, 417])      # flamingo, balloon
def test_class_ascent_makes_the_class_mobilenets_top1(model, class_index):
    ascent = PixelAscent(model, Target(class_index=class_index), preset(3, steps=80))
    ascent.run(80)
    start, end = float(ascent.history[0][0]), float(ascent.history[-1][0])
    assert top1(model, ascent) == class_index
    assert end - start > 10.0 and end > 3 * abs(start)
    pictures = ascent.pictures()
    assert pictures.dtype == np.uint8 and pictures.shape == (1, 224, 224, 3) and pictures.std() > 5


def _laplacian_energy(x: torch.Tensor) -> float:
    lap = 4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return float(lap.pow(2).mean())


def test_each_regularizer_moves_the_image_its_way(model):
    target = Target(layer="features.10", channel=7)
    base = PixelSettings(steps=9, lr=100.0, size=128)

    def after(settings: PixelSettings) -> torch.Tensor:
        ascent = PixelAscent(model, target, settings)
        ascent.run(settings.steps)
        return ascent.x

    plain = after(base)
    blurred = after(PixelSettings(**{**base.__dict__, "blur_radius": 1.0, "blur_every": 4}))
    assert _laplacian_energy(blurred) < 0.5 * _laplacian_energy(plain)             # blur: less high frequency
    decayed = after(PixelSettings(**{**base.__dict__, "decay": 0.3}))
    assert float(decayed.norm()) < 0.7 * float(plain.norm())                       # decay: a smaller norm
    clipped = after(PixelSettings(**{**base.__dict__, "small_norm_percentile": 50.0}))
    zero = clipped.norm(dim=1) == 0
    assert zero.float().mean() >= 0.45                                             # the weakest half of the pixels
    benefit = after(PixelSettings(**{**base.__dict__, "small_benefit_percentile": 90.0}))
    assert (benefit.norm(dim=1) == 0).float().mean() >= 0.85                       # all but the top 10 %


def test_total_variation_smooths_the_image_and_its_gradient_is_exact(model):
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(total_variation(x).sum(), x)
    torch.testing.assert_close(total_variation_gradient(x.detach()), expected)       # the closed form
    target = Target(layer="features.10", channel=7)
    base = PixelSettings(steps=9, lr=100.0, size=128)
    plain, smooth = (PixelAscent(model, target, PixelSettings(**{**base.__dict__, "tv_weight": weight}))
                     for weight in (0.0, 3e-4))
    plain.run(9)
    smooth.run(9)
    assert float(total_variation(smooth.x)[0]) < 0.25 * float(total_variation(plain.x)[0])
    assert smooth.history[-1][0] > 0.5 * plain.history[-1][0]                        # still ascends


def test_deepdream_raises_the_layers_energy(model):
    photo = data.chelsea()[::2, ::2].copy()
    before = activation_energy(model, photo, "features.10")
    dream = DeepDream(model, Target(layer="features.10"), DreamSettings(octaves=2, steps=4), photo)
    dream.run(dream.total_steps)
    assert dream.step == 8 and dream.pictures().shape[1:3] == photo.shape[:2]
    assert activation_energy(model, dream.pictures()[0], "features.10") > 1.5 * before


def test_fourier_ascent_raises_the_objective(model):
    ascent = FourierAscent(model, Target(layer="features.10", channel=7), FourierSettings(steps=40, size=128))
    ascent.run(40)
    values = np.array([h[0] for h in ascent.history])
    assert values[-5:].mean() > 3 * max(values[:3].mean(), 1e-3)
    assert ascent.pictures().shape == (1, 128, 128, 3)


def test_a_seed_makes_the_same_image_and_the_model_is_left_as_found(model):
    module = model.module
    module.features[3].train()                                  # a mode the run must not change
    module.classifier[1].weight.requires_grad_(True)
    flags = [p.requires_grad for p in module.parameters()]
    try:
        settings = PixelSettings(steps=6, lr=100.0, jitter=8, blur_radius=0.5, blur_every=2, size=96, seed=3)
        first, second = (PixelAscent(model, Target(class_index=1), settings) for _ in range(2))
        first.run(6)
        second.run(6)
        assert np.array_equal(first.pictures(), second.pictures())
        from dataclasses import replace
        first.settings = replace(settings, steps=9)                  # finished, then Continue to 9 steps
        first.run(3)
        assert np.array_equal(first.pictures(), _run(model, replace(settings, steps=9)))   # = one 9-step run
        assert not np.array_equal(first.pictures(), _run(model, PixelSettings(**{**settings.__dict__, "seed": 4})))
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(Cancelled):
            PixelAscent(model, Target(class_index=1), settings).run(3, cancel)         # Stop
        assert not has_hooks(module) and [p.requires_grad for p in module.parameters()] == flags
        assert module.features[3].training and not module.features[4].training
    finally:
        module.features[3].eval()
        module.classifier[1].weight.requires_grad_(False)


def _run(model, settings: PixelSettings) -> np.ndarray:
    ascent = PixelAscent(model, Target(class_index=1), settings)
    ascent.run(settings.steps)
    return ascent.pictures()


def test_synthesize_command_writes_a_recipe_that_reproduces_the_image(tmp_path, capsys, monkeypatch):
    import json

    from cnnviewer.cli import main

    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    out = tmp_path / "flamingo.png"
    assert main(["synthesize", "--method", "ascent", "--target-class", "130", "--steps", "12", "--size", "96",
                 "--seed", "5", "-o", str(out)]) == 0
    recipe = json.loads(out.with_suffix(".json").read_text())
    assert recipe["settings"]["decay"] == 0.0001 and recipe["settings"]["steps"] == 12 and recipe["seed"] == 5
    assert recipe["model"] == "mobilenet_v2" and len(recipe["weights_sha256"]) == 64 and recipe["cnnviewer"]
    again = tmp_path / "again.png"
    assert main(["synthesize", "--from", str(out.with_suffix(".json")), "-o", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()                       # bit-identical on the same CPU
    capsys.readouterr()
    assert main(["synthesize", "--layer", "features.3", "-o", str(tmp_path / "x.png")]) == 2   # no channel
    assert capsys.readouterr().err.count("\n") == 1


def test_synthesize_defaults_to_fourier_as_the_panel_does(tmp_path, monkeypatch):
    """Trial row 5: the default makes recognisable images (Fourier with transforms), in the CLI too."""
    import json

    from cnnviewer.cli import main
    monkeypatch.setenv("CNNVIEWER_OFFLINE", "1")
    out = tmp_path / "flamingo.png"
    assert main(["synthesize", "--target-class", "130", "--steps", "2", "--size", "64", "-o", str(out)]) == 0
    recipe = json.loads(out.with_suffix(".json").read_text())
    assert recipe["method"] == "fourier" and recipe["settings"]["transforms"] is True


def test_facets_start_from_each_group_and_all_rise_together(model, tmp_path, monkeypatch, capsys):
    """Two clearly different groups of photos (crops, flips, tints of two pictures) that both excite a
    unit give two facets; each starts from its group's mean crop and ends above every real image."""
    from PIL import Image

    from cnnviewer.engine.dataset.build import build_index
    from cnnviewer.engine.media.images import load_image
    from cnnviewer.engine.runtime.inference import prepare_input
    from cnnviewer.engine.synthesis.facets import facet_ascent, find_facets

    folder = tmp_path / "two"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("astronaut", "coffee"):
        photo = Image.fromarray(getattr(data, name)())
        for i in range(6):
            left, top = (int(v) for v in rng.integers(0, 60, 2))
            crop = photo.crop((left, top, left + 400, top + 380))
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else crop
            tinted = np.clip(np.asarray(crop) * rng.uniform(0.85, 1.15, 3), 0, 255).astype(np.uint8)
            Image.fromarray(tinted).save(folder / f"{name}_{i}.png")
    index = build_index(folder, model, tmp_path / "index", layers=["features.18", "logits"], workers=0)
    maxima = np.asarray(index.array("features.18", "max"))
    groups = {name: [row for row, entry in index.rows.items() if entry["path"].startswith(name)]
              for name in ("astronaut", "coffee")}
    channel = int(np.argmax(np.minimum(maxima[groups["astronaut"]].mean(0), maxima[groups["coffee"]].mean(0))))
    target = Target(layer="features.18", channel=channel)
    found = find_facets(index, model, target, facets=2, top=12, nearest=6)
    assert sorted(sorted(index.path(r).name.split("_")[0] for r in m) for m in found.members) == \
        [["astronaut"] * 6, ["coffee"] * 6]                              # the clusters are the two groups
    for facet, members in enumerate(found.members):
        crops = [prepare_input(load_image(index.path(r)), model.preprocess, torch.device("cpu")).display
                 for r in members]
        expected = np.mean(np.stack(crops).astype(np.float32), axis=0) - np.array(model.preprocess.mean) * 255
        np.testing.assert_allclose(found.starts[facet].permute(1, 2, 0).numpy(), expected, atol=1e-3)
    their_method = replace(FACETS, steps=25)        # total variation and jitter (Nguyen et al. 2016)
    ascent = facet_ascent(model, target, found, their_method)
    assert ascent.threads == min(os.cpu_count() or 1, 2)       # one torch thread per facet, up to the cores
    ascent.run(25)
    best_real = float(np.asarray(index.array("features.18", "mean"))[:, channel].max())
    assert (ascent.objective() > best_real).all() and (ascent.objective() > 2 * ascent.history[0]).all()
    # One facet alone computes what the batch does for it: equal up to float sums split by batch size
    # (compared after 3 steps; jitter and TV then amplify those last bits, 2 % apart by step 25).
    batch, alone = (facet_ascent(model, target, found, their_method),
                    PixelAscent(model, target, their_method, start=found.starts[1:2]))
    batch.run(3)
    alone.run(3)
    difference = np.abs(alone.pictures()[0].astype(int) - batch.pictures()[1].astype(int))
    assert difference.max() <= 1 and difference.mean() < 0.01
    assert float(alone.objective()[0]) == pytest.approx(float(batch.objective()[1]), rel=1e-4)
    from cnnviewer.cli import main
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "facets.png"
    assert main(["synthesize", "--method", "facets", "--folder", str(folder), "--layer", "features.18", "--channel",
                 str(channel), "--facets", "2", "--top", "12", "--steps", "3", "-o", str(out)]) == 0
    assert Image.open(out).size == (448, 224) and "facet 2: 6 images" in capsys.readouterr().out   # side by side


@pytest.mark.parametrize("number", [1, 4])
def test_the_progress_presets_make_progress(model, number):
    """Table 1's settings 1 and 4 pick lr so that f would rise by desired_progress per step were it
    linear; with the lr measured against the wrong gradient they stood still (+0.7 in 150 steps)."""
    ascent = PixelAscent(model, Target(class_index=130), preset(number, steps=60))
    ascent.run(60)
    start, end = float(ascent.history[0][0]), float(ascent.history[-1][0])
    assert end > start + 4.0, (start, end)


def test_the_image_convs_fast_input_gradient_equals_autograds():
    """conv1 of ResNet-18 (7×7, stride 2, 3 channels): the product-and-fold gradient is the same."""
    import torchvision

    from cnnviewer.engine.synthesis.image_conv import ImageConv, image_conv, suits
    conv = torchvision.models.resnet18().conv1.requires_grad_(False)
    assert suits(conv) and not suits(torchvision.models.resnet18().layer1[0].conv1)
    fast = image_conv(conv)
    assert isinstance(fast, ImageConv) and fast.weight is conv.weight and type(conv) is torch.nn.Conv2d
    x = torch.randn((2, 3, 61, 64), generator=torch.Generator().manual_seed(0), requires_grad=True)
    weights = torch.randn((2, 64, 31, 32), generator=torch.Generator().manual_seed(1))
    (expected,) = torch.autograd.grad((conv(x) * weights).sum(), x)
    out = fast(x)
    (got,) = torch.autograd.grad((out * weights).sum(), x)
    torch.testing.assert_close(out, conv(x))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_scale_and_rotate_is_interpolate_then_rotate():
    import torchvision.transforms.functional as TF

    from cnnviewer.engine.synthesis.fourier import scale_and_rotate
    photo = torch.from_numpy(data.chelsea()[:240, :240].astype(np.float32) / 255).permute(2, 0, 1)[None]
    for degrees in (7.0, -10.0):
        expected = TF.rotate(photo, degrees, interpolation=TF.InterpolationMode.BILINEAR)
        torch.testing.assert_close(scale_and_rotate(photo, 1.0, degrees), expected, atol=1e-4, rtol=0)
    scaled = scale_and_rotate(photo, 1.04, 5.0)
    two_passes = TF.rotate(torch.nn.functional.interpolate(photo, scale_factor=1.04, mode="bilinear"), 5.0,
                           interpolation=TF.InterpolationMode.BILINEAR)
    assert scaled.shape == two_passes.shape and float((scaled - two_passes)[..., 20:-20, 20:-20].abs().mean()) < 0.02


def test_torch_threads_sets_then_restores_the_count():
    from cnnviewer.engine.runtime.modes import torch_threads
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(before + 1):
        raise RuntimeError("a failed step")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
