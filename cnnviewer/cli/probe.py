"""`cnnviewer probe IMAGE|FOLDER`: how equivariant and how invariant each layer is to a transform.

Per layer (depth order): the equivariance error ‖φ(T x) − T′φ(x)‖ / ‖T′φ(x)‖ (0: the map moves exactly
with the input), the cosine of the globally pooled features (1: invariant), and the cosine of the raw
maps compared position for position. A folder gives the mean over its images and Zhang 2019's
consistency (the share of random shift pairs whose top-1 classes agree).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

from cnnviewer.cli.common import Parser, UsageError, int_in, model_options

TRANSFORMS = ("shift", "flip", "rotate", "scale")


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer probe", description="Equivariance and invariance of every layer to a "
                    "shift, flip, rotation or scaling of the input (a folder: the mean over its images and "
                    "Zhang 2019's shift consistency).")
    parser.add_argument("source", metavar="IMAGE|FOLDER", help="an image, or a folder of images")
    parser.add_argument("--transform", choices=TRANSFORMS, default="shift",
                        help="shift (px), flip (horizontal), rotate (degrees), scale (factors); default shift")
    parser.add_argument("--amounts", nargs="+", type=float, metavar="A",
                        help="default: shifts 1 2 3 px and the layers' jumps; rotations ±1 ±2 ±5 ±10°; "
                             "scales 0.8 … 1.25")
    parser.add_argument("--boundary", choices=("crop", "wrap"), default="crop",
                        help="shifts: move the crop over the photo (crop, default) or roll it (wrap)")
    model_options(parser)
    parser.add_argument("--layers", nargs="+", metavar="LAYER", help="module names (default: every layer)")
    parser.add_argument("--limit", type=int_in(1), help="a folder: only the first N images, in name order")
    parser.add_argument("--pairs", type=int_in(1, 1000), default=5,
                        help="a folder: random shift pairs per image for the consistency (default 5)")
    parser.add_argument("--json", metavar="OUT|-", help="write the result as JSON to OUT, or to stdout with -")
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnviewer.cli.common import load_model_and_image, stderr_progress
    from cnnviewer.engine.errors import ImageError
    from cnnviewer.engine.experiments.consistency import consistency_details
    from cnnviewer.engine.experiments.equivariance import probe
    from cnnviewer.engine.media.images import load_image
    from cnnviewer.engine.experiments.lesion import folder_images
    from cnnviewer.engine.workbench import Workbench

    source = Path(args.source)
    if not source.exists():
        raise UsageError(f"{args.source}: no such file or folder")
    if source.is_dir():
        try:
            paths = folder_images(source)       # subfolders too, as the lesion study
            paths = paths[:args.limit] if args.limit else paths
        except OSError as error:
            raise UsageError(f"{args.source}: cannot be listed ({error.strerror or error})") from None
        if not paths:
            raise UsageError(f"{args.source}: no image files in this folder or its subfolders")
    else:
        paths = [source]
    side = SimpleNamespace(image=None, model=args.model, weights=args.weights, labels=args.labels,
                           trust=args.trust, device=args.device, precision=args.precision)
    model, _ = load_model_and_image(side, need_image=False)
    summary = Workbench().summary(model)
    results, skipped = [], []
    try:
        for number, path in enumerate(paths):
            try:
                image = load_image(path)
            except ImageError as error:
                if len(paths) == 1:
                    raise
                skipped.append(str(error))
                continue
            try:
                results.append(probe(model, image, args.transform, args.amounts, layers=args.layers,
                                     boundary=args.boundary, summary=summary,
                                     progress=lambda f, n=number, name=path.name:
                                     stderr_progress((n + f) / len(paths), name)))
            except ValueError as error:
                raise UsageError(str(error)) from None
        found = None
        if len(paths) > 1 and results:
            found = consistency_details(model, paths, pairs=args.pairs,
                                        progress=lambda f: stderr_progress(f, "consistency"))
    finally:
        stderr_progress.done()
    if not results:
        raise UsageError(f"{args.source}: no readable image")
    for line in skipped[:1]:
        print(f"cnnviewer: note: {len(skipped)} unreadable file(s) skipped (first: {line})", file=sys.stderr)
    data = summary_json(results, found, model)
    if args.json:
        text = json.dumps(data, indent=1)
        if args.json == "-":
            print(text)
        else:
            from cnnviewer.engine.media.files import atomic_output
            with atomic_output(args.json) as temp:
                temp.write_text(text + "\n", encoding="utf-8")
        if args.json == "-":
            return 0
    print("\n".join(table(data)))
    return 0


def summary_json(results: list, found, model) -> dict:
    """One image: its ProbeResult as JSON; several: the mean over images (NaN-aware) and the consistency."""
    import numpy as np

    if len(results) == 1 and found is None:
        return {**results[0].to_json(), "images": 1, "trained": model.trained}
    first = results[0]
    if any(r.layers != first.layers or r.amounts != first.amounts for r in results):
        raise UsageError("the images gave different layers or amounts; use --layers and --amounts")

    def mean(name: str) -> list:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN cells stay None
            values = np.nanmean(np.stack([getattr(r, name) for r in results]), axis=0)
        return [[None if not math.isfinite(v) else round(float(v), 6) for v in row] for row in values]

    data = first.to_json()
    data.update({"image": None, "images": len(results), "equivariance_error": mean("equivariance"),
                 "invariance_cosine": mean("invariance"), "map_similarity": mean("map_similarity"),
                 "top1": [list(r.top1) for r in results], "top1_labels": [list(r.labels) for r in results],
                 "reference_top1": [r.reference_top1 for r in results],
                 "seconds": round(sum(r.seconds for r in results), 3), "forwards": sum(r.forwards for r in results),
                 "trained": model.trained})
    if found is not None:
        data["consistency"] = found.to_json()
    return data


def table(data: dict) -> list[str]:
    """The result as aligned text: one row per layer with the means over the amounts."""
    unit = {"shift": " px", "rotate": "°", "scale": "×", "flip": ""}[data["transform"]]
    amounts = " ".join(f"{a:g}{unit}" for a in data["amounts"]) if data["transform"] != "flip" else "horizontal"
    images = f"{data['images']} images" if data["images"] > 1 else data["image"]
    lines = [(f"{data['model']}: {data['transform']} ({amounts}), boundary {data['boundary']}, {images}, "
             f"{len(data['layers'])} layers, {data['seconds']:.1f} s"),
             ("equivariance error: 0 = the map moves exactly with the input ('—': no whole step, or no map); "
             "invariance: cosine of pooled features; map: cosine of the raw maps, nothing moved back")]
    width = max(len(name) for name in data["layers"])
    lines.append(f"{'layer':<{width}}  {'type':<20}{'jump':>6}{'equivariance':>14}{'invariance':>12}{'map':>8}")

    def average(row: list) -> str:
        values = [v for v in row if v is not None]
        return f"{sum(values) / len(values):.4f}" if values else "—"

    for i, name in enumerate(data["layers"]):
        jump = data["jumps"][i]
        lines.append(f"{name:<{width}}  {data['layer_types'][i][:19]:<20}{'—' if jump is None else f'{jump:g}':>6}"
                     f"{average(data['equivariance_error'][i]):>14}{average(data['invariance_cosine'][i]):>12}"
                     f"{average(data['map_similarity'][i]):>8}")
    if data["images"] == 1:
        labels = ", ".join(f"{a:g}{unit}: {label}" for a, label in zip(data["amounts"], data["top1_labels"]))
        lines.append(f"top-1 per amount: {labels}")
    if "consistency" in data:
        c = data["consistency"]
        lines.append(f"consistency (Zhang 2019): {c['value']:.3f} of {c['pairs']} random shift pairs agree on the "
                     f"top-1 (offsets 0-31 px)")
    return lines
