"""`cnnviewer compare IMAGE --checkpoints DIR`: how far a training run moved, checkpoint by checkpoint.

One row (or JSON record) per checkpoint in training order: its file, epoch and step, the relative
weight change against the first and against the previous checkpoint, the relative change of the
logits on IMAGE against the first, and the top-1 with its probability. Unreadable checkpoints are
listed with why and skipped.
"""

from __future__ import annotations

import argparse
import json
import math

from cnnviewer.cli.common import UsageError


def run(args: argparse.Namespace) -> int:
    """Print the drift table (or `--json`); a folder without checkpoints is one line, exit 2."""
    from cnnviewer.engine.errors import WeightsError
    from cnnviewer.engine.media.images import load_image
    from cnnviewer.engine.models.checkpoint_drift import series_drift
    from cnnviewer.engine.models.checkpoints import CheckpointSeries, list_checkpoints
    from cnnviewer.engine.models.loading import load_model

    if args.model and len(args.model) > 1 or args.weights or args.ablate:
        raise UsageError("cnnviewer compare --checkpoints: give at most one --model (the architecture), "
                         "no --weights or --ablate")
    found = list_checkpoints(args.checkpoints)
    if not found:
        raise UsageError(f"cnnviewer compare: {args.checkpoints}: no checkpoints (no weights files, "
                         "nor folders holding one)")
    image = load_image(args.image)
    base = load_model(args.model[0], device=args.device) if args.model else None
    series = CheckpointSeries(args.checkpoints, found, base, device=args.device)
    try:
        series.architecture()
    except WeightsError as error:
        raise UsageError(f"cnnviewer compare: no checkpoint in {args.checkpoints} loads: {error}") from None
    rows = list(series_drift(series, image, layer=None))
    records = [_record(row) for row in rows]
    if args.json:
        print(json.dumps({"folder": str(args.checkpoints), "image": image.name,
                          "architecture": series.architecture().name, "checkpoints": records}, indent=1))
        return 0
    print(f"{image.name}: {len(rows)} checkpoints of {series.architecture().name} in {args.checkpoints}")
    print(f"  {'file':30s} {'epoch':>5s} {'step':>7s}  {'vs first':>8s} {'vs prev':>8s} {'logits':>8s}  top-1")
    for record in records:
        if record["error"]:
            print(f"  {record['file'][:30]:30s} unreadable: {record['error']}")
            continue
        print(f"  {record['file'][:30]:30s} {_int(record['epoch']):>5s} {_int(record['step']):>7s}  "
              f"{_number(record['weights_vs_first'])} {_number(record['weights_vs_previous'])} "
              f"{_number(record['logits_drift'])}  {_top(record)}")
    return 0


def _record(row) -> dict:
    checkpoint = row.checkpoint
    return {"file": checkpoint.name, "path": checkpoint.path, "epoch": checkpoint.epoch, "step": checkpoint.step,
            "label": checkpoint.label, "weights_vs_first": _finite(row.weights),
            "weights_vs_previous": _finite(row.weights_previous), "logits_drift": _finite(row.logits),
            "top1": row.top1, "top1_index": row.top1_index, "probability": _finite(row.probability), "error": row.error}


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or inf: those become null (a diverged checkpoint)."""
    return None if value is None or not math.isfinite(value) else value


def _top(record: dict) -> str:
    """'Egyptian cat (93.1%)'; '—' for a network whose output is not (batch, classes), or a NaN one."""
    if record["top1"] is None:
        return "—"
    return record["top1"] + ("" if record["probability"] is None else f" ({record['probability']:.1%})")


def _int(value: int | None) -> str:
    return "—" if value is None else str(value)


def _number(value: float | None) -> str:
    return f"{'—':>8s}" if value is None else f"{value:8.4f}"
