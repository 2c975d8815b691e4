"""Gradients: saliency, guided backprop, DeconvNet, Grad-CAM, integrated gradients, occlusion."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from cnnviewer.engine.attribution.target import IG_BASELINES, METHODS, Target
from cnnviewer.engine.session import Session
from cnnviewer.engine.views.heatmaps import DISPLAY_MODES, render, side_by_side
from cnnviewer.ui import file_dialogs
from cnnviewer.ui.jobs import UiJobs
from cnnviewer.ui.widgets.class_picker import ClassPicker
from cnnviewer.ui.widgets.controls import ScrollingRow, labelled_row, on_screen
from cnnviewer.ui.widgets.image_canvas import ImageCanvas

ALL = "all, side by side"
RELU_FREE = ("SiLU", "GELU", "Hardswish", "Mish", "ELU")


class GradientsPanel(QWidget):
    """One gradient view (or all of them) for the current image and target."""

    def __init__(self, session: Session, jobs: UiJobs, workbench, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session, self._jobs, self._workbench = session, jobs, workbench
        self.results: list = []
        self._computing = ""           # what the running job computes, for the caption
        self._top_class: int | None = None
        self._chosen_class: int | None = None      # the session's class as this panel last followed it
        self._cam_layers_token: int | None = None   # the model whose layers the Grad-CAM box lists
        self.method = _combo([*METHODS, ALL])
        self.target_kind = _combo(["top-1 class", "chosen class", "selected channel", "selected neuron"])
        self.class_box = ClassPicker()     # Enter takes the first match; the choice is the session's class
        self.display = _combo(list(DISPLAY_MODES))
        self.display.setCurrentText("overlay")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setMaximumWidth(100)
        self.fill = _combo(["gray", "blur", "zero"])
        self.patch = _spin(0, 224, "auto", " px")
        self.stride = _spin(0, 112, "auto", " px")
        self.steps = _spin(4, 256, "", "")
        self.steps.setValue(32)
        self.baseline = _combo(list(IG_BASELINES))
        self.cam_layer = QComboBox()
        self.cam_layer.addItem(AUTO_CAM, None)
        self.cam_layer.setMinimumWidth(160)
        self.export_button = QPushButton("PNG…")
        self.export_button.clicked.connect(self._on_export_clicked)
        self.canvas = ImageCanvas(self)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setTextFormat(Qt.TextFormat.RichText)
        self._tooltips()
        row1 = labelled_row([("Method", self.method), ("Target", self.target_kind), ("", self.class_box)])
        row2 = labelled_row([("Show", self.display), ("Opacity", self.opacity), ("", self.export_button)])
        self.method_options = {   # each method's own settings, shown only for it
            "occlusion": labelled_row([("Occlusion fill", self.fill), ("Patch", self.patch),
                                       ("Stride", self.stride)], stretch=False),
            "integrated-gradients": labelled_row([("IG steps", self.steps), ("Baseline", self.baseline)],
                                                 stretch=False),
            "grad-cam": labelled_row([("Grad-CAM layer", self.cam_layer)], stretch=False),
        }
        row3 = QHBoxLayout()
        self._option_boxes: dict[str, QWidget] = {}
        for method, row in self.method_options.items():
            box = QWidget()
            row.setContentsMargins(0, 0, 12, 0)
            box.setLayout(row)
            row3.addWidget(box)
            self._option_boxes[method] = box
        row3.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addWidget(ScrollingRow(row3))   # scrolls sideways: never forces the dock column wider
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.info)
        self.method.currentTextChanged.connect(self._show_method_options)
        self._show_method_options(self.method.currentText())
        self._debounce = QTimer(self, singleShot=True, interval=80)   # sliders and typing settle first
        self._debounce.timeout.connect(self.refresh)
        for combo in (self.method, self.target_kind, self.fill, self.baseline, self.cam_layer):
            combo.currentIndexChanged.connect(self._debounce.start)
        self.class_box.chosen.connect(self._on_class_chosen)
        for spin in (self.patch, self.stride, self.steps):
            spin.valueChanged.connect(self._debounce.start)
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
                         "Grad-CAM weighs a layer's maps by their gradient; integrated gradients sum gradients "
                         "along a path from a baseline; occlusion measures the score drop under a sliding patch",
            self.target_kind: "What the gradient is taken of: a class score, or the selected layer's channel "
                              "(summed) or single neuron (select them in Feature maps or Receptive field)",
            self.class_box: "Type to search the class names; a clicked prediction bar chooses its class",
            self.display: "heat: |attribution| as a heat map; signed: red positive, blue negative; overlay: "
                          "heat over the input; rgb: the raw 3-channel gradient",
            self.opacity: "How strongly the overlay covers the input",
            self.fill: "What hides the input under the occluding patch",
            self.patch: "Side of the occluding square (auto: the target neuron's receptive field, else 1/7 "
                        "of the input)",
            self.stride: "Step between patch positions; 1 is finest and slowest (auto: half the patch)",
            self.steps: "Points along the path from baseline to input (Gauss-Legendre); more is more exact",
            self.baseline: "Where the path starts: the dataset's mean colour (zeros after normalising), black, "
                           "or the input blurred",
            self.cam_layer: "The layer whose maps Grad-CAM weighs (auto: the target's layer when it has maps, "
                            "else the last layer with spatial maps before global pooling)",
            self.export_button: "Save the picture shown as PNG",
        }
        for widget, text in tips.items():
            widget.setToolTip(text)

    def _show_method_options(self, method: str) -> None:
        for name, box in self._option_boxes.items():
            box.setVisible(method in (name, ALL))

    def _fill_cam_layers(self, layers) -> None:
        """Layers with spatial maps, in depth order, for Grad-CAM's layer box."""
        current = self.cam_layer.currentData()
        self.cam_layer.blockSignals(True)
        while self.cam_layer.count() > 1:
            self.cam_layer.removeItem(1)
        self.cam_layer.setItemText(0, AUTO_CAM)      # the last model's resolved layer no longer applies
        for info in layers:
            shape = info.output_shape
            if info.name and shape is not None and len(shape) == 3 and shape[1] > 1 and shape[2] > 1:
                self.cam_layer.addItem(f"{info.name} ({shape[0]}×{shape[1]}×{shape[2]})", info.name)
        index = self.cam_layer.findData(current)
        self.cam_layer.setCurrentIndex(max(index, 0))
        self.cam_layer.blockSignals(False)

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
        self._chosen_class = selection.class_index
        if new_class and selection.class_index is not None and selection.class_index < self.class_box.count():
            self.class_box.show_class(selection.class_index)    # chosen here, in Synthesis, a bar, a detection
            self._choose_class()
        elif self.target_kind.currentText() in ("selected channel", "selected neuron"):
            self._debounce.start()

    def show_forward(self, summary) -> None:
        """The model ran on the image: top-1 known, views can be computed."""
        if self._cam_layers_token != summary.model_token:
            self._cam_layers_token = summary.model_token
            self._fill_cam_layers(summary.layers)
        self._top_class = summary.predictions[0].index if summary.predictions else None
        if self._top_class is not None and self.target_kind.currentText() == "top-1 class":
            self.class_box.blockSignals(True)
            self.class_box.setCurrentIndex(self._top_class)
            self.class_box.blockSignals(False)
        self._debounce.start()

    def target(self) -> Target | None:
        """The target from the controls and the shared selection; None when it is incomplete."""
        kind, selection = self.target_kind.currentText(), self._session.selection
        if kind == "top-1 class":
            return None if self._top_class is None else Target(class_index=self._top_class)
        if kind == "chosen class":
            text = self.class_box.currentText().split(":", 1)[0].strip()
            return Target(class_index=int(text)) if text.isdigit() else None
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
        chosen = {"occlusion": {"fill": self.fill.currentText(), "patch": self.patch.value() or None,
                                "stride": self.stride.value() or None},
                  "integrated-gradients": {"steps": self.steps.value(), "baseline": self.baseline.currentText()},
                  "grad-cam": {"layer": self.cam_layer.currentData()}}

        def work(context):
            results = []
            for method in methods:
                options = {k: v for k, v in chosen.get(method, {}).items() if v is not None}   # None: auto
                results.append(workbench().gradient(model, image, method, target, context, **options))
            return results

        self.results = []            # the last view belongs to other settings: never shown as this one
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
        self.info.setText(f"<b>{self.describe(results[0].target)}</b>: " + "; ".join(parts) + "." + note)

    def _part(self, result) -> str:
        """'saliency 12 ms' or 'grad-cam at layer features.8.2 (auto) 80 ms': Grad-CAM's layer sets the
        map's detail, so the automatic choice is named here and in the layer box."""
        options = dict(result.options)
        where = ""
        if result.method == "grad-cam" and "layer" in options:
            layer = options.pop("layer")
            auto = self.cam_layer.currentData() is None
            where = f" at layer {layer}" + (" (auto)" if auto else "")
            if auto:
                self.cam_layer.setItemText(0, f"auto: {layer}")
        return f"{result.method}{where} {result.milliseconds:.0f} ms" + (f" ({_options(options)})" if options else "")

    def describe(self, target: Target) -> str:
        """The target in words: a class by its number and name."""
        model = self._session.model
        if target.class_index is not None and model is not None and 0 <= target.class_index < len(model.categories):
            return f"class {target.class_index} ({model.categories[target.class_index]})"
        return target.describe()

    def redraw(self) -> None:
        """Draw the results with the current display mode (no recomputation)."""
        if not self.results:
            return
        mode, opacity = self.display.currentText(), self.opacity.value() / 100
        pictures = [render(r.attribution, mode, r.display, opacity) for r in self.results]
        if len(pictures) == 1:
            self.canvas.show_image(pictures[0], keep_view=True)
            return
        grid = side_by_side(pictures, [r.method for r in self.results], mode)
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


AUTO_CAM = "auto (target's layer, else the last map before pooling)"


def _options(options: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in options.items())


def _spin(low: int, high: int, special: str, suffix: str) -> QSpinBox:
    """A spin box whose lowest value reads `special` (e.g. 'auto') when given."""
    spin = QSpinBox()
    spin.setRange(low, high)
    if special:
        spin.setSpecialValueText(special)
    spin.setSuffix(suffix)
    return spin


def _combo(items: list[str]) -> QComboBox:
    combo = QComboBox()
    combo.addItems(items)
    return combo
