"""One dock panel per module."""
