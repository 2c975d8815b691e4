"""Multi-faceted ascent's clusters: one column per facet, its caption above its own images.

The facets themselves are drawn side by side in the panel's canvas, in the same order, so column k
here sits under facet k there. Each thumbnail has a frame: a facet of white pictures (all-white
wallpapers) otherwise vanished into the white background. The strip scrolls sideways when the
panel is narrower than its columns: their width used to widen the whole dock column, squeezing the
Input & predictions column at 1280x800 as soon as a multi-faceted run showed its clusters."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from cnnviewer.ui.panels.dataset.widgets import pixmap

THUMB = 48


class FacetStrip(QScrollArea):
    """Each facet's caption (number, objective reached) above its cluster's most central images."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.captions: list[QLabel] = []
        self.thumbs: list[list[QLabel]] = []
        inner = QWidget()
        self._row = QHBoxLayout(inner)
        self._row.setContentsMargins(0, 0, 0, 0)
        self.setWidget(inner)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Each facet's cluster: the images nearest its centre (the facet starts from their mean)")

    def clear(self) -> None:
        """No facets: nothing shown, no space taken."""
        while self._row.count():
            item = self._row.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.captions, self.thumbs = [], []
        self.setVisible(False)

    def show_facets(self, examples: list[tuple[int, list[np.ndarray], list[str]]]) -> None:
        """`examples`: (facet, thumbnails, file names) per facet, in the canvas's left-to-right order."""
        self.clear()
        for facet, pictures, names in examples:
            column = QWidget()
            layout = QVBoxLayout(column)
            layout.setContentsMargins(2, 0, 2, 0)
            caption = QLabel(f"<b>facet {facet + 1}</b>")
            caption.setAlignment(Qt.AlignmentFlag.AlignHCenter)
            layout.addWidget(caption)
            grid = QGridLayout()
            grid.setSpacing(2)
            labels = []
            for i, (picture, name) in enumerate(zip(pictures, names)):
                label = QLabel()
                label.setFrameShape(QFrame.Shape.Box)        # white pictures stay visible
                label.setLineWidth(1)
                label.setPixmap(pixmap(picture).scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                                       Qt.TransformationMode.SmoothTransformation))
                label.setToolTip(f"facet {facet + 1}: {name}")
                grid.addWidget(label, i // 2, i % 2)
                labels.append(label)
            layout.addLayout(grid)
            layout.addStretch(1)
            self._row.addWidget(column, 1)
            self.captions.append(caption)
            self.thumbs.append(labels)
        self.setVisible(bool(examples))
        self.setFixedHeight(self.widget().sizeHint().height() + self.horizontalScrollBar().sizeHint().height())

    def show_values(self, values: list[float]) -> None:
        """Each facet's objective as the last slice left it, in its caption."""
        for i, (caption, value) in enumerate(zip(self.captions, values)):
            caption.setText(f"<b>facet {i + 1}</b>: {value:.3g}")
