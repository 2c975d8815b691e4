"""Test-wide setup: offscreen Qt, no network, a private torch hub cache."""

from __future__ import annotations

import os
import tempfile

# Before Qt or torch are imported anywhere.
os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ["CNNVIEWER_OFFLINE"] = "1"           # never try to download weights
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="cnnviewer-torch-home-")  # ignore the user's hub cache
os.environ.setdefault("OMP_NUM_THREADS", "2")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def astronaut_clip(tmp_path_factory):
    """A 12-frame video and image folder of the moving astronaut, a second face from frame 6."""
    from tests.media import make_clip
    return make_clip(tmp_path_factory.mktemp("clip"))
