"""The Synthesis panel's parameters: one form per method, each field with a tooltip; the pixel
method's presets fill in Yosinski et al. 2015's Table 1 (the user may then change any field)."""

from __future__ import annotations

from dataclasses import fields, replace

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QAbstractSpinBox,
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QStackedWidget,
    QSizePolicy,
    QWidget,
)

from cnnviewer.engine.synthesis.settings import (
    FACETS,
    PRESETS,
    STYLE_BACKBONES,
    DreamSettings,
    FourierSettings,
    StyleSettings,
)

METHODS = (("ascent", "Gradient ascent (pixels)"), ("fourier", "Gradient ascent (Fourier)"),
           ("facets", "Multi-faceted (Dataset folder)"), ("deepdream", "DeepDream"), ("style", "Style transfer"))
DEFAULTS = {"ascent": PRESETS[3], "facets": FACETS, "fourier": FourierSettings(), "deepdream": DreamSettings(),
            "style": StyleSettings()}
CHOICES = {"optimizer": ("lbfgs", "adam"), "init": ("content", "noise"), "backbone": STYLE_BACKBONES}
EXTRAS = {"facets": (("facets", 4, 1, 10, "How many facets: k-means clusters of the unit's top images"),
                     ("top", 150, 2, 10000, "How many of the unit's top images of the folder are clustered"),
                     ("nearest", 15, 1, 1000, "Each facet starts from the mean of this many images nearest "
                                              "its cluster's centre"))}
TIPS = {
    "steps": "How many steps in all (DeepDream: per octave); Continue after raising it goes on",
    "lr": "Step size (pixels: applied to the gradient w.r.t. the network's input, as in the paper)",
    "decay": "L2 decay: x ← (1 − decay)·x every step", "blur_radius": "Gaussian blur sigma (pixels)",
    "blur_every": "Blur every N steps (0: never)",
    "small_norm_percentile": "Zero the pixels whose colour norm is below this percentile, every step",
    "small_benefit_percentile": "Zero the pixels whose |contribution| (x · gradient) is below this percentile",
    "jitter": "Roll the image by up to this many pixels for each step",
    "size": "Image side in pixels", "seed": "The run's own random generator: the same seed, the same image",
    "transforms": "Pad, jitter, scale and rotate at random each step (Lucid's standard transforms)",
    "octaves": "How many scales, smallest first", "octave_scale": "Size ratio between octaves",
    "step_size": "Step, divided by the mean |gradient|",
    "optimizer": "L-BFGS (the paper's; one function evaluation per step) or Adam",
    "content_weight": "α: weight of the content loss ½Σ(F(x) − F(content))²",
    "style_weight": "β: weight of the style loss (Gram matrices); auto: 1e3 for VGG (α/β = 1e-3 as the paper), "
                    "1.5e6 for the model's own layers (its first three resolutions)",
    "tv_weight": "Total variation (sum of squared neighbour differences): smooths pixel noise; 0: off. Pixel "
                 "ascent: stable below 1/(16·lr), e.g. 6e-4 at lr 100", "lbfgs_lr": "L-BFGS step length",
    "adam_lr": "Adam step (the image is in 0…1)",
    "init": "Start from the content image, or from white noise (the paper's)",
    "backbone": "Whose features: auto takes a VGG whose ImageNet weights are on disk, else the current model",
    "content_layer": "Layer whose maps are kept (empty: relu4_2 for VGG, else chosen from the model)",
    "style_layers": "Comma-separated layers whose Gram matrices are matched (empty: relu1_1…relu5_1 for VGG, "
                    "else the first activation at each resolution)",
    "average_pooling": "VGG: average instead of max pooling, as the paper (the model itself is not changed)",
}
SKIP = {"lr_policy", "max_lr", "desired_progress", "spectrum_sd", "decay_power"}


