"""`cnnviewer [IMAGE]`: the window; files are checked here, before it opens."""

from __future__ import annotations

import argparse
import os

from cnnviewer.cli.common import Parser, UsageError, model_options
from cnnviewer.engine.types import ONNX_SUFFIX


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer", description="Look inside convolutional neural networks. "
                     "Subcommands: predict, export, summary, detect, models, install-desktop "
                     "(cnnviewer SUBCOMMAND --help).")
    parser.add_argument("image", nargs="?", help="image to open (default: a sample photo)")
    model_options(parser)
    parser.add_argument("--checkpoints", metavar="DIR", help="a training run's folder of checkpoints: a slider "
                        "moves every panel through them (--model: the architecture to fit them into)")
    return parser


def check(args: argparse.Namespace) -> None:
    """Named files must exist before the window opens; the model name is checked by the app."""
    files = [args.image, args.weights, args.labels]
    if args.model and ".py" in args.model:
        files.append(args.model.split(":")[0])
    if args.model and args.model.lower().endswith(ONNX_SUFFIX):
        files.append(args.model)
    for given in files:
        if given and not os.path.exists(given):
            raise UsageError(f"cnnviewer: {given}: no such file")
    if args.weights and args.model and args.weights.lower().endswith(ONNX_SUFFIX):
        raise UsageError(f"cnnviewer: {os.path.basename(args.weights)} is a whole model (ONNX), not weights for "
                         f"{args.model}: give it alone, as --model {args.weights}")
    if args.checkpoints and not os.path.isdir(args.checkpoints):
        raise UsageError(f"cnnviewer: {args.checkpoints}: not a folder"
                         + ("" if os.path.exists(args.checkpoints) else " (no such folder)"))


def run(args: argparse.Namespace, started: float) -> int:
    from cnnviewer.ui.app import run_app

    return run_app(args, started)
