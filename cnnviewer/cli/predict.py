"""`cnnviewer predict IMAGE`: the top-k classes, as text or JSON."""

from __future__ import annotations

import argparse
import json
import math
import sys

from cnnviewer.cli.common import (
    Parser,
    ablate_option,
    int_in,
    load_model_and_image,
    model_options,
)


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer predict", description="Print the top-5 classes of an image.")
    parser.add_argument("image")
    model_options(parser)
    parser.add_argument("--json", action="store_true", help="JSON list of {label, index, probability, trained}")
    parser.add_argument("--top", type=int_in(1), default=5)
    ablate_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnviewer.engine.runtime.inference import predict

    model, image = load_model_and_image(args)
    predictions = predict(model, image, k=max(1, args.top))
    if any(not math.isfinite(p.probability) for p in predictions):
        print(f"cnnviewer: warning: {model.title} produces NaN outputs on {image.name}: the classes below "
              "are not a ranking (broken weights?)", file=sys.stderr)
    if args.json:
        print(json.dumps([{"label": p.label, "index": p.index, "probability": p.probability,
                           "trained": model.trained} for p in predictions], indent=2))
        if args.ablate:
            print(f"cnnviewer: note: {len(model.interventions)} knock-out(s) applied", file=sys.stderr)
        return 0
    state = "" if model.trained else "  [untrained: random weights]"
    print(f"{image.name} — {model.title}, {model.weights_label}{state}")
    for knockout in model.interventions:
        print(f"  knocked out: {knockout.describe()}")
    for p in predictions:
        print(f"{p.probability:7.2%}  {p.label} ({p.index})")
    return 0
