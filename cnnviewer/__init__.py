"""cnnviewer: look inside convolutional neural networks.

From Python: `cnnviewer.show(model)` opens the window on an in-memory nn.Module and returns a
`cnnviewer.Viewer`. Both load on first use (PEP 562), so `import cnnviewer`, and with it the
`cnnviewer` command's start, loads neither Qt nor torch.
"""

__version__ = "0.1.0"
__all__ = ["Viewer", "show"]


def __getattr__(name: str):
    if name in ("show", "Viewer"):
        from cnnviewer.python_api import viewer

        return getattr(viewer, name)
    raise AttributeError(f"module 'cnnviewer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "show", "Viewer"])
