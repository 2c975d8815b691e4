"""Each gradient method's own settings, shown only while that method (or "all") is chosen.

Kept apart from the Gradients panel: twelve methods have nine settings between them, and the
panel itself is about targets, drawing and scores.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QSpinBox, QWidget

from cnnviewer.engine.attribution.target import CAM_METHODS, IG_BASELINES, SMOOTHABLE
from cnnviewer.engine.segmentation.class_map_view import class_map_size
from cnnviewer.ui.widgets.controls import labelled_row

ALL = "all, side by side"
AUTO_CAM = "auto (target's layer, else the last map before pooling)"
OPTION_TIPS = {
    "fill": "What hides the input under the occluding patch",
    "patch": "Side of the occluding square (auto: the target neuron's receptive field, else 1/7 of the input)",
    "stride": "Step between patch positions; 1 is finest and slowest (auto: half the patch)",
    "steps": "Points along the path from baseline to input (Gauss-Legendre); more is more exact",
    "baseline": "Where the path starts: the dataset's mean colour (zeros after normalising), black, or the input "
                "blurred",
    "cam_layer": "The layer whose maps the CAM methods weigh (auto: the target's layer when it has maps, else the "
                 "last layer with spatial maps before global pooling)",
    "smooth_base": "SmoothGrad averages this method's map over noisy copies of the input (Smilkov et al. 2017)",
    "noise": "The noise's standard deviation as a share of the input's value range (the paper: 10-20 %)",
    "samples": "How many noisy copies are averaged; more is smoother and slower",
}


class MethodOptions(QWidget):
    """The settings row: occlusion, integrated gradients, the CAM layer, SmoothGrad."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.fill = combo(["gray", "blur", "zero"])
        self.patch = spin(0, 224, "auto", " px")
        self.stride = spin(0, 112, "auto", " px")
        self.steps = spin(4, 256, "", "")
        self.steps.setValue(32)
        self.baseline = combo(list(IG_BASELINES))
        self.cam_layer = QComboBox()
        self.cam_layer.addItem(AUTO_CAM, None)
        self.cam_layer.setMinimumWidth(160)
        self.smooth_base = combo(list(SMOOTHABLE))
        self.noise = QDoubleSpinBox()
        self.noise.setRange(1, 50)
        self.noise.setDecimals(0)
        self.noise.setValue(15)
        self.noise.setSuffix(" %")
        self.samples = spin(2, 200, "", "")
        self.samples.setValue(25)
        for name, tip in OPTION_TIPS.items():
            getattr(self, name).setToolTip(tip)
        rows = {
            "occlusion": [("Occlusion fill", self.fill), ("Patch", self.patch), ("Stride", self.stride)],
            "integrated-gradients": [("IG steps", self.steps), ("Baseline", self.baseline)],
            "cam": [("CAM layer", self.cam_layer)],
            "smoothgrad": [("SmoothGrad of", self.smooth_base), ("Noise", self.noise), ("Samples", self.samples)],
        }
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.boxes: dict[str, QWidget] = {}
        for name, pairs in rows.items():
            box = QWidget()
            row = labelled_row(pairs, stretch=False)
            row.setContentsMargins(0, 0, 12, 0)
            box.setLayout(row)
            layout.addWidget(box)
            self.boxes[name] = box
        layout.addStretch(1)
        for widget in (self.fill, self.baseline, self.cam_layer, self.smooth_base):
            widget.currentIndexChanged.connect(self.changed)
        for widget in (self.patch, self.stride, self.steps, self.noise, self.samples):
            widget.valueChanged.connect(self.changed)
        self.smooth_base.currentIndexChanged.connect(lambda _i: self.show_for(self._method))
        self._method = ""

    def show_for(self, method: str) -> None:
        """Only the chosen method's settings (every one for "all"; IG's steps also for SmoothGrad of IG)."""
        self._method = method
        smoothing_ig = method in ("smoothgrad", ALL) and self.smooth_base.currentText() == "integrated-gradients"
        wanted = {"occlusion": method in ("occlusion", ALL),
                  "integrated-gradients": method in ("integrated-gradients", ALL) or smoothing_ig,
                  "cam": method in (*CAM_METHODS, ALL), "smoothgrad": method in ("smoothgrad", ALL)}
        for name, box in self.boxes.items():
            box.setVisible(wanted[name])

    def chosen(self) -> dict[str, dict]:
        """Each method's options as Workbench.gradient takes them; None means automatic."""
        ig = {"steps": self.steps.value(), "baseline": self.baseline.currentText()}
        smooth = {"base": self.smooth_base.currentText(), "noise": self.noise.value() / 100,
                  "samples": self.samples.value()}
        if smooth["base"] == "integrated-gradients":
            smooth.update(ig)
        options = {"occlusion": {"fill": self.fill.currentText(), "patch": self.patch.value() or None,
                                 "stride": self.stride.value() or None},
                   "integrated-gradients": ig, "smoothgrad": smooth}
        for method in CAM_METHODS:
            options[method] = {"layer": self.cam_layer.currentData()}
        return options

    def fill_cam_layers(self, layers) -> None:
        """Layers with spatial maps, in depth order, for the CAM layer box."""
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


def spin(low: int, high: int, special: str, suffix: str) -> QSpinBox:
    """A spin box whose lowest value reads `special` (e.g. 'auto') when given."""
    box = QSpinBox()
    box.setRange(low, high)
    if special:
        box.setSpecialValueText(special)
    box.setSuffix(suffix)
    return box


def combo(items: list[str]) -> QComboBox:
    box = QComboBox()
    box.addItems(items)
    return box


def class_map_output(forward) -> tuple[int, int] | None:
    """(h, w) of the model's class map when its output is one, (K, h, w) unbatched, from the recorded
    pass's root row (''), else None: only then does a region (Selection.region) mean anything."""
    return None if forward is None else class_map_size(forward.layers)


def region_words(target, forward) -> str:
    """What part of the output a class target explains, for titles: its region, or the whole map
    for a class-map model; '' for a classifier (one score, nothing to say)."""
    if target.class_index is None or target.layer is not None:
        return ""
    shape = class_map_output(forward)
    if target.box is not None and shape is not None:   # a click: one position of the map, said as such
        from cnnviewer.engine.attribution.target import box_positions
        y0, x0, y1, x1 = box_positions(target.box, *shape)
        if (y1 - y0, x1 - x0) == (1, 1):
            return f" at one position of the {shape[0]}×{shape[1]} class map (row {y0}, column {x0})"
    if target.region is not None or target.box is not None:
        return target.where()
    return f" over the whole {shape[0]}×{shape[1]} class map" if shape is not None else ""
