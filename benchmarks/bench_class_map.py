"""The Input panel's class map: building it on the job thread, and redrawing it on the GUI thread.

1. Upsampling the class map (Workbench.class_map): per 2×2 block only the classes that can win
   (class_map_build.upsampled_argmax) ÷ all classes through F.interpolate then max, side by side on the
   same maps: fully convolutional MobileNetV2 (real weights, 1000 classes, 14×14 → 448×448) on three
   photos; labels must be equal. One torch thread.
2. Redraw after a legend click / an opacity change on a 520×520 map (ImageCanvas offscreen, repaint
   included): the cached colour image with its alpha rewritten ÷ blending the whole picture again with
   overlay.overlay; target < 10 ms.

    .venv/bin/python benchmarks/bench_class_map.py [--repeats 5] [--quick]

--quick (tests/test_benchmarks.py): one photo, one repeat, a 128×128 redraw.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CNNVIEWER_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def _median_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def upsampling(repeats: int, quick: bool) -> None:
    from PIL import Image
    from skimage import data

    from cnnviewer.engine.media.images import InputImage
    from cnnviewer.engine.models.loading import load_model
    from cnnviewer.engine.runtime.inference import prepare_input
    from cnnviewer.engine.segmentation.class_map_build import upsampled_argmax
    from cnnviewer.engine.segmentation.fully_convolutional import fully_convolutional_model

    model = fully_convolutional_model(load_model("mobilenet_v2"))
    both = Image.new("RGB", (600, 300))
    both.paste(Image.fromarray(data.chelsea()).resize((300, 300)), (0, 0))
    both.paste(Image.fromarray(data.coffee()).resize((300, 300)), (300, 0))
    photos = [("cat|coffee", np.asarray(both)), ("astronaut", data.astronaut()), ("chelsea", data.chelsea())]
    for name, pixels in photos[:1] if quick else photos:
        image = InputImage(np.ascontiguousarray(pixels), name, (pixels.shape[1], pixels.shape[0]))
        with torch.inference_mode():
            probabilities = torch.softmax(model.module(prepare_input(image, model.preprocess, model.device).tensor)[0], 0)
        size = model.preprocess.crop_size

        def everything():
            return F.interpolate(probabilities[None], size=(size, size), mode="bilinear",
                                 align_corners=False)[0].max(dim=0)

        start = time.perf_counter()
        expected = everything()
        full = 1000 * (time.perf_counter() - start) if repeats == 1 else _median_ms(everything, repeats)
        blocks = _median_ms(lambda: upsampled_argmax(probabilities, size, size), repeats)
        same = bool((upsampled_argmax(probabilities, size, size)[0] == expected[1]).all())
        print(f"upsampling {name:<10} {tuple(probabilities.shape)} -> {size}x{size}  all classes {full:.0f} ms  "
              f"per block {blocks:.0f} ms  ratio {full / blocks:.1f}  same labels {same}")


def redraw(repeats: int, quick: bool) -> None:
    from PySide6.QtCore import QRectF
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    import pyqtgraph as pg

    pg.setConfigOptions(imageAxisOrder="row-major")
    from cnnviewer.engine.segmentation.class_map_view import ClassMapView, coloured, shown_alpha
    from cnnviewer.engine.segmentation.overlay import overlay, palette
    from cnnviewer.ui.widgets.image_canvas import ImageCanvas

    side = 128 if quick else 520
    labels = (np.add.outer(np.arange(side) // 40, np.arange(side) // 40) % 21).astype(np.int32)
    view = ClassMapView(0, None, labels, np.ones((side, side), np.float32), (side, side), labels, (),
                        palette(21), (0.0, 0.0, 1.0, 1.0))
    photo = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    canvas = ImageCanvas()
    canvas.resize(500, 500)
    canvas.show()
    canvas.show_image(photo)
    rgba = coloured(view)
    rect = QRectF(0, 0, side, side)
    canvas.show_overlay(rgba, rect, 0.5)
    app.processEvents()
    state = {"solo": 0, "opacity": 0.2}

    def legend_click():
        state["solo"] = (state["solo"] + 1) % 21
        rgba[..., 3] = shown_alpha(view, {state["solo"]})
        canvas.show_overlay(rgba, rect, 0.5)
        canvas.viewport().repaint()

    def opacity():
        state["opacity"] = 1.0 - state["opacity"]
        canvas.set_overlay_opacity(state["opacity"])
        canvas.viewport().repaint()

    def blend_again():
        state["solo"] = (state["solo"] + 1) % 21
        canvas.show_image(overlay(photo, labels, view.colours, 0.5, {state["solo"]}), keep_view=True)
        canvas.viewport().repaint()

    count = max(repeats * 6, 5)
    click, dim, blend = (_median_ms(f, count) for f in (legend_click, opacity, blend_again))
    verdict = "PASS" if max(click, dim) < 10 else "FAIL"
    print(f"redraw {side}x{side}  legend click {click:.1f} ms  opacity {dim:.1f} ms  "
          f"blend again {blend:.1f} ms  ratio {blend / click:.1f}  {verdict} (< 10 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    torch.set_num_threads(1)
    repeats = 1 if options.quick else options.repeats
    upsampling(repeats, options.quick)
    redraw(repeats, options.quick)


if __name__ == "__main__":
    main()
