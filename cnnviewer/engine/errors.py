"""User-facing error types: each carries a one-line message fit for a status bar."""

from __future__ import annotations


class Cancelled(Exception):
    """The work was cancelled or superseded: nothing to report, nothing to show.

    The one cancellation type: jobs, downloads, occlusion and integrated
    gradients all raise it, and the job runner delivers nothing for it.
    """


class CnnViewerError(Exception):
    """Base for errors whose message is shown to the user as it is."""


class ImageError(CnnViewerError):
    """An image file could not be read; the message names the file and why."""


class WeightsError(CnnViewerError):
    """A weights file could not be read or does not fit the model."""


class UntrustedPickleError(WeightsError):
    """The file is a full pickled model: loading it runs code, so it needs explicit trust."""


class ViewError(CnnViewerError):
    """A view cannot be drawn for this selection (a layer without maps, a layer without output)."""


class ModelError(CnnViewerError):
    """A model could not be built (unknown name, bad architecture file, ...)."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe(error: BaseException) -> str:
    """'TypeName: first line' for a foreign exception, our own errors' message as it is."""
    if isinstance(error, CnnViewerError):
        return str(error)
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
