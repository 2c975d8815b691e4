"""`cnnviewer export gradients` with the methods of issue 23, run as a user runs it (real processes).

The real MobileNetV2 on skimage's chelsea. Score-CAM is asked for at an early layer (features.4:
32 channels, so 32 forwards) to keep the run short; the automatic layer is checked with Grad-CAM++.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.cli.test_cli import photos, run  # noqa: F401 - `photos` is a fixture used below


def test_cam_methods_name_their_layer_and_take_cam_layer(photos, tmp_path):   # noqa: F811
    raw = tmp_path / "pp.npy"
    auto = run("export", "gradients", str(photos["chelsea"]), "--method", "grad-cam++", "-o",
               str(tmp_path / "pp.png"), "--npy", str(raw))
    assert auto.returncode == 0, auto.stderr
    assert "grad-cam++ of class 28" in auto.stdout and "at layer features.18.2 (auto)" in auto.stdout
    values = np.load(raw)
    assert values.shape == (224, 224) and values.min() >= 0 and values.max() > 0
    chosen = run("export", "gradients", str(photos["chelsea"]), "--method", "score-cam", "--cam-layer", "features.4",
                 "-o", str(tmp_path / "sc.png"))
    assert chosen.returncode == 0, chosen.stderr
    assert "score-cam of class 28" in chosen.stdout and "at layer features.4 in" in chosen.stdout
    assert Image.open(tmp_path / "sc.png").size == (224, 224)
    bad = run("export", "gradients", str(photos["chelsea"]), "--method", "eigen-cam", "--cam-layer", "nope",
              "-o", str(tmp_path / "x.png"))
    assert bad.returncode == 2 and "no layer 'nope'" in bad.stderr


def test_smoothgrad_options_reach_the_map(photos, tmp_path):   # noqa: F811
    """The options are used (the summary line says them) and the map is input × gradient's shape;
    the same seed giving the same map is checked in tests/engine/test_attribution_methods.py."""
    raw = tmp_path / "sg.npy"
    result = run("export", "gradients", str(photos["chelsea"]), "--method", "smoothgrad", "--smooth-base",
                 "input-x-gradient", "--noise", "0.3", "--samples", "3", "-o", str(tmp_path / "sg.png"),
                 "--npy", str(raw))
    assert result.returncode == 0, result.stderr
    assert "(input-x-gradient, noise 0.3, 3 samples)" in result.stdout
    values = np.load(raw)
    assert values.shape == (224, 224, 3) and values.min() < 0 < values.max()   # signed, as x · ∂y/∂x is


@pytest.mark.parametrize(("argv", "message"), [
    (("--method", "smoothgrad", "--noise", "0"), "out of range"),
    (("--method", "smoothgrad", "--noise", "nan"), "out of range"),
    (("--method", "smoothgrad", "--samples", "0"), "out of range"),
    (("--method", "smoothgrad", "--smooth-base", "occlusion"), "invalid choice"),
])
def test_bad_smoothing_options_are_refused_in_one_line(photos, tmp_path, argv, message):   # noqa: F811
    result = run("export", "gradients", str(photos["chelsea"]), *argv, "-o", str(tmp_path / "x.png"))
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
