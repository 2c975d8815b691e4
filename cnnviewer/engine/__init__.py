"""Qt-free inference engine: models, weights, images, activations, jobs.

Nothing here imports PySide6 or pyqtgraph, so a notebook or a test can use it
directly. Only numpy arrays and frozen dataclasses leave this package for the UI.
"""
