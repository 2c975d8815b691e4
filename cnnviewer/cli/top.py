"""`cnnviewer top FOLDER --layer NAME --channel C` (see cli/dataset.py), with `--ablate`.

With knock-outs the folder is indexed again by the intervened model, into its own index folder
(next to the intact model's, keyed by the knock-outs too), so the intact index is never overwritten
by activations of another computation.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

from cnnviewer.cli.common import UsageError, ablate_option, pending_ablations
from cnnviewer.cli.dataset import run_top
from cnnviewer.cli.dataset import top_parser as _top_parser


def parser() -> argparse.ArgumentParser:
    parser = _top_parser()
    ablate_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    if not args.ablate:
        return run_top(args)
    from cnnviewer.engine.experiments.ablate_spec import parse_ablation
    if any(parse_ablation(spec).mode == "mean" for spec in args.ablate):
        raise UsageError("cnnviewer top: --ablate ...:mean needs an input image; use zero or scale=F")
    if args.index_dir is None:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnviewer" / "index"
        key = "|".join([str(Path(args.folder).resolve()), str(args.model), str(args.weights), *args.ablate])
        args.index_dir = str(root / ("ablated-" + hashlib.sha256(key.encode()).hexdigest()[:20]))
    pending_ablations[:] = args.ablate
    try:
        return run_top(args)
    finally:
        pending_ablations.clear()
