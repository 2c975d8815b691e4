"""Input & predictions: the photo and a bar chart of its top-5 classes; for a model whose output is a
class map, the map over the photo with its legend (class_map_overlay)."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QLabel, QSplitter, QTabWidget, QVBoxLayout, QWidget

from cnnviewer.engine.session import Session
from cnnviewer.ui.panels.class_map_overlay import ClassMapControls
from cnnviewer.ui.widgets.image_canvas import ImageCanvas

TOP_K = 5   # what the forward summary holds


class PredictionsPanel(QWidget):
    """Shows the current input image and the model's top-5 probabilities."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session = session
        self.title = QLabel("Loading…")
        self.title.setWordWrap(True)
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.canvas = ImageCanvas(self)
        self.chart = pg.PlotWidget(background=(30, 30, 34))
        self.chart.setMouseEnabled(False, False)
        self.chart.hideButtons()
        self.chart.setMenuEnabled(False)
        self.chart.getAxis("bottom").setLabel("probability")
        self.chart.setXRange(0, 1, padding=0.02)
        self.chart.getViewBox().invertY(True)
        self.bars = pg.BarGraphItem(x0=[], y=[], height=0.7, width=[], brush=(86, 156, 214))
        self.chart.addItem(self.bars)
        # With knock-outs: the intact model's probability of each class, as an outline over its bar.
        self.ghosts = pg.BarGraphItem(x0=[], y=[], height=0.7, width=[], brush=None,
                                      pen=pg.mkPen((235, 235, 235), width=1.5, style=Qt.PenStyle.DashLine))
        self.ghosts.setZValue(5)
        self.chart.addItem(self.ghosts)
        self.deltas: list[str] = []     # per bar: '−12.3 pts' while knock-outs are active, else ''
        # Made once and only moved / retexted: creating and removing pyqtgraph items
        # on every forward pass cost the GUI thread 12-17 ms.
        self._value_labels = [pg.TextItem("", color=(230, 230, 230), anchor=(0, 0.5)) for _ in range(TOP_K)]
        for item in self._value_labels:
            self.chart.addItem(item)
        self.chart.setYRange(-0.6, TOP_K - 0.4, padding=0)
        self.chart.setToolTip("Click a bar to choose that class everywhere: the gradient views explain it, "
                                 "Synthesis makes an image of it")
        self.chart.scene().sigMouseClicked.connect(self._on_chart_clicked)
        self._size_chart_by_font()
        self.class_map = ClassMapControls(session, self.canvas, self)
        # Below the photo: the top-5, and for a class map its legend in a second tab (shown first), so
        # the photo keeps its height in a 1280x800 window.
        self.lower = QTabWidget(self)
        self.lower.setDocumentMode(True)
        self.lower.addTab(self.chart, "Top-5")
        self.lower.addTab(self.class_map, "Classes in the map")
        self.lower.tabBar().setVisible(False)
        self.class_map.shown.connect(self._on_class_map_shown)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(self.canvas)
        splitter.addWidget(self.lower)
        splitter.setCollapsible(1, False)      # the chart keeps room for five readable rows
        splitter.setStretchFactor(0, 1)        # a narrower dock or a longer title takes from the photo
        splitter.setSizes([320, self.chart.minimumHeight()])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.title)
        layout.addWidget(self.class_map.bar)
        layout.addWidget(splitter)
        self.predictions: tuple = ()
        session.image_changed.connect(self._on_image_changed)
        session.model_changed.connect(self._on_model_changed)
        session.forward_changed.connect(self.show_predictions)
        session.forward_failed.connect(self.clear)
        if session.image is not None:
            self._on_image_changed(session.image)

    def attach(self, jobs, workbench, toggle=None) -> None:
        """Let the panel compute class maps on the job thread (UiJobs, the LazyWorkbench) and show the
        window's "Fully convolutional" toggle (ui.fully_convolutional) as a checkbox."""
        self.class_map.attach(jobs, workbench, toggle)

    def _on_class_map_shown(self, shown: bool) -> None:
        """A class map arrived (its legend's tab in front) or went (the top-5 alone, no tabs)."""
        self.lower.tabBar().setVisible(shown)
        self.lower.setTabEnabled(1, shown)
        self.lower.setCurrentIndex(1 if shown else 0)

    def _size_chart_by_font(self) -> None:
        """Rows no closer than a line of text, labels in a fixed column: squeezed by a narrow dock or
        the two-line untrained warning, the five class names were drawn on top of each other."""
        metrics = QFontMetrics(self.chart.getAxis("left").style.get("tickFont") or self.font())
        row = metrics.lineSpacing() + 6
        self._label_width = metrics.horizontalAdvance("x" * 16)
        self.chart.getAxis("left").setWidth(self._label_width + 10)
        self._label_metrics = metrics
        self.chart.setMinimumHeight(TOP_K * row + 2 * metrics.lineSpacing() + 24)   # rows, axis, its label

    def _elided(self, label: str) -> str:
        return self._label_metrics.elidedText(label, Qt.TextElideMode.ElideRight, self._label_width)

    def _on_image_changed(self, image) -> None:
        self.canvas.show_image(image.preview)

    def _on_model_changed(self, model) -> None:
        self.clear(f"Running {model.title}…")

    def clear(self, text: str) -> None:
        """Forget the shown predictions (a new model, or one that failed) and say why."""
        self.predictions = ()
        self.bars.setOpts(x0=[], y=[], width=[], height=0.7)
        self.ghosts.setOpts(x0=[], y=[], width=[], height=0.7)
        self.deltas = []
        self.chart.getAxis("left").setTicks([[]])
        for item in self._value_labels:
            item.setText("")
        self.title.setText(text)

    def _on_chart_clicked(self, event) -> None:
        point = self.chart.getViewBox().mapSceneToView(event.scenePos())
        self.choose_bar(int(round(point.y())))

    def choose_bar(self, row: int) -> None:
        """Make the class of bar `row` (0 = the top-1) the session's class: Gradients and Synthesis target it."""
        if 0 <= row < len(self.predictions):
            self._session.select(class_index=self.predictions[row].index)

    def show_predictions(self, summary) -> None:
        """Draw the top-5 of a ForwardSummary."""
        model = self._session.model
        self.predictions = summary.predictions
        labels = [p.label for p in summary.predictions]
        values = [p.probability for p in summary.predictions]
        self.bars.setOpts(x0=[0] * len(values), y=list(range(len(values))), width=values, height=0.7)
        axis = self.chart.getAxis("left")
        axis.setTicks([[(i, self._elided(label)) for i, label in enumerate(labels)]])
        effect = self._session.effect
        if effect is not None and (model is None or effect.model_token != model.token):
            effect = None
        self._show_ghosts(effect, summary.predictions)
        for i, item in enumerate(self._value_labels):
            item.setText(f"{values[i]:.1%}{self.deltas[i]}" if i < len(values) else "")
            reach = max(values[i], effect.intact[i]) if i < len(values) and effect is not None else \
                values[i] if i < len(values) else 0.0     # right of the bar and of its ghost
            inside = effect is not None and reach > 0.6   # no room on the right: inside the bar, at its left
            item.setAnchor((0, 0.5))
            item.fill = pg.mkBrush(30, 30, 34, 220) if inside else pg.mkBrush(None)   # readable over the ghost's edge
            item.update()
            left = (values[i] + 0.01 if values[i] < 0.45 else 0.01) if inside else min(reach, 0.82) + 0.01
            item.setPos(left if i < len(values) else 0, i)    # inside the ghost: right of the bar itself
        name = summary.image.name
        model_title = model.title if model is not None else ""
        warning = "" if model is None or model.trained else \
            " <b style='color:#e5a50a'>untrained: random weights, predictions are meaningless</b>"
        top = f"<b>{labels[0]}</b> {values[0]:.1%}" if labels else "no output"
        self.title.setText(f"{name} — {model_title}: {top}{warning}{self._left_text(effect, summary.predictions)}")

    def _show_ghosts(self, effect, predictions) -> None:
        """The intact model's probabilities as outlines, and each bar's change in points."""
        if effect is None:
            self.ghosts.setOpts(x0=[], y=[], width=[], height=0.7)
            self.deltas = [""] * len(predictions)
            return
        intact = list(effect.intact[:len(predictions)])
        self.ghosts.setOpts(x0=[0] * len(intact), y=list(range(len(intact))), width=intact, height=0.7)
        before = {index for _label, index, _p in effect.intact_top}
        self.deltas = []
        for row, p in enumerate(predictions):
            points = effect.delta_points(row, p.probability)
            sign = "+" if points >= 0.05 else "\u2212" if points <= -0.05 else "±"
            entered = "" if p.index in before else ", new"
            self.deltas.append(f"  {sign}{abs(points):.1f} pts{entered}")

    @staticmethod
    def _left_text(effect, predictions) -> str:
        """Intact top-5 classes the knock-outs pushed out, with their probability before → after."""
        if effect is None:
            return ""
        left = effect.left_top(tuple(p.index for p in predictions))
        if not left:
            return "<br>intact model's top-5 kept (outlines: its probabilities)"
        shown = ", ".join(f"{label} {before:.1%} → {after:.1%}" for label, before, after in left)
        return f"<br>left the top-5: {shown} (outlines: the intact model)"
