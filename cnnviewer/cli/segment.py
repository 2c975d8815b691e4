"""`cnnviewer segment IMAGE|FOLDER|VIDEO [--model NAME] [--fully-convolutional] -o OUT [--json OUT.json|-]`
(issue 25): a class map drawn over each image or frame, and per class its pixels and mean probability.

A classifier needs --fully-convolutional (its head run at every position of the whole image); a model
whose output already is a class map (N, K, h, w) (a segmentation network, your own FCN) runs on its
own centre crop, and the overlay is drawn on that crop.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from cnnviewer.cli.common import Parser, UsageError, int_in, load_model_and_image, model_options


def _opacity(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("choose an opacity from 0 to 1")
    return value


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer segment",
                    description="A class map of an image, of every image of a folder or every frame of a video, "
                                "drawn over it: a classifier run fully convolutionally, or a model whose output is "
                                "a class map.")
    parser.add_argument("image", metavar="IMAGE|FOLDER|VIDEO")
    model_options(parser)
    parser.add_argument("--fully-convolutional", action="store_true",
                        help="run a classifier whose head is global pooling + one linear layer at every position "
                             "(MobileNetV2, ResNets, EfficientNet-Lite0, most timm CNNs)")
    parser.add_argument("-o", "--output", required=True,
                        help="an image: the overlay, PNG. A folder or a video: a folder (made if missing; not the "
                             "input folder itself) with one overlay per image (its file name + .png: a.jpg.png, "
                             "so a.jpg and a.png never overwrite each other) or per frame (frame-00000.png, ...)")
    parser.add_argument("--json", metavar="OUT", help="per class: pixels and mean probability, per image or frame "
                        "for a folder or a video ('-': stdout)")
    parser.add_argument("--opacity", type=_opacity, default=0.5)
    parser.add_argument("--max-side", type=int, default=640, help="the image's longer side is scaled down to this "
                        "(--fully-convolutional)")
    parser.add_argument("--max-frames", type=int_in(1), help="a video: at most this many frames (default: all)")
    return parser


def _kind(path: Path) -> str:
    from cnnviewer.engine.media.images import IMAGE_SUFFIXES

    if path.is_dir():
        return "folder"
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    return "image" if path.suffix.lower() in IMAGE_SUFFIXES and path.suffix.lower() != ".gif" else "video"


def _output_folder(text: str, source: Path | None = None) -> Path:
    """The folder for the overlays, made if missing. Never the input folder: its own images would be
    overwritten and then read back as inputs (a subfolder is safe: a folder is read one level deep)."""
    folder = Path(text)
    if source is not None and folder.resolve() == source.resolve():
        raise UsageError(f"{folder}: is the input folder; -o must name another folder for the overlays")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: is a file; for a folder or a video, -o names a folder for the overlays")
    if not folder.parent.is_dir():
        raise UsageError(f"{folder}: the folder {folder.parent} does not exist")
    folder.mkdir(exist_ok=True)
    return folder


def _segmenter(model, args):
    """image -> (the pixels drawn on, labels and confidence at their size, the class map)."""
    from cnnviewer.engine.errors import ModelError
    from cnnviewer.engine.segmentation.fully_convolutional import class_map, fully_convolutional
    from cnnviewer.engine.segmentation.maps import model_class_map

    if args.fully_convolutional:
        split = fully_convolutional(model)

        def whole(image):
            found = class_map(model, image, split, max_side=args.max_side)
            return image.pixels, *found.at_size(*image.pixels.shape[:2]), found
        return whole

    def crop(image):
        try:
            found = model_class_map(model, image)
        except ModelError as error:
            raise UsageError(f"{error}: segment needs --fully-convolutional to run a classifier at every "
                             "position") from None
        return found.display, *found.at_size(*found.display.shape[:2]), found
    return crop


def _readable(frames, names: list[str] | None, skipped: list[dict]) -> Iterator:
    """The frames that can be read. One that cannot is recorded in `skipped` and said in one stderr line,
    held back until a frame was read: a run that reads none then fails in one line, not several."""
    from cnnviewer.engine.errors import ImageError

    read_any, tried = False, 0
    while True:
        try:
            frame = frames.read()
        except ImageError as error:
            file = names[tried] if names is not None and tried < len(names) else frames.name
            tried += 1
            text = str(error)
            skipped.append({"file": file, "reason": text.removeprefix(f"{file}: ")})
            if read_any:
                print(f"cnnviewer: warning: {text} (skipped)", file=sys.stderr)
            continue
        if frame is None:
            return
        tried += 1
        if not read_any:
            read_any = True
            for entry in skipped:
                print(f"cnnviewer: warning: {entry['file']}: {entry['reason']} (skipped)", file=sys.stderr)
        yield frame


def _nothing_read(source: Path, kind: str, skipped: list[dict]) -> UsageError:
    """The one-line error of a run that read no image or frame at all."""
    if not skipped:
        return UsageError(f"{source.name}: no frames could be read")
    first = f"{skipped[0]['file']}: {skipped[0]['reason']}"
    if kind == "image":
        return UsageError(first)
    more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
    return UsageError(f"no readable {'image' if kind == 'folder' else 'frame'} in {source.name}: {first}{more}")


def run(args: argparse.Namespace) -> int:
    if not 64 <= args.max_side <= 4096:
        raise UsageError("--max-side: choose 64 to 4096 px")
    from PIL import Image

    from cnnviewer.engine.errors import ImageError
    from cnnviewer.engine.media.files import atomic_output, writable_target
    from cnnviewer.engine.media.images import InputImage
    from cnnviewer.engine.media.kinds import image_files
    from cnnviewer.engine.media.sources import open_source
    from cnnviewer.engine.segmentation.overlay import class_table, overlay, palette

    source = Path(args.image)
    kind = _kind(source)
    if not args.fully_convolutional and not args.model and not args.weights:
        raise UsageError("segment needs --fully-convolutional to run the default classifier at every position, "
                         "or --model with a model whose output is a class map")
    output = writable_target(args.output, UsageError) if kind == "image" else \
        _output_folder(args.output, source if kind == "folder" else None)
    json_target = writable_target(args.json, UsageError) if args.json and args.json != "-" else None
    model, _ = load_model_and_image(args, need_image=False)
    segment = _segmenter(model, args)
    colours = None
    rows: list[dict] = []
    skipped: list[dict] = []     # images or frames that could not be read: said, recorded, the rest go on
    try:
        with open_source(source) as frames:
            names = [path.name for path in image_files(source)] if kind == "folder" else None
            for frame in _readable(frames, names, skipped):
                if kind == "video" and args.max_frames is not None and frame.index >= args.max_frames:
                    break
                height, width = frame.pixels.shape[:2]
                image = InputImage(frame.pixels, str(source) if kind == "image" else frame.name, (width, height))
                base, labels, confidence, found = segment(image)
                if colours is None:
                    colours = palette(max(len(model.categories), found.probabilities.shape[0]))
                picture = overlay(base, labels, colours, args.opacity)
                target = output if kind == "image" else output / (
                    f"{frame.name}.png" if kind == "folder" else f"frame-{frame.index:05d}.png")
                with atomic_output(target) as temporary:
                    Image.fromarray(picture).save(temporary, format="PNG")
                table = [{**row, "label": model.label(row["class"])} for row in class_table(labels, confidence)]
                row = {("frame" if kind == "video" else "image"): frame.index if kind == "video" else image.name,
                       "map": list(found.labels.shape), "input": list(found.input_size), "classes": table}
                if hasattr(found, "extent"):
                    row["crop"] = [round(v, 6) for v in found.extent]
                rows.append(row)
                if args.json != "-":
                    top = ", ".join(f"{r['label']} {r['pixels'] / labels.size:.0%}" for r in table[:3])
                    print(f"{image.name}: {found.labels.shape[0]}×{found.labels.shape[1]} class map; {top}",
                          file=sys.stderr)
    except ImageError as error:
        raise UsageError(str(error)) from None
    if not rows:
        raise _nothing_read(source, kind, skipped)
    header = {"model": model.title, "trained": model.trained,
              "on": "the whole image" if args.fully_convolutional else "the model's centre crop"}
    if kind == "image":
        report = {"image": str(source), **header, **{k: v for k, v in rows[0].items() if k != "image"}}
    else:
        report = {kind: str(source), **header, ("frames" if kind == "video" else "images"): rows,
                  "skipped": skipped}
    if args.json == "-":
        print(json.dumps(report, indent=1))
    elif json_target is not None:
        with atomic_output(json_target) as temporary:
            Path(temporary).write_text(json.dumps(report, indent=1), encoding="utf-8")
    if args.json != "-":
        unread = f" ({len(skipped)} skipped: unreadable)" if skipped else ""
        print(f"{len(rows)} {'overlay' if len(rows) == 1 else 'overlays'} from {model.title}; wrote {output}"
              f"{unread}", file=sys.stderr)
        if kind == "image":
            for row in rows[0]["classes"][:5]:
                print(f"{row['pixels'] / sum(r['pixels'] for r in rows[0]['classes']):7.1%}  {row['label']} "
                      f"({row['class']}), mean p {row['mean_probability']:.2f}")
    return 0
