"""Gradients: saliency, guided backprop, DeconvNet, Grad-CAM, integrated gradients, occlusion."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.attribution.target import CAM_METHODS, METHODS, Target
from cnnviewer.engine.session import Session
from cnnviewer.engine.views.heatmaps import DISPLAY_MODES, render, side_by_side
from cnnviewer.ui import file_dialogs
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.widgets.class_picker import ClassPicker
from cnnviewer.ui.widgets.controls import ScrollingRow, labelled_row, on_screen
from cnnviewer.ui.panels.gradient_options import ALL, MethodOptions, class_map_output, combo, region_words
from cnnviewer.ui.widgets.image_canvas import ImageCanvas

RELU_FREE = ("SiLU", "GELU", "Hardswish", "Mish", "ELU")


class GradientsPanel(QWidget):
    """One gradient view (or all of them) for the current image and target."""

    def __init__(self, session: Session, jobs: UiJobs, workbench, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._workbench = session, jobs, workbench
        self.results: list = []
        self._computing = ""           # what the running job computes, for the caption
        self._caption = ""             # the maps' caption, before their scores
        self._debounce = QTimer(self, singleShot=True, interval=80)   # sliders and typing settle first
        self._debounce.timeout.connect(self.refresh)
        self._top_class: int | None = None
        self._chosen_class: int | None = None      # the session's class as this panel last followed it
        self._region: tuple | None = None          # the session's region as this panel last followed it
        self._cam_layers_token: int | None = None   # the model whose layers the Grad-CAM box lists
        self.method = combo([*METHODS, ALL])
        self.target_kind = combo(["top-1 class", "chosen class", "selected channel", "selected neuron"])
        self.class_box = ClassPicker()     # Enter takes the first match; the choice is the session's class
        self.display = combo(list(DISPLAY_MODES))
        self.display.setCurrentText("overlay")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setMaximumWidth(100)
        self.options = MethodOptions()
        self.options.changed.connect(lambda: self._debounce.start())
        opt = self.options        # the settings as attributes, for tests and scripts
        self.fill, self.patch, self.stride, self.steps, self.baseline = opt.fill, opt.patch, opt.stride, opt.steps, \
            opt.baseline
        self.cam_layer, self.smooth_base, self.noise, self.samples = opt.cam_layer, opt.smooth_base, opt.noise, \
            opt.samples
        self._option_boxes = {**opt.boxes, **{m: opt.boxes["cam"] for m in CAM_METHODS}}
        self.scores_box = QCheckBox("Faithfulness")
        self.scores_box.setChecked(True)
        self.scores_box.toggled.connect(self._on_scores_toggled)
        self.scores: dict[str, object] = {}     # method -> Faithfulness of the maps shown
        self.export_button = QPushButton("PNG…")
        self.export_button.clicked.connect(self._on_export_clicked)
        self.canvas = ImageCanvas(self)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setTextFormat(Qt.TextFormat.RichText)
        self._tooltips()
        row1 = labelled_row([("Method", self.method), ("Target", self.target_kind), ("", self.class_box)])
        row2 = labelled_row([("Show", self.display), ("Opacity", self.opacity), ("", self.scores_box),
                             ("", self.export_button)])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addWidget(ScrollingRow(wrap(self.options)))   # scrolls sideways: never forces the dock wider
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.info)
        self.method.currentTextChanged.connect(self.options.show_for)
        self.options.show_for(self.method.currentText())
        for box in (self.method, self.target_kind):
            box.currentIndexChanged.connect(self._debounce.start)
        self.class_box.chosen.connect(self._on_class_chosen)
        self.display.currentIndexChanged.connect(self.redraw)
        self.opacity.valueChanged.connect(self.redraw)
        session.model_changed.connect(self._on_model_changed)
        session.forward_changed.connect(self.show_forward)
        jobs.cancelled.connect(self._on_job_cancelled)
        session.image_changed.connect(lambda _image: self._debounce.start())
        session.selection_changed.connect(self._on_selection_changed)

    # ---------------------------------------------------------------- intent
    def _tooltips(self) -> None:
        tips = {
            self.method: "Saliency |∂score/∂x|; guided backprop and DeconvNet change the ReLU backward rule; "
                         "Grad-CAM weighs a layer's maps by their gradient (Grad-CAM++ and LayerCAM weigh them "
                         "per pixel, Score-CAM by the score each map alone keeps, Eigen-CAM is their first "
                         "principal component, whatever the class); integrated gradients sum gradients along a "
                         "path from a baseline; input × gradient; SmoothGrad averages a method over noisy copies; "
                         "occlusion measures the score drop under a sliding patch",
            self.target_kind: "What the gradient is taken of: a class score, or the selected layer's channel "
                              "(summed) or single neuron (select them in Feature maps or Receptive field)",
            self.class_box: "Type to search the class names; a clicked prediction bar chooses its class",
            self.display: "heat: |attribution| as a heat map; signed: red positive, blue negative; overlay: "
                          "heat over the input; rgb: the raw 3-channel gradient",
            self.opacity: "How strongly the overlay covers the input",
            self.scores_box: "Score each map by how much the prediction depends on the pixels it ranks first: "
                             "deletion AUC (p(class) as those pixels are removed; lower is better) and insertion "
                             "AUC (as they are restored onto a blurred copy; higher is better), Petsiuk et al. 2018",
            self.export_button: "Save the picture shown as PNG",
        }
        for widget, text in tips.items():
            widget.setToolTip(text)

    def _on_model_changed(self, model) -> None:
        self._cam_layers_token = None
        self.class_box.set_classes(model.categories)
        if self.target_kind.currentText() == "chosen class":   # a class of the previous model means nothing here
            self.target_kind.blockSignals(True)
            self.target_kind.setCurrentText("top-1 class")
            self.target_kind.blockSignals(False)

    def _on_class_chosen(self, index: int) -> None:
        """Typed or picked here: it becomes the session's class (Synthesis targets it too)."""
        self._session.select(class_index=index)
        self._choose_class()

    def _choose_class(self) -> None:
        self.target_kind.setCurrentText("chosen class")
        self._debounce.start()

    def _on_selection_changed(self, selection) -> None:
        new_class = selection.class_index != self._chosen_class
        new_region = selection.region != self._region
        self._chosen_class, self._region = selection.class_index, selection.region
        if new_class and selection.class_index is not None and selection.class_index < self.class_box.count():
            self.class_box.show_class(selection.class_index)    # chosen here, in Synthesis, a bar, a detection
            self._choose_class()
        elif self.target_kind.currentText() in ("selected channel", "selected neuron") or \
                (new_region and self.target_kind.currentText() in ("top-1 class", "chosen class")):
            self._debounce.start()

    def show_forward(self, summary) -> None:
        """The model ran on the image: top-1 known, views can be computed."""
        if self._cam_layers_token != summary.model_token:
            self._cam_layers_token = summary.model_token
            self.options.fill_cam_layers(summary.layers)
        self._top_class = summary.predictions[0].index if summary.predictions else None
        if self._top_class is not None and self.target_kind.currentText() == "top-1 class":
            self.class_box.blockSignals(True)
            self.class_box.setCurrentIndex(self._top_class)
            self.class_box.blockSignals(False)
        self._debounce.start()

    def target(self) -> Target | None:
        """The target from the controls and the shared selection; None when it is incomplete.

        A class of a class-map model is explained over the session's region (Selection.region: a
        clicked pixel, a dragged box, a legend class), else over the whole map (Seg-Grad-CAM)."""
        kind, selection = self.target_kind.currentText(), self._session.selection
        box = selection.region if class_map_output(self._session.forward) is not None else None
        if kind == "top-1 class":
            return None if self._top_class is None else Target(class_index=self._top_class, box=box)
        if kind == "chosen class":
            text = self.class_box.currentText().split(":", 1)[0].strip()
            return Target(class_index=int(text), box=box) if text.isdigit() else None
        if not selection.layer:
            return None
        neuron = selection.neuron if kind == "selected neuron" else None
        if kind == "selected neuron" and neuron is None:
            return None
        return Target(layer=selection.layer, channel=selection.channel or 0, neuron=neuron)

    # ---------------------------------------------------------------- engine
    def refresh(self) -> None:
        """Compute the chosen view(s) on the job thread; occlusion and IG report progress."""
        session, workbench = self._session, self._workbench
        model, image, target = session.model, session.image, self.target()
        if self._session.forward is None or model is None or image is None or not on_screen(self):
            return
        if target is None:
            self.info.setText("Choose a target: a class, or select a layer/channel (and a neuron) in another panel.")
            return
        methods = list(METHODS) if self.method.currentText() == ALL else [self.method.currentText()]
        chosen = self.options.chosen()

        def work(context):
            results = []
            for method in methods:
                options = {k: v for k, v in chosen.get(method, {}).items() if v is not None}   # None: auto
                results.append(workbench().gradient(model, image, method, target, context, **options))
            return results

        self.results, self.scores = [], {}   # the last view belongs to other settings: never shown as this one
        self._jobs.cancel("gradient-scores")
        self.canvas.clear()
        self._computing = f"{', '.join(methods)} of {self.describe(target)}"
        self.info.setText(f"Computing {self._computing}…")
        self._jobs.submit("gradients", work, on_done=self._on_results, on_error=self.info.setText,
                          label=f"Computing {', '.join(methods)}")

    def _on_job_cancelled(self, key: str) -> None:
        if key == "gradients" and not self.results:
            self.canvas.clear()
            self.info.setText(f"Cancelled: {self._computing}. Change a setting (or the target) to compute again.")

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override: compute only when looked at
        super().showEvent(event)
        self._debounce.start()

    # ---------------------------------------------------------------- drawing
    def _on_results(self, results) -> None:
        self.results = results
        self.redraw()
        self._score(results)
        model = self._session.model
        parts = [self._part(r) for r in results]
        note = ""
        if model is not None and any(r.method in ("guided-backprop", "deconvnet") for r in results):
            others = sorted({name for name in RELU_FREE if any(t.endswith(name) for t in model.layer_types)})
            if others:
                note = (f" Guided backprop and DeconvNet change only ReLU/ReLU6; {', '.join(others)} "
                        "keep their ordinary gradient.")
        if model is not None and any(r.method == "deconvnet" for r in results) \
                and not any("MaxPool" in t for t in model.layer_types):
            note += (" This network has no max pooling: DeconvNet's backward pass depends on the input only "
                     "through max-pooling switches, so here its map barely changes with the image.")
        self._caption = f"<b>{self.describe(results[0].target)}</b>: " + "; ".join(parts) + "." + note
        self.info.setText(self._caption + self._scores_caption())

    # ---------------------------------------------------------------- faithfulness
    def _on_scores_toggled(self, on: bool) -> None:
        if on:
            self._score(self.results)
        else:
            self._jobs.cancel("gradient-scores")
            self.scores = {}
            self.redraw()
            if self.results:
                self.info.setText(self._caption)

    def _score(self, results) -> None:
        """Deletion and insertion AUC of each map shown, on the job thread after the maps (Petsiuk et al.)."""
        if not results or not self.scores_box.isChecked():
            return
        workbench, model, image = self._workbench, self._session.model, self._session.image

        def work(context):
            from cnnviewer.engine.attribution.faithfulness import evaluate_result
            scores = {}
            for number, result in enumerate(results):
                part = context.part(number, len(results), f"scoring {result.method}")
                scores[result.method] = evaluate_result(workbench(), model, image, result,
                                                        metrics=("deletion", "insertion"), context=part)
            return scores

        def done(scores) -> None:
            if results is self.results:
                self.scores = scores
                self.redraw()
                self.info.setText(self._caption + self._scores_caption())

        self._jobs.submit("gradient-scores", work, on_done=done, label="Scoring the maps' faithfulness")

    def _scores_caption(self) -> str:
        if not self.scores:
            return ""
        if len(self.scores) == 1:
            return "<br>" + next(iter(self.scores.values())).caption()
        return ("<br>Under each map: deletion AUC (lower is better) / insertion AUC (higher is better); "
                "the Faithfulness panel draws the curves.")

    def _part(self, result) -> str:
        """'saliency 12 ms' or 'grad-cam at layer features.8.2 (auto) 80 ms': Grad-CAM's layer sets the
        map's detail, so the automatic choice is named here and in the layer box."""
        options = dict(result.options)
        where = ""
        if result.method in CAM_METHODS and "layer" in options:
            layer = options.pop("layer")
            auto = self.cam_layer.currentData() is None
            where = f" at layer {layer}" + (" (auto)" if auto else "")
            if auto:
                self.cam_layer.setItemText(0, f"auto: {layer}")
        return f"{result.method}{where} {result.milliseconds:.0f} ms" + (f" ({_options(options)})" if options else "")

    def describe(self, target: Target) -> str:
        """The target in words: a class by its number and name, and the part of a class map explained."""
        model = self._session.model
        if target.class_index is not None and model is not None and 0 <= target.class_index < len(model.categories):
            return (f"class {target.class_index} ({model.categories[target.class_index]})"
                    + region_words(target, self._session.forward))
        return target.describe()

    def redraw(self) -> None:
        """Draw the results with the current display mode (no recomputation)."""
        if not self.results:
            return
        mode, opacity = self.display.currentText(), self.opacity.value() / 100
        pictures = [render(r.attribution, mode, r.display, opacity) for r in self.results]
        self.canvas.unmark()
        if len(pictures) == 1:
            self.canvas.show_image(pictures[0], keep_view=True)
            box = self.results[0].target.box
            if box is not None:   # the region explained, outlined where the map is drawn
                height, width = pictures[0].shape[:2]
                top, left = box[0] * height, box[1] * width
                self.canvas.mark(round(top), round(left), max(1, round((box[2] - box[0]) * height) - 1),
                                 max(1, round((box[3] - box[1]) * width) - 1))
            return
        titles = [_title(r.method, self.scores.get(r.method)) for r in self.results]
        grid = side_by_side(pictures, titles, mode, columns=4 if len(pictures) > 9 else 3)   # docks are wide
        self.canvas.show_image(grid, keep_view=True)

    def _on_export_clicked(self) -> None:
        path = file_dialogs.save_file(self, "Export gradient view", "gradients.png", "PNG (*.png)")
        if path:
            self.export_png(path)

    def export_png(self, path: str) -> bool:
        """Save the picture shown; a failure is said in the caption, never raised in the slot."""
        from PIL import Image

        from cnnviewer.engine.errors import CnnViewerError
        from cnnviewer.engine.media.files import atomic_output, writable_target
        image = self.canvas.image_item.image
        if image is None:
            self.info.setText("Nothing to export yet.")
            return False
        try:
            with atomic_output(writable_target(path)) as temporary:
                Image.fromarray(np.ascontiguousarray(image)).save(temporary, format="PNG")
        except (CnnViewerError, OSError) as error:
            self.info.setText(f"Not exported: {error}")
            return False
        self.info.setText(f"Saved {path}")
        return True


def _options(options: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in options.items())


def _title(method: str, scores) -> str:
    """A tile's title: the method, and its deletion / insertion AUC once scored."""
    if scores is None or "deletion" not in scores.scores:
        return method
    return f"{method}  del {scores.scores['deletion']:.2f} ins {scores.scores['insertion']:.2f}"


def wrap(widget: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(widget)
    return row