class SettingsForm(QStackedWidget):
    """Fields for every method's settings; `settings(method)` reads them back as the dataclass."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.editors: dict[str, dict[str, QWidget]] = {}
        self.pages: dict[str, QWidget] = {}
        self.preset = QComboBox()
        for number in PRESETS:
            self.preset.addItem(f"Table 1, setting {number}", number)
        self.preset.addItem("custom", None)     # shown once a field differs from the chosen preset
        self.preset.setCurrentIndex(2)
        self._wheel_guard = WheelGuard(self)
        self.preset.installEventFilter(self._wheel_guard)
        self.preset.setToolTip("Yosinski et al. 2015, Table 1: four regularizer settings (3: decay 1e-4, "
                               "blur 1.0 every 4 steps, lr 100, 1000 steps; the one most of the paper's images use)")
        self.preset.currentIndexChanged.connect(self._on_preset)
        for method, _text in METHODS:
            page = QWidget()
            form = QFormLayout(page)
            form.setContentsMargins(0, 0, 0, 0)
            if method == "ascent":
                form.addRow("Preset", self.preset)
            self.editors[method] = {}
            self.extras: dict[str, QSpinBox] = getattr(self, "extras", {})
            for name, value, low, high, tip in EXTRAS.get(method, ()):
                spin = QSpinBox()
                spin.setRange(low, high)
                spin.setValue(value)
                spin.setToolTip(tip)
                self._guard(spin)
                self.extras[name] = spin
                form.addRow(name, spin)
            for field in fields(DEFAULTS[method]):
                if field.name in SKIP:
                    continue
                editor = self._editor(field.name, getattr(DEFAULTS[method], field.name))
                editor.setToolTip(TIPS.get(field.name, ""))
                self._guard(editor)
                if method == "ascent":
                    _changed(editor).connect(self._mark_custom)
                self.editors[method][field.name] = editor
                form.addRow(field.name.replace("_", " "), editor)
            self.pages[method] = page
            self.addWidget(page)
        self._preset_values, self._preset_number = PRESETS[3], 3

    def _guard(self, editor: QWidget) -> None:
        """The wheel scrolls the form, not a field under the pointer, unless that field has focus."""
        if isinstance(editor, (QAbstractSpinBox, QComboBox)):
            editor.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            editor.installEventFilter(self._wheel_guard)

    def _on_preset(self, _index: int) -> None:
        number = self.preset.currentData()
        if number is not None:
            self._fill("ascent", PRESETS[number])

    def _mark_custom(self, *_args) -> None:
        """A field no longer matches the preset: the Preset box says "custom" (and back, if it matches again)."""
        number = self.preset.currentData() if self.preset.currentData() is not None else self._preset_number
        matches = all(_value(editor) == getattr(PRESETS[number], name)
                      for name, editor in self.editors["ascent"].items())
        self.preset.blockSignals(True)
        self.preset.setCurrentIndex(self.preset.findData(number) if matches else self.preset.count() - 1)
        self.preset.blockSignals(False)

    @staticmethod
    def _editor(name: str, value) -> QWidget:
        if name in CHOICES:
            combo = QComboBox()
            combo.addItems(list(CHOICES[name]))
            combo.setCurrentText(value)
            return combo
        if isinstance(value, str):
            line = QLineEdit(value)
            line.setPlaceholderText("automatic")
            return line
        if isinstance(value, bool):
            box = QCheckBox()
            box.setChecked(value)
            return box
        if isinstance(value, int):
            spin = QSpinBox()
            spin.setRange(0, 100000)
            spin.setValue(value)
            return spin
        spin = QDoubleSpinBox()
        spin.setDecimals({"decay": 5, "tv_weight": 6}.get(name, 3))
        spin.setRange(0.0, 1e12)
        if name == "style_weight":
            spin.setSpecialValueText("auto")
        spin.setSingleStep({"decay": 0.0001, "tv_weight": 0.0001}.get(name, 0.1))
        spin.setValue(value)
        return spin

    def _fill(self, method: str, values) -> None:
        self._preset_values = values
        self._preset_number = next(n for n, p in PRESETS.items() if p == values)
        for name, editor in self.editors[method].items():
            value = getattr(values, name)
            if isinstance(editor, QCheckBox):
                editor.setChecked(bool(value))
            elif isinstance(editor, QComboBox):
                editor.setCurrentText(value)
            elif isinstance(editor, QLineEdit):
                editor.setText(value)
            else:
                editor.setValue(value)

    def show_method(self, method: str) -> None:
        """Show `method`'s fields; the other pages take no room (the stack is as tall as this page)."""
        for name, page in self.pages.items():
            policy = QSizePolicy.Policy.Preferred if name == method else QSizePolicy.Policy.Ignored
            page.setSizePolicy(policy, policy)
        self.setCurrentWidget(self.pages[method])
        self.adjustSize()

    def settings(self, method: str, size: int):
        """The dataclass of `method` from the fields (the preset's learning-rate policy kept)."""
        base = self._preset_values if method == "ascent" else DEFAULTS[method]
        values = {}
        for name, editor in self.editors[method].items():
            values[name] = _value(editor)
        if "size" in values and not values["size"]:
            values["size"] = size
        return replace(base, **values)



class WheelGuard(QObject):
    """Drops wheel events on a spin box or combo that has no focus (the form scrolls instead)."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.Wheel and isinstance(watched, QWidget) and not watched.hasFocus():
            area = watched.parentWidget()
            while area is not None and not isinstance(area, QAbstractScrollArea):
                area = area.parentWidget()
            if area is not None:          # the form scrolls as if the pointer were on its background
                QApplication.sendEvent(area.verticalScrollBar(), event)
            return True
        return False


def _changed(editor: QWidget):
    """The signal `editor` emits when the user changes its value."""
    if isinstance(editor, QCheckBox):
        return editor.toggled
    if isinstance(editor, QComboBox):
        return editor.currentTextChanged
    if isinstance(editor, QLineEdit):
        return editor.textChanged
    return editor.valueChanged


def _value(editor: QWidget):
    if isinstance(editor, QCheckBox):
        return editor.isChecked()
    if isinstance(editor, QComboBox):
        return editor.currentText()
    if isinstance(editor, QLineEdit):
        return editor.text().strip()
    return editor.value()
