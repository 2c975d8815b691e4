"""PySide6 + pyqtgraph user interface: renders engine results and forwards intent."""
