"""The Live panel's segmentation task: the model choice, opacity, legend, and how a class map frame is
drawn, reported, clicked and captured. Apart from live_detection.py to keep that module short; the
functions work on the panel's own state, on the GUI thread, with numpy only (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QLabel, QWidget

from cnnviewer.ui.widgets.controls import fit_names, labelled_row
from cnnviewer.ui.widgets.playback import ValueSlider

if TYPE_CHECKING:
    from cnnviewer.ui.panels.live_detection import LiveDetectionPanel

TASKS = ("Detection", "Segmentation")
# engine.segmentation.live.segmenter_names() (that module loads torch; a test keeps the two equal)
SEGMENTERS = ("mobilenet_v2 (fully convolutional)", "timm:tf_efficientnet_lite0 (fully convolutional)",
              "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large",
              "fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101")
OPACITY = 0.5
TOOLTIPS = {
    "model": "… (fully convolutional): a real ImageNet classifier's head applied at every position of "
             "the frame (coarse, 1000 classes); torchvision's segmentation networks label "
             "21 VOC classes (with weights from the torch hub cache when present, else untrained)",
    "opacity": "How strongly the class colours cover the frame (0: the frame itself)",
    "legend": "The classes in this frame, largest area first",
}


class SegmentationControls(QWidget):
    """The segmentation model, the overlay's opacity (one row) and the legend (shown under the frame)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = QComboBox()
        self.model.addItems(SEGMENTERS)
        fit_names(self.model, 22)
        self.opacity = ValueSlider(OPACITY)
        self.legend = QLabel("")
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        for name, tip in TOOLTIPS.items():
            getattr(self, name).setToolTip(tip)
        row = labelled_row([("Opacity", self.opacity)])
        row.setContentsMargins(0, 0, 0, 0)
        self.setLayout(row)


def redraw(panel: LiveDetectionPanel) -> None:
    """The frame with its class map at the chosen opacity, and the legend (no model run)."""
    from cnnviewer.engine.segmentation.live_scene import blend, legend_html
    class_map = panel.result.segmentation
    panel.shown = []
    panel.canvas.show_image(blend(panel.frame.pixels, class_map, panel.segmentation.opacity.value()),
                            keep_view=True)
    panel.segmentation.legend.setText(legend_html(class_map))


def status(panel: LiveDetectionPanel, fps: float, latency: float | None) -> str:
    from cnnviewer.engine.segmentation.live_scene import status_line
    return status_line(panel.result, fps, latency)


def clicked(panel: LiveDetectionPanel, row: float, column: float) -> None:
    """Say which class the clicked pixel belongs to, and with what probability."""
    from cnnviewer.engine.segmentation.live_scene import class_name
    class_map = panel.result.segmentation
    height, width = class_map.labels.shape
    y, x = min(max(int(row), 0), height - 1), min(max(int(column), 0), width - 1)
    label = int(class_map.labels[y, x])
    panel.note(f"Pixel ({x}, {y}): {class_name(class_map.categories, label)}, "
               f"probability {class_map.confidence[y, x]:.2f}.")


def capture(panel: LiveDetectionPanel, folder: str | Path) -> Path | None:
    """Save the frame with its class map (PNG) and its class table (JSON); the raw frame becomes every
    panel's input image."""
    from cnnviewer.engine.errors import CnnViewerError
    from cnnviewer.engine.media.images import from_array
    from cnnviewer.engine.segmentation.live_scene import save_capture
    from cnnviewer.ui.panels.live_capture import say_saved
    try:
        saved = save_capture(folder, panel.frame, panel.result.segmentation, panel.segmentation.opacity.value())
    except (OSError, CnnViewerError) as error:
        panel.note(f"Could not save the capture: {error}")
        return None
    panel._session.set_image(from_array(np.ascontiguousarray(panel.frame.pixels), saved.name))
    say_saved(panel, saved, "the frame is now every panel's input.")
    return saved
