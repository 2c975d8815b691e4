"""`cnnviewer index FOLDER`, `cnnviewer top FOLDER`, `cnnviewer neighbours FOLDER IMAGE`: the dataset
explorer without a window. A folder never indexed (for this model) is indexed first."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from cnnviewer.cli.common import Parser, UsageError, int_in, model_options


def _common(parser: argparse.ArgumentParser, short_index_option: bool = True) -> None:
    parser.add_argument("folder", help="a folder of images (searched recursively)")
    model_options(parser)
    parser.add_argument("--batch-size", type=int_in(1, 1024), default=32)
    parser.add_argument("--workers", type=int_in(0, 64), default=1 if (os.cpu_count() or 1) >= 2 else 0,
                        help="decoding processes beside this one (default 1 with 2 CPUs or more, else 0): "
                             "images decode while the model runs")
    names = ("-o", "--index-dir") if short_index_option else ("--index-dir",)   # export: -o is the picture
    parser.add_argument(*names, dest="index_dir", help="where the index is kept (default: the user's cache)")


def index_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer index", description="Index a folder of images: per unit, its maximum "
                    "activation in every image, where, and its mean.")
    _common(parser)
    parser.add_argument("--layers", nargs="+", help="layers to index (default: the top-level blocks and the logits)")
    return parser


def top_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer top", description="The images of a folder where one unit fires most.")
    _common(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--layer", help="an indexed layer (dotted name)")
    target.add_argument("--class", dest="class_index", type=int_in(0), help="a class: its logit")
    parser.add_argument("--channel", type=int_in(0), default=0)
    parser.add_argument("--neuron", type=int_in(0), nargs=2, metavar=("Y", "X"),
                        help="rank by the channel's value at this position (reads the images again) instead of "
                             "its maximum anywhere in the map")
    parser.add_argument("-k", type=int_in(1, 10000), default=9)
    parser.add_argument("--json", action="store_true")
    return parser


def neighbours_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer neighbours", description="The images of a folder most like IMAGE in the "
                    "feature space of a layer (cosine similarity of its pooled features).")
    _common(parser)
    parser.add_argument("image")
    parser.add_argument("--layer", help="default: the last indexed layer before the logits")
    parser.add_argument("-k", type=int_in(1, 10000), default=9)
    parser.add_argument("--json", action="store_true")
    return parser


def _open(args: argparse.Namespace, layers=None, need_images: bool = True):
    """The model and the folder's index (built or updated first, with a progress bar). Under torchrun
    every process runs this; each takes its shard, rank 0 merges and alone draws the progress bar."""
    model, index, _updated = _open_updated(args, layers, need_images)
    return model, index


def _open_updated(args: argparse.Namespace, layers=None, need_images: bool = True):
    """`_open`, and whether this run changed the index (False: it was up to date, nothing was read,
    and its manifest's read/seconds are those of the run that built it)."""
    from cnnviewer.cli.common import load_model_and_image, stderr_progress
    from cnnviewer.engine.dataset.store import current_generation
    from cnnviewer.engine.dataset.build import build_index
    from cnnviewer.engine.dataset.index import default_directory, recorded_layers
    from cnnviewer.engine.dataset.progress import RateMeter
    from cnnviewer.engine.dataset.sharding import distributed_world

    world = distributed_world()
    device = args.device
    if world is not None and device is None:
        import torch
        if torch.cuda.is_available():   # one GPU per process, as torchrun numbers them
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    side = SimpleNamespace(image=None, model=args.model, weights=args.weights, labels=args.labels,
                           trust=args.trust, device=device, precision=args.precision)
    model, _ = load_model_and_image(side, need_image=False)
    _cap_workers(args)
    directory = Path(args.index_dir) if args.index_dir else default_directory(args.folder, model)
    if layers is None:     # keep what was indexed (even when an array is damaged); only refresh changed files
        layers = recorded_layers(directory)
    meter = RateMeter()
    show = world is None or world[0] == 0
    before = current_generation(directory)   # a build that changes anything publishes a new generation
    try:
        index = build_index(args.folder, model, directory, layers=layers, batch_size=args.batch_size,
                            workers=args.workers,
                            progress=lambda done, total: show and stderr_progress(done / total, meter(done, total)))
    finally:
        stderr_progress.done()
    if need_images and not len(index.valid_rows):
        count = len(index.skipped)
        raise UsageError(f"no readable image under {args.folder} ({count} file{'s' * (count != 1)} could not be "
                         "read; `cnnviewer index` lists why)")
    return model, index, before is None or index.directory.resolve() != before.resolve()


def _cap_workers(args: argparse.Namespace) -> None:
    """More decoding processes than CPUs only cost memory (~0.5 GB each): capped, with a note."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if args.workers > cpus:
        print(f"cnnviewer: note: --workers {args.workers} is more than the {cpus} CPUs here; using {cpus}",
              file=sys.stderr)
        args.workers = cpus


def shown(path) -> str:
    """A path on one line of text output: control characters (a newline in a file name) escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(path))


