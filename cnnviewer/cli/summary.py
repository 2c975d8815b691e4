"""`cnnviewer summary`: per-layer shapes, units, weights, MACs and receptive fields."""

from __future__ import annotations

import argparse
import json

from cnnviewer.cli.common import (
    MAX_INPUT_SIDE,
    Parser,
    UsageError,
    int_in,
    model_options,
    stderr_progress,
)
from cnnviewer.engine.types import DEFAULT_MODEL


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer summary", description="Per-layer shapes, units, weights, MACs and "
                     "receptive fields of a model.")
    model_options(parser)
    parser.add_argument("--input-size", type=int_in(1, MAX_INPUT_SIDE), nargs=2, metavar=("H", "W"),
                        help="input height and width (default: the weights' crop size)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="a list of rows")
    output.add_argument("--csv", action="store_true")
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnviewer.engine.models.loading import load_model, load_weights
    from cnnviewer.engine.structure.summary import summary_csv, summary_table
    from cnnviewer.engine.structure.summary_graph import summarize

    model = load_model(args.model or DEFAULT_MODEL, device=args.device, precision=args.precision,
                       allow_download=True, progress=stderr_progress)
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
