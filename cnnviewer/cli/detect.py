"""`cnnviewer detect SOURCE`: detections per frame of a video, an image or a folder."""

from __future__ import annotations

import argparse
import json
import sys

from cnnviewer.cli.common import Parser, UsageError


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer detect", description="Detect faces (MTCNN, offline) or COCO objects "
                     "(torchvision detectors) in a video file, an image, or a folder of images.")
    parser.add_argument("source", help="a video file, an image, or a folder of images")
    parser.add_argument("--detector", default="mtcnn", help="mtcnn (default), or a torchvision detection model")
    parser.add_argument("--weights", help="custom weights for a torchvision detector (state dict, checkpoint, "
                        "safetensors)")
    parser.add_argument("--score", type=float, help="score threshold (default: the detector's own, 0.9 for mtcnn, "
                        "else 0.5)")
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--json", help="write all detections, COCO-style, to this file")
    parser.add_argument("--save-frames", help="write annotated frames (PNG) to this folder")
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"))
    return parser


def _refuse_segmenter(name: str) -> None:
    """make_detector also builds segmenters (for the Live panel); here one would find no boxes and print
    '0 detections' for every frame, so it is refused and `cnnviewer segment` named instead."""
    from cnnviewer.engine.segmentation.live import FULLY_CONVOLUTIONAL, is_segmenter

    if not is_segmenter(name):
        return
    if name.endswith(FULLY_CONVOLUTIONAL):
        use = f"cnnviewer segment SOURCE --fully-convolutional --model {name.removesuffix(FULLY_CONVOLUTIONAL)}"
    else:
        use = f"cnnviewer segment SOURCE --model {name}"
    raise UsageError(f"cnnviewer detect: {name} is a segmentation model (a class map, no boxes); use {use} -o OUT")


def run(args: argparse.Namespace) -> int:
    """Per-frame detections on stdout; optional COCO JSON and annotated frames.

    A frame that cannot be read is reported on stderr and skipped; the rest go on.
    """
    from pathlib import Path

    from PIL import Image

    from cnnviewer.engine.detection.detectors import make_detector
    from cnnviewer.engine.detection.overlay import (
        apply_thresholds,
        coco_records,
        default_score,
        draw,
    )
    from cnnviewer.engine.errors import ImageError
    from cnnviewer.engine.media.sources import VideoFile, open_source
    from cnnviewer.engine.runtime.device import pick_device

    _refuse_segmenter(args.detector)
    args.score = default_score(args.detector) if args.score is None else args.score
    if not 0 <= args.score <= 1 or not 0 <= args.iou <= 1:
        raise UsageError("cnnviewer detect: --score and --iou are between 0 and 1")
    source = open_source(args.source)
    detector = make_detector(args.detector, str(pick_device(args.device)), weights=args.weights)
    if not detector.trained:
        print(f"cnnviewer: warning: {detector.name} is untrained (no COCO weights in the torch hub cache): "
              "random weights", file=sys.stderr)
    from cnnviewer.engine.media.files import atomic_output, writable_target

    records, out = [], Path(args.save_frames) if args.save_frames else None
    if args.json:
        writable_target(args.json)
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cnnviewer detect: --save-frames {out}: {error.strerror or error}") from None
        writable_target(out / "frame.png")
    unread: list[str] = []   # bad frames before the first good one: an error if no frame is readable at all
    read_any = False
    with source:
        while True:
            try:
                frame = source.read()
            except ImageError as error:
                if read_any:
                    print(f"warning: {error}", file=sys.stderr)
                else:
                    unread.append(str(error))
                continue
            if frame is None:
                break
            if not read_any:
                read_any = True
                for text in unread:
                    print(f"warning: {text}", file=sys.stderr)
            found = apply_thresholds(detector.raw(frame.pixels), args.score, args.iou)
            boxes = ", ".join(f"{d.label} {d.score:.2f} [{', '.join(f'{v:.0f}' for v in d.box)}]" for d in found)
            print(f"{frame.name}: {len(found)} detection{'s' if len(found) != 1 else ''}"
                  + (f": {boxes}" if found else ""), flush=True)
            records += coco_records(frame, found)
            if out is not None:
                stem = f"{Path(source.name).stem}-{frame.index:06d}" if isinstance(source, VideoFile) \
                    else Path(frame.name).stem
                with atomic_output(out / f"{stem}.png") as temporary:
                    Image.fromarray(draw(frame.pixels, found)).save(temporary, format="PNG")
    if not read_any:
        more = f" (and {len(unread) - 1} more)" if len(unread) > 1 else ""
        raise ImageError(f"no readable frame in {Path(args.source).name}: {unread[0] if unread else 'empty'}{more}")
    if args.json:
        with atomic_output(args.json) as temporary:
            temporary.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return 0