def run_index(args: argparse.Namespace) -> int:
    from cnnviewer.engine.dataset.sharding import distributed_world

    _model, index, updated = _open_updated(args, args.layers, need_images=False)
    world = distributed_world()
    if world is not None and world[0] != 0:
        return 0                      # rank 0 reports for all
    manifest = index.manifest
    if not updated:                   # the manifest's read and seconds are the first build's: not this run's
        print(f"{index.root}: up to date, nothing read again ({len(manifest['images'])} images indexed, "
              f"{len(manifest['skipped'])} skipped; {len(manifest['layers'])} layers)")
        for row in manifest["skipped"]:
            print(f"  skipped: {shown(row['reason'])}", file=sys.stderr)
        return 0
    read = manifest["read"]
    speed = f", {read / manifest['seconds']:.1f} images/s" if read and manifest["seconds"] else ""
    print(f"{index.root}: {len(manifest['images'])} images indexed ({read} read, "
          f"{manifest['reused']} unchanged), {len(manifest['skipped'])} skipped, {manifest['seconds']:.1f} s{speed}; "
          f"{len(manifest['layers'])} layers" + (f"; {world[1]} processes" if world else ""))
    for row in manifest["skipped"]:
        print(f"  skipped: {shown(row['reason'])}", file=sys.stderr)
    return 0


def run_top(args: argparse.Namespace) -> int:
    from cnnviewer.engine.dataset.names import LOGITS
    from cnnviewer.engine.dataset.patches import patch_box
    from cnnviewer.engine.errors import CnnViewerError
    from cnnviewer.engine.structure.summary_graph import summarize

    model, index = _open(args)
    layer, channel = (LOGITS, args.class_index) if args.class_index is not None else (args.layer, args.channel)
    try:
        if args.neuron is not None:
            hits = _neuron_top(args, model, index, layer, channel)
        else:
            hits = index.top(layer, channel, args.k)
    except CnnViewerError as error:
        raise UsageError(f"cnnviewer top: {error}") from None
    size = model.preprocess.crop_size
    field = summarize(model.module, (size, size), channels=model.input_channels).fields.get(layer)
    boxes = [patch_box(field, hit.position, hit.original_size, model.preprocess) if field else None for hit in hits]
    if args.json:
        print(json.dumps([{"path": str(h.path), "activation": h.value, "y": h.position[0], "x": h.position[1],
                           "box": [round(v, 2) for v in box] if box else None} for h, box in zip(hits, boxes)],
                         indent=1))
        return 0
    for hit, box in zip(hits, boxes):
        where = f"patch x {box[0]:.0f}..{box[2]:.0f}, y {box[1]:.0f}..{box[3]:.0f}" if box else "whole image"
        print(f"{hit.value:10.4f}  (y={hit.position[0]}, x={hit.position[1]}; {where})  {shown(hit.path)}")
    return 0


def _neuron_top(args: argparse.Namespace, model, index, layer: str, channel: int):
    """The exact top-k of one neuron: every indexed image read again, up to `layer` only."""
    from cnnviewer.cli.common import stderr_progress
    from cnnviewer.engine.dataset.neuron import NeuronScan
    from cnnviewer.engine.dataset.progress import RateMeter

    scan = NeuronScan(model, index, layer, channel, tuple(args.neuron), batch_size=args.batch_size,
                      workers=args.workers)
    meter = RateMeter()
    try:
        scan.run(progress=lambda done, total: stderr_progress(done / total, meter(done, total)))
    finally:
        stderr_progress.done()
    return scan.top(args.k)


def run_neighbours(args: argparse.Namespace) -> int:
    from cnnviewer.engine.dataset.extract import extract
    from cnnviewer.engine.dataset.index import retrieval_layer
    from cnnviewer.engine.media.files import regular_file

    model, index = _open(args)
    layer = args.layer or retrieval_layer(index)
    if layer not in index.layers:
        raise UsageError(f"cnnviewer neighbours: {layer!r} is not indexed; choose one of {', '.join(index.layers)}")
    stats, _ = next(extract(model, [regular_file(args.image)], [layer]))
    if not stats.indices:
        raise UsageError(f"cnnviewer neighbours: {stats.skipped[0][1]}")
    found = index.neighbours(stats.means[layer][0], layer, args.k)
    if args.json:
        print(json.dumps([{"path": str(path), "similarity": value} for path, value in found], indent=1))
        return 0
    for path, similarity in found:
        print(f"{similarity:7.4f}  {shown(path)}")
    return 0
