"""Architecture: the model as a layered graph; click a node to select its layer everywhere."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QGraphicsPathItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.session import Selection, Session
from cnnviewer.engine.structure.architecture import (
    ArchitectureGraph,
    Layout,
    PlacedNode,
    default_collapsed,
    layout,
)
from cnnviewer.ui import file_dialogs
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.widgets.controls import on_screen
from cnnviewer.ui.widgets.interventions import ask_factor, knockout_nodes

NODE_W, NODE_H = 150.0, 34.0
X_STEP, Y_STEP = 175.0, 62.0
COLOURS = {"input": "#6c757d", "conv": "#4e79a7", "pool": "#59a14f", "norm": "#b07aa1", "activation": "#f28e2b",
           "linear": "#e15759", "merge": "#edc948", "block": "#76b7b2", "other": "#9c9c9c", "output": "#6c757d"}


class NodeItem(QGraphicsPathItem):
    """A rounded box with a label; knows the PlacedNode it draws."""

    def __init__(self, placed: PlacedNode) -> None:
        path = QPainterPath()
        path.addRoundedRect(QRectF(-NODE_W / 2, -NODE_H / 2, NODE_W, NODE_H), 7, 7)
        super().__init__(path)
        self.placed = placed
        node = placed.node
        colour = QColor(COLOURS.get(node.kind, COLOURS["other"]))
        self.setBrush(QBrush(colour.lighter(135) if node.kind != "block" else colour))
        self.setPen(QPen(colour.darker(150), 1.2))
        self.setPos(placed.x * X_STEP, placed.y * Y_STEP)
        self.setToolTip(node.tooltip())   # how to fold/open is said once, in the status line
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        # Full dotted names; long ones keep their informative end ('…denselayer1.conv1').
        title = node.label if len(node.label) <= 20 else "…" + node.label[-19:]
        sub = node.type_name if node.kind != "block" else f"{len(placed.members)} ops"
        redundant = title.lower().rstrip("_0123456789") == sub.lower()   # 'input / input', 'add_1 / add'
        lines = _short(title, 20) if redundant else f"{_short(title, 20)}\n{_short(sub, 22)}"
        text = QGraphicsSimpleTextItem(lines, self)
        font = QFont()
        font.setPointSizeF(7.5)
        text.setFont(font)
        bounds = text.boundingRect()
        text.setPos(-bounds.width() / 2, -bounds.height() / 2)

    def set_highlighted(self, on: bool) -> None:
        colour = QColor(COLOURS.get(self.placed.node.kind, COLOURS["other"]))
        self.setPen(QPen(QColor("#d62728"), 3) if on else QPen(colour.darker(150), 1.2))
        self.setZValue(2 if on else 1)


class GraphView(QGraphicsView):
    """Zoom with the wheel, pan by dragging; emits the node clicked or double-clicked."""

    node_clicked = Signal(object)
    node_double_clicked = Signal(object)
    node_menu_requested = Signal(object, object)   # NodeItem, global QPoint (right-click)

    def __init__(self, scene: QGraphicsScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setBackgroundBrush(QColor("#fbfbfb"))

    user_moved = Signal()

    def wheelEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.user_moved.emit()
        factor = 1.15 if event.angleDelta().y() > 0 else 1 / 1.15
        self.scale(factor, factor)

    def _node_at(self, event) -> NodeItem | None:
        item = self.itemAt(event.position().toPoint())
        while item is not None and not isinstance(item, NodeItem):
            item = item.parentItem()
        return item

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().mouseReleaseEvent(event)
        item = self._node_at(event)
        if item is not None and event.button() == Qt.MouseButton.LeftButton:
            self.node_clicked.emit(item)

    def contextMenuEvent(self, event) -> None:  # noqa: N802 - Qt override
        item = self.itemAt(event.pos())
        while item is not None and not isinstance(item, NodeItem):
            item = item.parentItem()
        if item is not None:
            self.node_menu_requested.emit(item, event.globalPos())

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802 - Qt override
        item = self._node_at(event)
        if item is not None:
            self.node_double_clicked.emit(item)
        else:
            super().mouseDoubleClickEvent(event)


class ArchitecturePanel(QWidget):
    """The layered graph of the current model, with search, fold/unfold, fit and export; right-click a
    node or block to knock out all its channels."""

    # layer, channels (None: all), mode, factor, over: Controller.request_knockout
    knockout_requested = Signal(str, object, str, float, str)

    def __init__(self, session: Session, jobs: UiJobs, workbench, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._workbench = session, jobs, workbench
        self.graph: ArchitectureGraph | None = None
        self.layout_result: Layout | None = None
        self.items: dict[str, NodeItem] = {}
        self._model_token: int | None = None
        self._fit_pending = False   # refit on resize until the user pans or zooms
        self.scene = QGraphicsScene(self)
        self.view = GraphView(self.scene, self)
        self.view.node_clicked.connect(self._on_node_clicked)
        self.view.node_double_clicked.connect(self._on_node_double_clicked)
        self.view.node_menu_requested.connect(lambda item, at: self.knockout_menu(item).exec(at))
        self.view.user_moved.connect(lambda: setattr(self, "_fit_pending", False))
        self.search = QLineEdit()
        self.search.setPlaceholderText("Find a layer…")
        self.search.returnPressed.connect(self.find)
        buttons = []
        self.search.setToolTip("Type part of a layer name and press Enter: it is selected in every panel")
        for text, slot, tip in (
                ("Fit", self.fit_whole, "Show the whole graph"),
                ("Open all", self.expand_all, "Open every folded block"),
                ("Fold blocks", self.fold_blocks, "Fold the model's blocks into one node each"),
                ("SVG…", self._on_export_svg, "Save the whole graph as a vector drawing"),
                ("PNG…", self._on_export_png, "Save the whole graph as a picture")):
            button = QPushButton(text)
            button.clicked.connect(slot)
            button.setToolTip(tip)
            buttons.append(button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        for button in buttons:
            top.addWidget(button)
        layout_box = QVBoxLayout(self)
        layout_box.setContentsMargins(4, 4, 4, 4)
        layout_box.addLayout(top)
        layout_box.addWidget(self.view, 1)
        layout_box.addWidget(self.legend())
        layout_box.addWidget(self.status)
        session.model_changed.connect(lambda _model: self.refresh())
        session.selection_changed.connect(self._on_selection_changed)

    @staticmethod
    def legend() -> QLabel:
        """Colour key of the node kinds."""
        names = {"conv": "conv", "pool": "pool", "norm": "norm", "activation": "activation",
                 "linear": "linear", "merge": "add / concat", "block": "folded block", "other": "other"}
        swatches = "&nbsp;&nbsp;".join(
            f"<span style='background:{QColor(COLOURS[kind]).lighter(135 if kind != 'block' else 100).name()};'>"
            f"&nbsp;&nbsp;&nbsp;&nbsp;</span>&nbsp;{text}" for kind, text in names.items())
        label = QLabel(swatches)
        label.setTextFormat(Qt.TextFormat.RichText)
        return label

    # ---------------------------------------------------------------- engine
    def refresh(self) -> None:
        """Build (once per model) and lay out the current model's graph, when the panel is shown."""
        model, workbench = self._session.model, self._workbench
        if model is None or not on_screen(self) or model.token == self._model_token:
            return
        self._model_token = model.token
        self.status.setText(f"Building the graph of {model.title}…")

        def work(_context):
            graph = workbench().architecture(model)
            return graph, layout(graph, default_collapsed(graph, limit=ArchitecturePanel.FOLDED_LIMIT))

        self._jobs.submit("architecture", work, on_done=self._on_graph_ready, on_error=self.status.setText)

    FOLDED_LIMIT = 60   # nodes: a bigger graph opens with its blocks folded (MobileNetV2: 155 -> 39)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override: build only when looked at
        super().showEvent(event)
        self.refresh()

    def relayout(self, collapsed: frozenset[str]) -> None:
        """Lay out again with other blocks folded (igraph, on the job thread)."""
        graph = self.graph
        if graph is None:
            return
        self._jobs.submit("architecture", lambda _c: (graph, layout(graph, collapsed)),
                          on_done=self._on_graph_ready, on_error=self.status.setText)

    # ---------------------------------------------------------------- drawing
    def _on_graph_ready(self, result) -> None:
        graph, placed = result
        new_model = self.graph is not graph
        self.graph, self.layout_result = graph, placed
        self.scene.clear()
        self.items = {}
        edge_pen = QPen(QColor("#8a8a8a"), 1.1)
        for polyline in placed.edges:
            path = QPainterPath(QPointF(polyline[0][0] * X_STEP, polyline[0][1] * Y_STEP + NODE_H / 2))
            for x, y in polyline[1:-1]:
                path.lineTo(x * X_STEP, y * Y_STEP)
            path.lineTo(polyline[-1][0] * X_STEP, polyline[-1][1] * Y_STEP - NODE_H / 2)
            item = self.scene.addPath(path, edge_pen)
            item.setZValue(0)
        knocked = {k.layer for k in self._session.interventions}
        for node in knockout_nodes(placed.nodes, knocked) if knocked else placed.nodes:
            item = NodeItem(node)
            item.setZValue(1)
            self.scene.addItem(item)
            self.items[node.node.id] = item
        self.scene.setSceneRect(self.scene.itemsBoundingRect().adjusted(-40, -40, 40, 40))
        folded = len(placed.collapsed)
        self.status.setText(
            f"<b>{graph.model}</b>: {len(graph.nodes)} operations, {len(graph.edges)} connections "
            f"(graph from {graph.method}). Showing {len(placed.nodes)} nodes"
            + (f", {folded} blocks folded" if folded else "")
            + ". Double-click a folded block to open it, a layer to fold its block; hover for details.")
        if new_model:
            self.search.clear()   # a search for the previous model's layer names
            self._fit_pending = True
            self.fit()
        self._on_selection_changed(self._session.selection, scroll=not new_model)

    def fit_whole(self) -> None:
        """The Fit button: the whole graph, however small its labels get."""
        self.fit(whole_always=True)

    def fit(self, whole_always: bool = False) -> None:
        """Show the whole graph; on opening, if that would make labels unreadable, fit the width
        from the input down instead (Fit then shows all of it)."""
        rect = self.scene.itemsBoundingRect()
        viewport = self.view.viewport().size()
        if rect.isEmpty() or viewport.width() < 50 or viewport.height() < 50:
            return
        whole = min(viewport.width() / rect.width(), viewport.height() / rect.height())
        scale = whole if whole >= 0.45 or whole_always else min(1.0, max(0.45, viewport.width() / rect.width()))
        self.view.resetTransform()
        self.view.scale(scale, scale)
        if scale == whole:
            self.view.centerOn(rect.center())
        else:   # start at the input, readable; scroll or zoom out for the rest
            first = next(iter(self.items.values()), None)
            x = first.pos().x() if first is not None else rect.center().x()
            self.view.centerOn(x, rect.top() + viewport.height() / (2 * scale))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override: refit until the user zooms
        super().resizeEvent(event)
        if self._fit_pending:
            self.fit()

    def expand_all(self) -> None:
        self.relayout(frozenset())

    def fold_blocks(self) -> None:
        if self.graph is not None:
            self.relayout(default_collapsed(self.graph, limit=60))

    def find(self) -> None:
        """Select the first layer whose name contains the search text."""
        text = self.search.text().strip().lower()
        for item in self.items.values():
            node = item.placed.node
            if text and text in node.label.lower():
                self.view.centerOn(item)
                if node.layer:
                    self._session.select(layer=node.layer)
                return
        self.status.setText(f"No layer matches {text!r}.")

    def _on_node_clicked(self, item: NodeItem) -> None:
        if item.placed.node.layer:
            self._session.select(layer=item.placed.node.layer)

    def knockout_menu(self, item: NodeItem) -> QMenu:
        """The right-click menu of a node: knock out all its channels (zero, or scaled)."""
        node = item.placed.node
        layer = node.layer if node.kind != "block" else node.label
        menu = QMenu(self)
        zero = menu.addAction("Knock out all its channels")
        scale = menu.addAction("Scale all its channels by…")
        names = set(self._session.model.layer_names) if self._session.model is not None else set()
        usable = bool(layer) and layer in names
        for action in (zero, scale):
            action.setEnabled(usable)
        zero.triggered.connect(lambda _c=False: self.knockout_requested.emit(layer, None, "zero", 0.0, "image"))
        scale.triggered.connect(lambda _c=False: (factor := ask_factor(self, f"every channel of {layer}")) is not None
                                and self.knockout_requested.emit(layer, None, "scale", factor, "image"))
        return menu

    def _on_node_double_clicked(self, item: NodeItem) -> None:
        node, current = item.placed.node, self.layout_result.collapsed if self.layout_result else frozenset()
        if node.kind == "block":
            self.relayout(current - {node.label})
        elif node.blocks:
            self.relayout(current | {node.blocks[-1]})

    def _on_selection_changed(self, selection: Selection, scroll: bool = True) -> None:
        """Highlight the selected layer's node (or its folded block) and scroll it into view."""
        target = None
        for node_id, item in self.items.items():
            node = item.placed.node
            layer = selection.layer
            hit = bool(layer) and (node.layer == layer or (node.layer or "").startswith(f"{layer}.")
                                   or (node.kind == "block" and layer.startswith(f"{node.label}.")))
            item.set_highlighted(hit)
            if hit:
                target = item
        if target is not None and scroll:
            self._fit_pending = False   # the user is looking at this node now: resizes keep it
            self.view.ensureVisible(target, 60, 60)

    # ---------------------------------------------------------------- export
    def _on_export_svg(self) -> None:
        path = file_dialogs.save_file(self, "Export graph as SVG", "architecture.svg", "SVG (*.svg)")
        if path:
            self.save_graph(path)

    def _on_export_png(self) -> None:
        path = file_dialogs.save_file(self, "Export graph as PNG", "architecture.png", "PNG (*.png)")
        if path:
            self.save_graph(path)

    def save_graph(self, path: str) -> bool:
        """SVG or PNG by the file's suffix; a failure is said in the status line, never silent."""
        from cnnviewer.engine.errors import CnnViewerError
        from cnnviewer.engine.media.files import atomic_output, writable_target
        if self.graph is None:
            self.status.setText("Nothing to export yet.")
            return False
        try:
            with atomic_output(writable_target(path)) as temporary:
                if path.lower().endswith(".svg"):
                    self.export_svg(str(temporary))
                    written = temporary.stat().st_size > 0
                else:
                    written = self.export_png(str(temporary))
                if not written:
                    raise CnnViewerError(f"{path}: could not be written")
        except CnnViewerError as error:
            self.status.setText(f"Not exported: {error}")
            return False
        self.status.setText(f"Saved {path}")
        return True

    def export_svg(self, path: str) -> None:
        """The whole graph as a vector drawing."""
        from PySide6.QtSvg import QSvgGenerator

        rect = self.scene.sceneRect()
        generator = QSvgGenerator()
        generator.setFileName(path)
        generator.setSize(QSize(int(rect.width()), int(rect.height())))
        generator.setViewBox(QRectF(0, 0, rect.width(), rect.height()))
        generator.setTitle(self.graph.model if self.graph else "architecture")
        painter = QPainter(generator)
        self.scene.render(painter, QRectF(0, 0, rect.width(), rect.height()), rect)
        painter.end()

    def export_png(self, path: str, max_side: int = 8000) -> bool:
        """The whole graph as a picture (scaled down if it would exceed `max_side` pixels)."""
        rect = self.scene.sceneRect()
        scale = min(1.5, max_side / max(rect.width(), rect.height(), 1))
        image = QImage(int(rect.width() * scale), int(rect.height() * scale), QImage.Format.Format_ARGB32)
        image.fill(QColor("white"))
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.scene.render(painter, QRectF(0, 0, image.width(), image.height()), rect)
        painter.end()
        return image.save(path, "PNG")


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


