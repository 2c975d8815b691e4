"""Layer boundaries (pyproject's [tool.importlinter]) and a GUI-thread import that loads no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """engine: no Qt; GUI-side engine modules and views/: no torch; ui: no direct torch import."""
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports; "
                             "import sys; sys.exit(lint_imports(config_filename='pyproject.toml'))"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_importing_the_main_window_loads_no_torch():
    """The window is built and shown before torch is imported (on the job thread)."""
    code = ("import sys, cnnviewer.ui.main_window, cnnviewer.ui.app, cnnviewer.cli; "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
