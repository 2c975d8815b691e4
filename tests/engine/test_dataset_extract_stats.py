"""The index's per-batch pooling and mode handling (extract.py), kept cheap for throughput: numpy's
argmax must give exactly torch's max(dim) values and first-maximum positions, and skipping the
per-batch eval()/train() walk must never leave a model in another mode or update its statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from cnnviewer.engine.dataset.extract import _channel_stats, extract
from cnnviewer.engine.dataset.names import LOGITS
from cnnviewer.engine.models.loading import load_model


def reference(output: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pooling as it was: torch's max(dim) and mean over the flattened positions."""
    values = output.float()
    flat = values[:, :, None] if values.dim() == 2 else values.flatten(2)
    maxima, where = flat.max(dim=2)
    return maxima.numpy(), where.to(torch.int32).numpy(), flat.mean(dim=2).numpy()


@pytest.mark.parametrize("shape, layout", [((4, 8, 13, 11), "contiguous"), ((4, 8, 13, 11), "channels_last"),
                                           ((3, 5, 17), "contiguous"), ((6, 1000), "contiguous"),
                                           ((2, 16, 7, 7), "relu ties")])
def test_numpy_pooling_equals_torch_max_and_mean(shape, layout):
    generator = torch.Generator().manual_seed(0)
    output = torch.randn(shape, generator=generator)
    if layout == "channels_last":
        output = output.contiguous(memory_format=torch.channels_last)
    if layout == "relu ties":          # many equal maxima (all zero channels): the first one counts
        output = torch.relu(output - 2.0)
    with torch.inference_mode():
        ours = _channel_stats(output)
    expected = reference(output)
    for got, want in zip(ours, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def two_photos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("two")
    paths = [root / "chelsea.jpg", root / "coffee.jpg"]
    for path, picture in zip(paths, (data.chelsea(), data.coffee())):
        Image.fromarray(picture).save(path, quality=90)
    return paths


@pytest.mark.parametrize("training", [False, True])
def test_a_batch_runs_in_eval_and_leaves_the_model_as_it_was(two_photos, training):
    model = load_model("mobilenet_v2")
    model.module.train(training)
    norms = [m for m in model.module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    stats, _ = next(extract(model, two_photos, ["features.3", LOGITS], batch_size=2))
    assert stats.indices == [0, 1]
    assert all(m.training == training for m in model.module.modules())
    assert all(torch.equal(m.running_mean, old) for m, old in zip(norms, before))   # eval mode while run
    model.module.eval()
