"""The index runs a copy of the model with its BatchNorms folded into the convolutions (15 % of
mobilenet_v2's forward at one thread); its statistics must be the model's own, the model untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data
from torch import nn

from cnnviewer.engine.dataset.extract import _channel_stats, _fast_runner, extract
from cnnviewer.engine.dataset.names import LOGITS
from cnnviewer.engine.models.loading import load_model

LAYERS = ["features.2", "features.9", "features.17", LOGITS]


def unfolded_stats(module: nn.Module, inputs: torch.Tensor, layers: list[str]) -> dict:
    """Independent reference: plain forward hooks on the model as it is, reduced like the index."""
    found, handles = {}, []
    modules = dict(module.named_modules())
    for name in layers:
        if name != LOGITS:
            handles.append(modules[name].register_forward_hook(
                lambda _m, _i, out, name=name: found.__setitem__(name, _channel_stats(out))))
    with torch.inference_mode():
        found[LOGITS] = _channel_stats(module(inputs))
    for handle in handles:
        handle.remove()
    return found


def test_index_statistics_equal_the_unfolded_model_and_the_model_is_untouched(tmp_path: Path):
    model = load_model("mobilenet_v2")            # the real ImageNet weights (offline pack)
    before = {name: tensor.clone() for name, tensor in model.module.state_dict().items()}
    kinds = [type(m) for m in model.module.modules()]
    photos = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        photos.append(tmp_path / f"{name}.png")
        Image.fromarray(getattr(data, name)()).save(photos[-1])
    stats = next(extract(model, photos, LAYERS, batch_size=4))[0]
    from cnnviewer.engine.runtime.inference import prepare_input
    from cnnviewer.engine.media.images import load_image
    inputs = torch.cat([prepare_input(load_image(p), model.preprocess, torch.device("cpu"), torch.float32, 3).tensor
                        for p in photos])
    expected = unfolded_stats(model.module, inputs, LAYERS)
    for name in LAYERS:
        np.testing.assert_allclose(stats.maxima[name], expected[name][0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(stats.means[name], expected[name][2], rtol=1e-4, atol=1e-4)
        assert (stats.positions[name] == expected[name][1]).mean() > 0.99
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.module.state_dict().items())
    assert [type(m) for m in model.module.modules()] == kinds
    assert not any(m._forward_hooks for m in model.module.modules())


def test_the_copy_is_folded_except_recorded_layers_and_training_models():
    model = load_model("mobilenet_v2").module.eval()
    named = dict(model.named_modules())
    probe = torch.rand(2, 3, 224, 224)
    runner, run_named = _fast_runner(model, ["features.3", LOGITS], probe, named)
    assert runner is not model and not any(isinstance(m, nn.BatchNorm2d) for m in runner.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    kept, _ = _fast_runner(model, ["features.0.1"], probe, named)          # a BatchNorm recorded itself
    assert isinstance(dict(kept.named_modules())["features.0.1"], nn.BatchNorm2d)
    model.train()
    assert _fast_runner(model, ["features.3"], probe, dict(model.named_modules()))[0] is model
