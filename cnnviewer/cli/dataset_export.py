"""`cnnviewer export dataset-map FOLDER -o OUT.png` and `cnnviewer export top-patches FOLDER --layer L
--channel C -o OUT.png`: the Dataset panel's map and top images as pictures, without a window. A
folder never indexed (for this model) is indexed first, with the progress bar."""

from __future__ import annotations

import argparse

import numpy as np

from cnnviewer.cli.common import Parser, UsageError, int_in
from cnnviewer.cli.dataset import _common, _open


def map_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer export dataset-map", description="A t-SNE map of a folder's images at a "
                    "layer (PCA to 50 dimensions first), drawn with thumbnails.")
    _common(parser, short_index_option=False)
    parser.add_argument("--layer", help="default: the penultimate layer")
    parser.add_argument("--side", type=int_in(200, 8000), default=1600, help="pixels (square)")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    return parser


def patches_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer export top-patches", description="A unit's top images (its field outlined) "
                    "beside their maximally activating patches.")
    _common(parser, short_index_option=False)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--layer", help="an indexed layer (dotted name)")
    target.add_argument("--class", dest="class_index", type=int_in(0), help="a class: its logit")
    parser.add_argument("--channel", type=int_in(0), default=0)
    parser.add_argument("-k", type=int_in(1, 400), default=9)
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    return parser


def _save(pixels: np.ndarray, path: str) -> None:
    """Through a temporary file beside `path`: a full disk leaves an earlier picture intact."""
    from PIL import Image

    from cnnviewer.engine.media.files import atomic_output
    with atomic_output(path) as temporary:
        Image.fromarray(pixels).save(temporary)
    print(path)


def run_map(args: argparse.Namespace) -> int:
    from cnnviewer.engine.dataset.embedding import dataset_map, render_map
    from cnnviewer.engine.dataset.index import retrieval_layer
    from cnnviewer.engine.media.files import writable_target

    writable_target(args.output)
    model, index = _open(args)
    layer = args.layer or retrieval_layer(index)
    if layer not in index.layers:
        raise UsageError(f"cnnviewer export dataset-map: {layer!r} is not indexed; choose one of "
                         f"{', '.join(index.layers)}")
    _save(render_map(index, dataset_map(index, layer, threads=2), side=args.side, name=model.label), args.output)
    return 0


def run_patches(args: argparse.Namespace) -> int:
    from cnnviewer.engine.dataset.names import LOGITS
    from cnnviewer.engine.dataset.sheet import top_sheet
    from cnnviewer.engine.dataset.views import unit_view
    from cnnviewer.engine.errors import CnnViewerError
    from cnnviewer.engine.media.files import writable_target
    from cnnviewer.engine.structure.summary_graph import summarize

    writable_target(args.output)
    model, index = _open(args)
    layer, channel = (LOGITS, args.class_index) if args.class_index is not None else (args.layer, args.channel)
    field = None
    if layer != LOGITS:
        size = model.preprocess.crop_size
        field = summarize(model.module, (size, size), channels=model.input_channels).fields.get(layer)
    try:
        view = unit_view(index, layer, channel, args.k, model.preprocess, field)
    except CnnViewerError as error:
        raise UsageError(f"cnnviewer export top-patches: {error}") from None
    if layer == LOGITS:
        title = f"class {channel} ({model.label(channel)})"
    else:
        title = f"{layer}, channel {channel}"
    title += f": top {len(view.images)} of {view.images_indexed:,} images"
    pictures = top_sheet(view, title)
    _save(pictures, args.output)
    return 0
