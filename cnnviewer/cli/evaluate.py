"""`cnnviewer evaluate FOLDER`: which attribution method is most faithful for this model on these images.

Each method's mean ± sd of deletion AUC, insertion AUC and ROAD (and, for the CAM methods, Average
Drop and Increase in Confidence) over the images directly inside FOLDER, as a table or JSON.

Cache-free on purpose: the command needs no index and writes nothing, so a script gets numbers from
exactly the files it names (the Dataset panel's "Evaluate attribution" keeps its tables beside the
folder's index instead).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

from cnnviewer.cli.common import Parser, UsageError, int_in, model_options


def parser() -> argparse.ArgumentParser:
    from cnnviewer.engine.attribution.evaluate import DEFAULT_METHODS, METRICS
    from cnnviewer.engine.attribution.target import METHODS

    parser = Parser(prog="cnnviewer evaluate", description="Score attribution methods over a folder of images: "
                    "each method's mean ± sd of deletion AUC (lower is better), insertion AUC (higher is better) "
                    "and ROAD (higher is better).")
    parser.add_argument("folder", help="a folder of images (the files directly inside it)")
    model_options(parser)
    parser.add_argument("--methods", nargs="+", choices=METHODS, metavar="METHOD",
                        help=f"default: {' '.join(DEFAULT_METHODS)}; any of {', '.join(METHODS)}")
    parser.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS))
    parser.add_argument("--target-class", type=int_in(0), help="score this class in every image "
                        "(default: each image's top-1)")
    parser.add_argument("--limit", type=int_in(1), help="only the first N readable images, in name order")
    parser.add_argument("--steps", type=int_in(2, 1000), default=50, help="steps of each deletion/insertion "
                        "curve (default 50)")
    parser.add_argument("--json", action="store_true", help="a JSON object: per method and score, mean, sd, n")
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnviewer.cli.common import load_model_and_image, stderr_progress
    from cnnviewer.engine.attribution.evaluate import DEFAULT_METHODS, evaluate_images
    from cnnviewer.engine.media.kinds import image_files
    from cnnviewer.engine.workbench import Workbench

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UsageError(f"{args.folder}: not a folder")
    try:
        paths = image_files(folder)
    except OSError as error:
        raise UsageError(f"{args.folder}: cannot be listed ({error.strerror or error})") from None
    if not paths:
        raise UsageError(f"{args.folder}: no image files in this folder")
    side = SimpleNamespace(image=None, model=args.model, weights=args.weights, labels=args.labels,
                           trust=args.trust, device=args.device, precision=args.precision)
    model, _ = load_model_and_image(side, need_image=False)
    workbench = Workbench()
    workbench.scorer(model, trace=True)   # no window waits on this process: the traced copy's ~0.5 s pays off
    try:
        result = evaluate_images(workbench, model, paths, methods=args.methods or DEFAULT_METHODS,
                                 metrics=args.metrics, target_class=args.target_class, steps=args.steps,
                                 root=folder, limit=args.limit,
                                 progress=lambda f: stderr_progress(f, f"{args.limit or len(paths)} images"))
    finally:
        stderr_progress.done()
    if result.skipped:
        count = len(result.skipped)
        print(f"cnnviewer: note: {count} unreadable file{'s' * (count != 1)} skipped "
              f"(first: {result.skipped[0][1]})", file=sys.stderr)
    if args.json:
        print(json.dumps({**result.summary(), "trained": model.trained}, indent=2))
        return 0
    print("\n".join(table(result, model)))
    return 0


def table(result, model) -> list[str]:
    """The evaluation as aligned text lines: a header, one row per method, and the directions."""
    from cnnviewer.engine.attribution.evaluate import better, label

    scores = result.scores()
    arrows = {"lower": "↓", "higher": "↑"}
    target = "each image's top-1" if result.target is None else f"class {result.target} ({model.label(result.target)})"
    head = f"{model.title}: {len(result.images)} images, target {target}, {result.steps} steps, {result.seconds:.1f} s"
    lines = [head]
    cells = [["method", *[f"{label(s)} {arrows.get(better(s), '')}".strip() for s in scores], "n", "seconds"]]
    for row in result.methods:
        cells.append([row.method, *[f"{row.mean(s):.3f} ± {row.sd(s):.3f}" if row.count(s) else "—" for s in scores],
                      str(max((row.count(s) for s in scores), default=0)), f"{row.seconds:.1f}"])
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    for line in cells:
        lines.append("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(line, widths))).rstrip())
    lines.append("↓ lower is better, ↑ higher is better (mean ± sd over the images)")
    return lines
