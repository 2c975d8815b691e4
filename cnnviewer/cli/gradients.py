"""`cnnviewer export gradients IMAGE`: one gradient view as PNG, and the raw attribution as .npy."""

from __future__ import annotations

import argparse

from cnnviewer.cli.common import (
    Parser,
    UsageError,
    ablate_option,
    int_in,
    load_model_and_image,
    model_options,
)


def _noise(text: str) -> float:
    """An argparse type: SmoothGrad's σ as a fraction of the input range, in (0, 10]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 10:   # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{value} is out of range: use a fraction above 0, e.g. 0.15")
    return value


_noise.__name__ = "fraction"


def parser() -> argparse.ArgumentParser:
    from cnnviewer.engine.attribution.target import IG_BASELINES, METHODS, SMOOTHABLE
    from cnnviewer.engine.views.heatmaps import DISPLAY_MODES

    parser = Parser(prog="cnnviewer export gradients", description="A gradient view of an image as PNG.")
    parser.add_argument("image")
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--target-class", type=int_in(0), help="class index (default: the top-1 class)")
    parser.add_argument("--layer", help="a layer target instead of a class: dotted module name")
    parser.add_argument("--channel", type=int_in(0), help="channel of --layer (default 0)")
    parser.add_argument("--neuron", type=int_in(0), nargs=2, metavar=("Y", "X"), help="one neuron of that channel")
    parser.add_argument("--display", choices=DISPLAY_MODES, default="overlay")
    parser.add_argument("--fill", choices=("gray", "zero", "blur"), default="gray", help="occlusion patch")
    parser.add_argument("--patch", type=int_in(1, 512), help="occlusion patch side in pixels (default: the "
                        "neuron's receptive field, else 1/7 of the input)")
    parser.add_argument("--stride", type=int_in(1, 512), help="occlusion stride in pixels (default: half the patch)")
    parser.add_argument("--steps", type=int_in(2, 1024), default=50, help="integrated-gradients steps (default 50; "
                        "also SmoothGrad's with --smooth-base integrated-gradients)")
    parser.add_argument("--baseline", choices=IG_BASELINES, default="mean colour",
                        help="integrated-gradients start image (default: the mean colour)")
    parser.add_argument("--smooth-base", choices=SMOOTHABLE, default="saliency",
                        help="the attribution SmoothGrad averages over noisy copies (default saliency)")
    parser.add_argument("--noise", type=_noise, default=0.15,
                        help="SmoothGrad's noise σ as a fraction of the input's range (default 0.15)")
    parser.add_argument("--samples", type=int_in(1, 1000), default=25, help="SmoothGrad's noisy copies (default 25)")
    parser.add_argument("--cam-layer", help="the CAM methods' layer (grad-cam, grad-cam++, score-cam, layer-cam, "
                        "eigen-cam; default: the target's layer when it has maps, else the last map before global "
                        "pooling; the summary line names it)")
    parser.add_argument("--region", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                        help="explain --target-class summed over this box of a class map (Seg-Grad-CAM), in pixels "
                             "of the image as you see it (it must overlap the model's centre crop); for a model "
                             "whose output is a class map, or with --fully-convolutional")
    parser.add_argument("--fully-convolutional", action="store_true",
                        help="run a classifier whose head is global pooling + one linear layer as a class map on a "
                             "448-px centre square (then --region picks the part explained)")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--npy", help="also save the raw attribution (float32, HxWx3 or HxW)")
    model_options(parser)
    ablate_option(parser)
    return parser


def region_box(region: list[float], image_hw: tuple[int, int], model) -> tuple[float, float, float, float]:
    """--region X0 Y0 X1 Y1 (pixels of the image) as Target.box: fractions (y0, x0, y1, x1) of the model's
    centre crop (overlay.crop_extent), clipped to it. Refused in one line: an empty box, one outside
    the image or the crop, a model whose output is not a class map."""
    import torch

    from cnnviewer.engine.runtime.outputs import first_tensor
    from cnnviewer.engine.segmentation.overlay import crop_extent

    x0, y0, x1, y1 = region
    height, width = image_hw
    if not (x1 > x0 and y1 > y0):
        raise UsageError(f"cnnviewer export gradients: --region {x0:g} {y0:g} {x1:g} {y1:g}: X1 must exceed X0 "
                         "and Y1 Y0")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise UsageError(f"cnnviewer export gradients: --region {x0:g} {y0:g} {x1:g} {y1:g} is outside the "
                         f"{width}×{height} image")
    size = model.preprocess.crop_size
    with torch.inference_mode():
        probe = first_tensor(model.module(torch.zeros(1, model.input_channels, size, size, dtype=model.dtype,
                                                      device=model.device)))
    if probe.dim() != 4:
        raise UsageError(f"cnnviewer export gradients: --region needs a class map, and {model.name}'s output is "
                         "one score per class: add --fully-convolutional (a head of global pooling + one linear "
                         "layer) or choose a segmentation model")
    top, left, bottom, right = crop_extent(height, width, model.preprocess.resize_size, size)
    box = [(y0 / height - top) / (bottom - top), (x0 / width - left) / (right - left),
           (y1 / height - top) / (bottom - top), (x1 / width - left) / (right - left)]
    if box[2] <= 0 or box[3] <= 0 or box[0] >= 1 or box[1] >= 1:
        crop = (f"x {max(left, 0) * width:.0f}-{min(right, 1) * width:.0f}, "
                f"y {max(top, 0) * height:.0f}-{min(bottom, 1) * height:.0f}")
        raise UsageError(f"cnnviewer export gradients: --region {x0:g} {y0:g} {x1:g} {y1:g} lies outside the "
                         f"model's centre crop ({crop}), which is all it sees")
    y_0, x_0, y_1, x_1 = (min(max(v, 0.0), 1.0) for v in box)
    return y_0, x_0, y_1, x_1


def run(args: argparse.Namespace) -> int:
    """`cnnviewer export gradients`: one gradient view as PNG (and the raw array as .npy)."""
    import numpy as np
    from PIL import Image

    from cnnviewer.engine.attribution.target import CAM_METHODS, Target
    from cnnviewer.engine.media.files import atomic_output, writable_target
    from cnnviewer.engine.views.heatmaps import render
    from cnnviewer.engine.workbench import Workbench

    for target_path in (args.output, args.npy):
        if target_path:
            writable_target(target_path)
    model, image = load_model_and_image(args)
    if args.fully_convolutional:
        from cnnviewer.engine.segmentation.fully_convolutional import fully_convolutional_model
        model = fully_convolutional_model(model)
    box = region_box(args.region, image.pixels.shape[:2], model) if args.region is not None else None
    if box is not None and args.layer is not None:
        raise UsageError("cnnviewer export gradients: --region explains a class over part of a class map; "
                         "leave out --layer")
    if args.layer is not None and args.layer not in model.layer_names:
        raise UsageError(f"cnnviewer export gradients: {model.name} has no layer {args.layer!r}")
    if args.layer is None:
        from cnnviewer.engine.runtime.inference import predict
        if args.target_class is not None:
            index = args.target_class
        elif box is not None:   # as a box dragged in the window: the class most of the region shows
            from cnnviewer.engine.workbench import Workbench
            index = Workbench().class_map(model, image).box_class(box)
        else:
            index = predict(model, image, 1)[0].index
        target = Target(class_index=index, box=box)
    else:
        target = Target(layer=args.layer, channel=args.channel or 0,
                        neuron=tuple(args.neuron) if args.neuron else None)
    options: dict = {}
    if args.method == "occlusion":
        options = {"fill": args.fill, **({"patch": args.patch} if args.patch else {}),
                   **({"stride": args.stride} if args.stride else {})}
    elif args.method == "integrated-gradients":
        options = {"steps": args.steps, "baseline": args.baseline}
    elif args.method == "smoothgrad":
        options = {"base": args.smooth_base, "noise": args.noise, "samples": args.samples}
        if args.smooth_base == "integrated-gradients":
            options.update(steps=args.steps, baseline=args.baseline)
    elif args.method in CAM_METHODS and args.cam_layer:
        if args.cam_layer not in model.layer_names:
            raise UsageError(f"cnnviewer export gradients: {model.name} has no layer {args.cam_layer!r}")
        options = {"layer": args.cam_layer}
    from cnnviewer.cli.common import stderr_progress
    from cnnviewer.engine.jobs import JobContext
    try:   # the slow methods (occlusion, integrated gradients, SmoothGrad, Score-CAM) report progress
        result = Workbench().gradient(model, image, args.method, target, JobContext(report=stderr_progress),
                                      **options)
    except (IndexError, ValueError) as error:
        raise UsageError(f"cnnviewer export gradients: {target.describe()}: {error}") from None
    finally:
        stderr_progress.done()
    with atomic_output(args.output) as temporary:
        Image.fromarray(render(result.attribution, args.display, result.display)).save(temporary, format="PNG")
    if args.npy:
        values = result.attribution
        array = values[0] if values.shape[0] == 1 else values.transpose(1, 2, 0)   # H x W or H x W x 3
        with atomic_output(args.npy) as temporary, open(temporary, "wb") as stream:
            np.save(stream, np.ascontiguousarray(array, dtype=np.float32))
    what = target.describe()
    if target.class_index is not None and target.class_index < len(model.categories):
        what = f"class {target.class_index} ({model.categories[target.class_index]}){target.where()}"
    where = ""
    if args.method in CAM_METHODS:   # chosen when --cam-layer is left out: say which, it sets the map's detail
        where = f" at layer {result.options['layer']}" + ("" if args.cam_layer else " (auto)")
    if args.method == "smoothgrad":
        where = f" ({args.smooth_base}, noise {args.noise:g}, {args.samples} samples)"
    print(f"{args.output}: {args.method} of {what}{where} in {result.milliseconds:.0f} ms")
    return 0
