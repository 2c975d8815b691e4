"""`cnnviewer export PANEL`: a panel rendered to PNG (or SVG) exactly as the app draws it."""

from __future__ import annotations

import argparse

from cnnviewer.cli.common import (
    MAX_EXPORT_SIDE,
    Parser,
    UsageError,
    ablate_option,
    int_in,
    load_model_and_image,
    model_options,
)
from cnnviewer.engine.types import EXPORT_PANELS, MODEL_ONLY_PANELS


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer export", description="Render a panel to PNG without a window.")
    parser.add_argument("panel", choices=EXPORT_PANELS)
    parser.add_argument("image", nargs="?", help="input image (not needed for architecture, model-summary)")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    parser.add_argument("--layer", help="dotted module name, e.g. features.3")
    parser.add_argument("--channel", type=int_in(0))
    parser.add_argument("--neuron", type=int_in(0), nargs=2, metavar=("Y", "X"),
                        help="neuron of --layer for receptive-field (default: the centre)")
    parser.add_argument("--size", type=int_in(16, MAX_EXPORT_SIDE), nargs=2, metavar=("W", "H"), default=(1000, 700),
                        help=f"pixels, 16 to {MAX_EXPORT_SIDE} each")
    model_options(parser)
    ablate_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnviewer.engine.media.files import writable_target
    from cnnviewer.ui.export import export_panel

    writable_target(args.output)
    if args.image is None:
        if args.panel not in MODEL_ONLY_PANELS:
            raise UsageError(f"cnnviewer export {args.panel}: needs an IMAGE")
        from cnnviewer.engine.media.images import sample_image
        model, _ = load_model_and_image(args, need_image=False)
        image = sample_image()
    else:
        model, image = load_model_and_image(args)
    export_panel(args.panel, model, image, args.output, layer=args.layer, channel=args.channel,
                 neuron=tuple(args.neuron) if args.neuron else None, size=tuple(args.size))
    print(args.output)
    return 0
