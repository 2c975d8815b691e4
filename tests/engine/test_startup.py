"""Torch imported with the garbage collector paused and frozen once (engine/runtime/startup.py)."""

from __future__ import annotations

import gc
import subprocess
import sys

from cnnviewer.engine.runtime.startup import import_torch


def test_the_import_that_loads_torch_freezes_and_leaves_the_collector_on():
    code = ("import gc, sys\nfrom cnnviewer.engine.runtime.startup import import_torch\n"
            "assert 'torch' not in sys.modules\nimport_torch()\n"
            "print('torch' in sys.modules, 'torchvision' in sys.modules, gc.isenabled(), gc.get_freeze_count() > 100000)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", "True", "True", "True"]


def test_a_later_call_freezes_nothing_more():
    """Freezing again would keep every object alive at that moment (closed windows' garbage) forever."""
    import torch  # noqa: F401 - torch already loaded, as in any later call
    import torchvision  # noqa: F401

    frozen, enabled = gc.get_freeze_count(), gc.isenabled()
    import_torch()
    assert gc.get_freeze_count() == frozen and gc.isenabled() == enabled
