"""`cnnviewer compare IMAGE --model A --model B`: two models on one image, side by side.

With `--ablate LAYER:C1,C2[:MODE]` B is A (or the model given for B) with those channels knocked out:
`cnnviewer compare cat.jpg --ablate features.14.conv.0:3,7` shows what the knock-out changes.

With `--checkpoints DIR` it measures a training run instead: every checkpoint against the first
(see compare_checkpoints).

With one architecture and two weight files (`--model mobilenet_v2 --weights finetuned.pth`
compares the pretrained weights with yours), it also prints how far each layer moved.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from types import SimpleNamespace

from cnnviewer.cli.common import Parser, UsageError, ablate_option, int_in


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer compare", description="Compare two models (or two weight files of one) "
                    "on the same image: top-5s, where they disagree, and per-layer drift.")
    parser.add_argument("image")
    parser.add_argument("--model", action="append", default=[], help="a model (twice: A then B; once: both)")
    parser.add_argument("--weights", action="append", default=[],
                        help="weights for B (once), or for A then B (twice)")
    parser.add_argument("--labels", help="class names, one per line (both models)")
    parser.add_argument("--trust", action="store_true", help="allow full pickled model files")
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"))
    parser.add_argument("--layers", type=int_in(1), default=10, help="how many most-changed layers to list")
    parser.add_argument("--json", action="store_true", help="everything as one JSON object")
    parser.add_argument("--checkpoints", metavar="DIR",
                        help="a training run's folder of checkpoints: the drift of each against the first "
                             "(--model names the architecture; default: the one the first checkpoint fits)")
    ablate_option(parser)
    parser.set_defaults(ablate=[])
    return parser


def _sides(args: argparse.Namespace) -> list[tuple[str | None, str | None]]:
    if len(args.model) > 2 or len(args.weights) > 2:
        raise UsageError("cnnviewer compare: at most two --model and two --weights (A, then B)")
    models = args.model or [None]
    models = models * 2 if len(models) == 1 else models
    weights = [None] * (2 - len(args.weights)) + list(args.weights)
    if models[0] == models[1] and weights[0] == weights[1] and not args.ablate:
        raise UsageError("cnnviewer compare: both sides are the same model and weights; give a second "
                         "--model or --weights")
    return list(zip(models, weights))


def run(args: argparse.Namespace) -> int:
    from cnnviewer.cli.common import load_model_and_image
    from cnnviewer.engine.comparison.compare import compare

    if args.checkpoints:
        from cnnviewer.cli import compare_checkpoints
        return compare_checkpoints.run(args)

    sides = _sides(args)
    loaded = []
    for model, weights in sides:
        side = SimpleNamespace(image=args.image, model=model, weights=weights, labels=args.labels,
                               trust=args.trust, device=args.device, precision="fp32", ablate=[])
        loaded.append(load_model_and_image(side, need_image=not loaded))
    (left, image), (right, _) = loaded
    if args.ablate:    # B's knock-outs are measured on the image A loaded
        from cnnviewer.cli.common import apply_ablations
        right = apply_ablations(right.original, image, args.ablate)
    result = compare(left, right, image)
    for warning in result.warnings():
        print(f"cnnviewer: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({**_as_json(result), "trained": [left.trained, right.trained]}, indent=1))
        return 0
    names = [f"A: {left.title} ({left.weights_label})", f"B: {right.title} ({right.weights_label})"]
    print(f"{image.name}\n  {names[0]}\n  {names[1]}")
    sides = [list(side) or [None] * 5 for side in result.predictions]
    for rank, (a, b) in enumerate(zip(*sides), start=1):
        print(f"  {rank}. {_cell(a, result.broken[0])}  {_cell(b, result.broken[1])}".rstrip())
    only_a, only_b = result.disagreements()
    bad = [f"{side} produces {what}" for side, what in zip("AB", result.broken) if what]
    verdict = f"top-1 not compared: {' and '.join(bad)}" if bad else \
        "top-1 agrees" if result.top1_agrees else "top-1 DISAGREES"
    print(f"{verdict}" + (f"; only in A's top-5: {', '.join(only_a)}" if only_a else "")
          + (f"; only in B's top-5: {', '.join(only_b)}" if only_b else ""))
    print(f"{_layers(len(result.shared_layers))} recorded in both with the same shape")
    if result.same_architecture:
        print(f"Same architecture: the {args.layers} layers whose weights moved most (relative change):")
        for drift in result.most_changed(args.layers):
            print(f"  {drift.name:36s} weights {_number(drift.weights)}  activations {_number(drift.activation)}")
    return 0


def _layers(count: int) -> str:
    return f"{count} layer" if count == 1 else f"{count} layers"


def _cell(prediction, broken: str | None) -> str:
    if prediction is None:
        return f"{'—':>6} {(broken or '')[:28]:<28}"
    return f"{prediction.probability:6.1%} {prediction.label[:28]:<28}"


def _number(value: float | None) -> str:
    return "   —   " if value is None else ("   inf " if math.isinf(value) else f"{value:7.4f}")


def _as_json(result) -> dict:
    def predictions(side):
        return [{"label": p.label, "index": p.index, "probability": p.probability} for p in side]
    only_a, only_b = result.disagreements()
    return {"models": list(result.names), "predictions": [predictions(side) for side in result.predictions],
            "top1_agrees": result.top1_agrees, "nonfinite": list(result.broken), "only_in_a": only_a, "only_in_b": only_b,
            "same_architecture": result.same_architecture, "shared_layers": list(result.shared_layers),
            "drift": [{"layer": d.name, "depth": d.depth, "activation": d.activation, "weights": d.weights}
                      for d in result.drift]}
