"""cnnviewer: look inside convolutional neural networks.

From Python: `cnnviewer.show(model)` opens the window on an in-memory nn.Module and returns a
`cnnviewer.Viewer`. Both load on first use (PEP 562), so `import cnnviewer`, and with it the
`cnnviewer` command's start, loads neither Qt nor torch.
"""

__version__ = "0.1.0"
__all__ = ["Viewer", "show"]


def __getattr__(name: str):
    if name in ("show", "Viewer"):
        # By name, not an import statement: engine modules read `cnnviewer.__version__`, and the
        # import graph (import-linter, the cycle test) would otherwise see each of them reach Qt
        # through this package. Only a caller asking for cnnviewer.show loads the window's code.
        # The cycle collector is paused while the window's modules import (as engine.runtime.startup
        # does for torch): a full collection then walks the caller's whole heap, torch's millions of
        # objects included, 0.2-0.4 s measured on the way to show()'s first line.
        import gc
        import importlib

        # Before PySide6 is imported: with another Qt binding loaded, that import is itself unsafe.
        importlib.import_module("cnnviewer.python_api.loop").refuse_foreign_qt()
        collecting = gc.isenabled()
        gc.disable()
        try:
            module = importlib.import_module(f"cnnviewer.python_api.{name.lower()}")
        finally:
            if collecting:
                gc.enable()
        return getattr(module, name)
    raise AttributeError(f"module 'cnnviewer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "show", "Viewer"])
