"""cnnviewer: look inside convolutional neural networks."""

__version__ = "0.1.0"
