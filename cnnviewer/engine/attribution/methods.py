"""Every attribution method by its name (target.METHODS): one dispatch for the views, the
faithfulness scores, the sanity check and the folder evaluation."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from cnnviewer.engine.attribution import cams, smoothing
from cnnviewer.engine.attribution.gradients import (
    deconvnet,
    grad_cam,
    guided_backprop,
    input_x_gradient,
    integrated_gradients,
    occlusion,
    saliency,
)
from cnnviewer.engine.attribution.target import METHODS, Target


def attribute(method: str, model: nn.Module, inputs: Tensor, target: Target, **options: Any) -> Tensor:
    """Dispatch by method name (see METHODS); CAM methods take `layer`, `channels_last` and `upsample`
    (False: the layer-resolution map)."""
    plain = {"saliency": saliency, "guided-backprop": guided_backprop, "deconvnet": deconvnet,
             "input-x-gradient": input_x_gradient}.get(method)
    if plain is not None:
        return plain(model, inputs, target)
    cam = {"grad-cam": grad_cam, "grad-cam++": cams.grad_cam_plus_plus, "layer-cam": cams.layer_cam,
           "eigen-cam": cams.eigen_cam}.get(method)
    if cam is not None:
        return cam(model, inputs, target, options["layer"], upsample=options.get("upsample", True),
                   channels_last=options.get("channels_last", False))
    if method == "score-cam":
        return cams.score_cam(model, inputs, target, **options)
    if method == "smoothgrad":
        return smoothing.smoothgrad(model, inputs, target, **options)
    if method == "integrated-gradients":
        return integrated_gradients(model, inputs, target, **options)
    if method == "occlusion":
        return occlusion(model, inputs, target, **options)
    raise ValueError(f"unknown method {method!r}; choose {', '.join(METHODS)}")
