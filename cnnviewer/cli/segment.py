"""`cnnviewer segment IMAGE --fully-convolutional -o OUT.png [--json OUT.json]`: a classifier run at
every position of the image (issue 25), its class map drawn over the image, and per class its area
and mean probability."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cnnviewer.cli.common import Parser, UsageError, load_model_and_image, model_options


def _opacity(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("choose an opacity from 0 to 1")
    return value


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer segment",
                    description="A class map of an image, drawn over it: a classifier run fully convolutionally.")
    parser.add_argument("image")
    model_options(parser)
    parser.add_argument("--fully-convolutional", action="store_true",
                        help="run a classifier whose head is global pooling + one linear layer at every position "
                             "(MobileNetV2, ResNets, EfficientNet-Lite0, most timm CNNs)")
    parser.add_argument("-o", "--output", required=True, help="the overlay, PNG")
    parser.add_argument("--json", metavar="OUT", help="per class: pixels and mean probability ('-': stdout)")
    parser.add_argument("--opacity", type=_opacity, default=0.5)
    parser.add_argument("--max-side", type=int, default=640, help="the image's longer side is scaled down to this")
    return parser


def run(args: argparse.Namespace) -> int:
    if not args.fully_convolutional:
        raise UsageError("segment needs --fully-convolutional for now: it runs a classifier at every position "
                         "(segmentation networks such as FCN and DeepLabV3 are not here yet)")
    if not 64 <= args.max_side <= 4096:
        raise UsageError("--max-side: choose 64 to 4096 px")
    from PIL import Image

    from cnnviewer.engine.media.files import atomic_output, writable_target
    from cnnviewer.engine.segmentation.fully_convolutional import class_map, fully_convolutional
    from cnnviewer.engine.segmentation.overlay import class_table, overlay, palette

    output = writable_target(args.output, UsageError)
    model, image = load_model_and_image(args)
    found = class_map(model, image, fully_convolutional(model), max_side=args.max_side)
    pixels = image.pixels
    labels, confidence = found.at_size(pixels.shape[0], pixels.shape[1])
    picture = overlay(pixels, labels, palette(len(model.categories) or int(labels.max()) + 1), args.opacity)
    with atomic_output(output) as temporary:
        Image.fromarray(picture).save(temporary, format="PNG")
    table = [{**row, "label": model.label(row["class"])} for row in class_table(labels, confidence)]
    report = {"image": image.source, "model": model.title, "trained": model.trained,
              "map": list(found.labels.shape), "input": list(found.input_size), "classes": table}
    if args.json == "-":
        print(json.dumps(report, indent=1))
    elif args.json:
        with atomic_output(writable_target(args.json, UsageError)) as temporary:
            Path(temporary).write_text(json.dumps(report, indent=1), encoding="utf-8")
    if args.json != "-":
        print(f"{image.name}: {found.labels.shape[0]}×{found.labels.shape[1]} class map from {model.title}; "
              f"wrote {output}", file=sys.stderr)
        for row in table[:5]:
            print(f"{row['pixels'] / labels.size:7.1%}  {row['label']} ({row['class']}), "
                  f"mean p {row['mean_probability']:.2f}")
    return 0
