"""The Live panel's fixed names and tooltips (torch-free copies of the engine's lists: the window's
thread must not import torch to fill a combo box)."""

from __future__ import annotations

DETECTORS = ("mtcnn", "ssdlite320_mobilenet_v3_large", "ssd300_vgg16", "fasterrcnn_mobilenet_v3_large_320_fpn",
             "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2",
             "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "maskrcnn_resnet50_fpn",
             "maskrcnn_resnet50_fpn_v2", "keypointrcnn_resnet50_fpn")   # engine.detection.detector_names()
VIEWS = ("Detections", "Before NMS | after NMS", "RPN proposals + anchors (click)")   # engine.detection.scene.VIEWS
TOOLTIPS = {
    "source": "A camera, a video file or a folder of images (or drop one on this panel)",
    "task": "Detection: boxes around objects; segmentation: a class for every pixel",
    "detector": "MTCNN finds faces offline; the torchvision detectors find the 80 COCO classes "
                "(with COCO weights when cached, else untrained)",
    "iou": "Non-maximum suppression: of two boxes of one class overlapping by more than this "
           "(intersection over union), the lower-scoring one is dropped",
    "view": "Detections; the boxes before and after NMS side by side; or a two-stage detector's "
            "RPN proposals and, where you click, its anchors",
    "pause_button": "Pause or resume the source",
    "step_button": "One frame forward (paused video or folder)",
    "capture_button": "Save the annotated frame and its detections, and make the frame every panel's input",
}
