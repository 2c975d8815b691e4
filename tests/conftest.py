"""Test-wide setup: offscreen Qt, no network, a private torch hub cache."""

from __future__ import annotations

import os
import tempfile

# Before Qt or torch are imported anywhere.
os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ["CNNVIEWER_OFFLINE"] = "1"           # never try to download weights
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="cnnviewer-torch-home-")  # ignore the user's hub cache
os.environ.setdefault("OMP_NUM_THREADS", "2")
