"""`cnnviewer lesion FOLDER`: delete residual blocks at test time (Veit et al. 2016) and count how many
top-1 decisions survive.

Each deletable block alone, then K randomly chosen identity-skip blocks at once (R draws each), over
the images in FOLDER (and its subfolders). The agreement with the intact model's top-1 is always
measured; the accuracy too when subfolder names (class names or ImageNet synsets) or a labels.csv give
every image its class. Blocks that change resolution or channels cannot be skipped: they are listed
with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

from cnnviewer.cli.common import Parser, UsageError, int_in, model_options


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer lesion", description="Lesion study: delete each residual block alone, then "
                    "random sets of blocks, and measure the agreement with the intact model's top-1 "
                    "(and the accuracy when subfolders or a labels.csv name the classes).")
    parser.add_argument("folder", help="a folder of images (directly inside it, or in one subfolder per class)")
    model_options(parser)
    parser.add_argument("--limit", type=int_in(1), help="only the first N images, in name order")
    parser.add_argument("--random", type=int_in(0, 64), default=6, metavar="K",
                        help="delete 1..K random identity-skip blocks at once (default 6; 0: none)")
    parser.add_argument("--repeats", type=int_in(1, 100), default=5, metavar="R",
                        help="random draws per number of deleted blocks (default 5)")
    parser.add_argument("--seed", type=int_in(0), default=0, help="seed of the random draws (default 0)")
    parser.add_argument("--batch", type=int_in(1, 256), default=16, help="images per forward pass (default 16)")
    parser.add_argument("--json", metavar="OUT", help="write the result as JSON to OUT ('-': standard output)")
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnviewer.cli.common import load_model_and_image, stderr_progress
    from cnnviewer.engine.experiments.lesion import (
        folder_images,
        folder_labels,
        lesion_study,
    )
    from cnnviewer.engine.media.files import atomic_output, writable_target

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UsageError(f"{args.folder}: not a folder")
    if args.json and args.json != "-":
        writable_target(args.json, UsageError)
    try:
        paths = folder_images(folder)
    except OSError as error:
        raise UsageError(f"{args.folder}: cannot be listed ({error.strerror or error})") from None
    if not paths:
        raise UsageError(f"{args.folder}: no image files in this folder or its subfolders")
    side = SimpleNamespace(image=None, model=args.model, weights=args.weights, labels=args.labels,
                           trust=args.trust, device=args.device, precision=args.precision)
    model, _ = load_model_and_image(side, need_image=False)
    try:
        labels = folder_labels(folder, model, paths)
    except (OSError, UnicodeDecodeError) as error:      # an unreadable labels.csv
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8 text"
        raise UsageError(f"{args.folder}: its labels.csv could not be read ({reason})") from None
    if args.limit:
        paths = paths[:args.limit]
        labels = labels[:args.limit] if labels is not None else None
    try:
        result = lesion_study(model, paths, labels=labels, random_counts=range(1, args.random + 1),
                              repeats=args.repeats, seed=args.seed, batch=args.batch,
                              progress=lambda f: stderr_progress(f, f"{len(paths)} images"))
    except ValueError as error:
        raise UsageError(f"{args.folder}: {error}") from None
    finally:
        stderr_progress.done()
    if result.skipped:
        count = len(result.skipped)
        print(f"cnnviewer: note: {count} unreadable file{'s' * (count != 1)} skipped "
              f"(first: {result.skipped[0][1]})", file=sys.stderr)
    if args.json == "-":
        print(json.dumps(result.to_json(), indent=2))
        return 0
    if args.json:
        with atomic_output(args.json) as temp:
            temp.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    print("\n".join(table(result, model.title)))
    return 0


def table(result, title: str) -> list[str]:
    """The study as text: one line per block, then the random-deletion curve."""
    labelled = result.intact_accuracy is not None
    head = f"{title}: {len(result.images)} images, {result.forwards} image passes, {result.seconds:.1f} s"
    if labelled:
        head += f"; intact accuracy {result.intact_accuracy:.3f}"
    lines = [head, f"{'block':<14}{'skip':<12}{'agreement':>10}" + (f"{'accuracy':>10}" if labelled else "")]
    for block, lesion in zip(result.blocks, result.per_block):
        if lesion.agreement is None:
            lines.append(f"{block.name:<14}{block.skip:<12}{'—':>10}  {block.reason}")
            continue
        line = f"{block.name:<14}{block.skip:<12}{lesion.agreement:>10.3f}"
        if labelled:
            line += f"{lesion.accuracy:>10.3f}"
        lines.append(line + ("  (the projection kept)" if block.skip == "projection" else ""))
    if result.random:
        lines.append("random identity-skip blocks deleted at once (mean ± sd over the draws):")
        for entry in result.random:
            line = f"  {entry.count:>2} blocks  agreement {entry.agreement_mean:.3f} ± {entry.agreement_sd:.3f}"
            if labelled:
                line += f"  accuracy {entry.accuracy_mean:.3f} ± {entry.accuracy_sd:.3f}"
            lines.append(line)
    lines.append("agreement: share of images whose top-1 is the intact model's top-1")
    return lines
