"""Command line: open the window, or predict / export / list models without one.

Kept light: torch and Qt are imported only by the command that needs them, so
`cnnviewer --help` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from cnnviewer.engine.types import DEFAULT_MODEL, EXPORT_PANELS, MODEL_ONLY_PANELS


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="torchvision model name, or FILE.py:NAME for your own architecture")
    parser.add_argument("--weights", help="weights file (.pt .pth .bin .safetensors .pt2, TorchScript)")
    parser.add_argument("--labels", help="class names, one per line")
    parser.add_argument("--trust", action="store_true",
                        help="allow a full pickled model file (it runs code from the file)")
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"), help="default: cuda, then mps, then cpu")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="fp16/bf16 on a GPU")


def _gui_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnviewer", description="Look inside convolutional neural networks. "
                     "Subcommands: predict, export, summary, detect, models (cnnviewer SUBCOMMAND --help).")
    parser.add_argument("image", nargs="?", help="image to open (default: a sample photo)")
    _model_options(parser)
    return parser


def _predict_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnviewer predict", description="Print the top-5 classes of an image.")
    parser.add_argument("image")
    _model_options(parser)
    parser.add_argument("--json", action="store_true", help="JSON list of {label, index, probability}")
    parser.add_argument("--top", type=int, default=5)
    return parser


def _summary_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnviewer summary", description="Per-layer shapes, units, weights, MACs and "
                     "receptive fields of a model.")
    _model_options(parser)
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                        help="input height and width (default: the weights' crop size)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="a list of rows")
    output.add_argument("--csv", action="store_true")
    return parser


def _gradients_parser() -> argparse.ArgumentParser:
    from cnnviewer.engine.attribution.gradients import DISPLAY_MODES, METHODS

    parser = _Parser(prog="cnnviewer export gradients", description="A gradient view of an image as PNG.")
    parser.add_argument("image")
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--target-class", type=int, help="class index (default: the top-1 class)")
    parser.add_argument("--layer", help="a layer target instead of a class: dotted module name")
    parser.add_argument("--channel", type=int, help="channel of --layer (default 0)")
    parser.add_argument("--neuron", type=int, nargs=2, metavar=("Y", "X"), help="one neuron of that channel")
    parser.add_argument("--display", choices=DISPLAY_MODES, default="overlay")
    parser.add_argument("--fill", choices=("gray", "zero", "blur"), default="gray", help="occlusion patch")
    parser.add_argument("--stride", type=int, help="occlusion stride in pixels")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--npy", help="also save the raw attribution (float32, HxWx3 or HxW)")
    _model_options(parser)
    return parser


def _export_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnviewer export", description="Render a panel to PNG without a window.")
    parser.add_argument("panel", choices=EXPORT_PANELS)
    parser.add_argument("image", nargs="?", help="input image (not needed for architecture, model-summary)")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    parser.add_argument("--layer", help="dotted module name, e.g. features.3")
    parser.add_argument("--channel", type=int)
    parser.add_argument("--neuron", type=int, nargs=2, metavar=("Y", "X"),
                        help="neuron of --layer for receptive-field (default: the centre)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=(1000, 700))
    _model_options(parser)
    return parser


def _load(args: argparse.Namespace, need_image: bool = True):
    """Model (with weights) and image for the headless commands."""
    from cnnviewer.engine.media.images import load_image
    from cnnviewer.engine.models.loading import load_model, load_weights, read_labels
    from cnnviewer.engine.runtime.memory import keep_freed_memory

    keep_freed_memory()
    image = load_image(args.image) if need_image else None
    model = load_model(args.model or DEFAULT_MODEL, device=args.device, precision=args.precision,
                       allow_download=True, progress=_stderr_progress)
    labels = read_labels(args.labels) if args.labels else None
    if args.weights:
        model = load_weights(args.weights, model, trust=args.trust, labels=labels,
                             device=args.device, precision=args.precision)
    elif labels:
        from dataclasses import replace
        model = replace(model, categories=labels)
    return model, image


def _stderr_progress(fraction: float, text: str) -> None:
    print(f"\r{text} ({fraction:.0%})", end="", file=sys.stderr, flush=True)


def predict_command(args: argparse.Namespace) -> int:
    from cnnviewer.engine.runtime.inference import predict

    model, image = _load(args)
    predictions = predict(model, image, k=max(1, args.top))
    if args.json:
        print(json.dumps([{"label": p.label, "index": p.index, "probability": p.probability}
                          for p in predictions], indent=2))
        return 0
    state = "" if model.trained else "  [untrained: random weights]"
    print(f"{image.name} — {model.title}, {model.weights_label}{state}")
    for p in predictions:
        print(f"{p.probability:7.2%}  {p.label} ({p.index})")
    return 0


def export_command(args: argparse.Namespace) -> int:
    from cnnviewer.ui.export import export_panel

    if args.image is None:
        if args.panel not in MODEL_ONLY_PANELS:
            raise UsageError(f"cnnviewer export {args.panel}: needs an IMAGE")
        from cnnviewer.engine.media.images import sample_image
        model, _ = _load(args, need_image=False)
        image = sample_image()
    else:
        model, image = _load(args)
    export_panel(args.panel, model, image, args.output, layer=args.layer, channel=args.channel,
                 neuron=tuple(args.neuron) if args.neuron else None, size=tuple(args.size))
    print(args.output)
    return 0


def summary_command(args: argparse.Namespace) -> int:
    from cnnviewer.engine.models.loading import load_model, load_weights
    from cnnviewer.engine.structure.summary import summary_csv, summary_table
    from cnnviewer.engine.structure.summary_graph import summarize

    model = load_model(args.model or DEFAULT_MODEL, device=args.device, precision=args.precision,
                       allow_download=True, progress=_stderr_progress)
    if args.weights:
        model = load_weights(args.weights, model, trust=args.trust, device=args.device,
                             precision=args.precision)
    size = tuple(args.input_size) if args.input_size else (model.preprocess.crop_size,) * 2
    if min(size) < 1:
        raise UsageError(f"cnnviewer summary: --input-size must be positive, not {size}")
    summary = summarize(model.module, size, name=model.name, channels=model.input_channels)
    if args.json:
        print(json.dumps([row.as_json() for row in summary.rows], indent=1))
    elif args.csv:
        print(summary_csv(summary), end="")
    else:
        print(summary_table(summary))
    return 0


def models_command(_args: argparse.Namespace) -> int:
    from cnnviewer.engine.models.catalogue import catalogue, catalogue_status

    for family, names in catalogue().items():
        print(family)
        for name in names:
            print(f"  {name:28s} {catalogue_status(name)}")
    return 0


def _detect_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnviewer detect", description="Detect faces (MTCNN, offline) or COCO objects "
                     "(torchvision detectors) in a video file, an image, or a folder of images.")
    parser.add_argument("source", help="a video file, an image, or a folder of images")
    parser.add_argument("--detector", default="mtcnn", help="mtcnn (default), or a torchvision detection model")
    parser.add_argument("--weights", help="custom weights for a torchvision detector (state dict, checkpoint, "
                        "safetensors)")
    parser.add_argument("--score", type=float, default=0.5)
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--json", help="write all detections, COCO-style, to this file")
    parser.add_argument("--save-frames", help="write annotated frames (PNG) to this folder")
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"))
    return parser


def detect_command(args: argparse.Namespace) -> int:
    """Per-frame detections on stdout; optional COCO JSON and annotated frames.

    A frame that cannot be read is reported on stderr and skipped; the rest go on.
    """
    from pathlib import Path

    from PIL import Image

    from cnnviewer.engine.detection.detectors import (
        apply_thresholds,
        coco_records,
        draw,
        make_detector,
    )
    from cnnviewer.engine.errors import ImageError
    from cnnviewer.engine.media.sources import VideoFile, open_source
    from cnnviewer.engine.runtime.device import pick_device

    if not 0 <= args.score <= 1 or not 0 <= args.iou <= 1:
        raise UsageError("cnnviewer detect: --score and --iou are between 0 and 1")
    source = open_source(args.source)
    detector = make_detector(args.detector, str(pick_device(args.device)), weights=args.weights)
    if not detector.trained:
        print(f"note: {detector.name} has no COCO weights in the torch hub cache: random weights",
              file=sys.stderr)
    records, out = [], Path(args.save_frames) if args.save_frames else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    with source:
        while True:
            try:
                frame = source.read()
            except ImageError as error:
                print(f"warning: {error}", file=sys.stderr)
                continue
            if frame is None:
                break
            found = apply_thresholds(detector.raw(frame.pixels), args.score, args.iou)
            boxes = ", ".join(f"{d.label} {d.score:.2f} [{', '.join(f'{v:.0f}' for v in d.box)}]" for d in found)
            print(f"{frame.name}: {len(found)} detection{'s' if len(found) != 1 else ''}"
                  + (f": {boxes}" if found else ""), flush=True)
            records += coco_records(frame, found)
            if out is not None:
                stem = f"{Path(source.name).stem}-{frame.index:06d}" if isinstance(source, VideoFile) \
                    else Path(frame.name).stem
                Image.fromarray(draw(frame.pixels, found)).save(out / f"{stem}.png")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1), encoding="utf-8")
    return 0


def gradients_command(args: argparse.Namespace) -> int:
    """`cnnviewer export gradients`: one gradient view as PNG (and the raw array as .npy)."""
    import numpy as np
    from PIL import Image

    from cnnviewer.engine.attribution.gradients import Target, render
    from cnnviewer.engine.workbench import Workbench

    model, image = _load(args)
    if args.layer is not None and args.layer not in model.layer_names:
        raise UsageError(f"cnnviewer export gradients: {model.name} has no layer {args.layer!r}")
    if args.layer is None:
        from cnnviewer.engine.runtime.inference import predict
        index = args.target_class if args.target_class is not None else predict(model, image, 1)[0].index
        target = Target(class_index=index)
    else:
        target = Target(layer=args.layer, channel=args.channel or 0,
                        neuron=tuple(args.neuron) if args.neuron else None)
    options = {"fill": args.fill} if args.method == "occlusion" else {}
    if args.method == "occlusion" and args.stride:
        options["stride"] = args.stride
    try:
        result = Workbench().gradient(model, image, args.method, target, **options)
    except (IndexError, ValueError) as error:
        raise UsageError(f"cnnviewer export gradients: {target.describe()}: {error}") from None
    Image.fromarray(render(result.attribution, args.display, result.display)).save(args.output)
    if args.npy:
        values = result.attribution
        array = values[0] if values.shape[0] == 1 else values.transpose(1, 2, 0)   # H x W or H x W x 3
        np.save(args.npy, np.ascontiguousarray(array, dtype=np.float32))
    print(f"{args.output}: {args.method} of {target.describe()} in {result.milliseconds:.0f} ms")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cnnviewer` command."""
    import time

    started = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    from cnnviewer.engine.errors import CnnViewerError

    try:
        if argv and argv[0] == "predict":
            return predict_command(_predict_parser().parse_args(argv[1:]))
        if argv[:2] == ["export", "gradients"]:
            return gradients_command(_gradients_parser().parse_args(argv[2:]))
        if argv and argv[0] == "export":
            return export_command(_export_parser().parse_args(argv[1:]))
        if argv and argv[0] == "detect":
            return detect_command(_detect_parser().parse_args(argv[1:]))
        if argv and argv[0] == "summary":
            return summary_command(_summary_parser().parse_args(argv[1:]))
        if argv and argv[0] == "models":
            return models_command(_Parser(prog="cnnviewer models").parse_args(argv[1:]))
        args = _gui_parser().parse_args(argv)
        files = [args.image, args.weights, args.labels]
        if args.model and ".py" in args.model:
            files.append(args.model.split(":")[0])
        for given in files:   # checked before the window opens; the model name is checked by the app
            if given and not os.path.exists(given):
                raise UsageError(f"cnnviewer: {given}: no such file")
    except (UsageError, CnnViewerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    from cnnviewer.ui.app import run_app

    return run_app(args, started)


if __name__ == "__main__":
    sys.exit(main())
