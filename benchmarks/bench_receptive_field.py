"""Receptive-field panel: neuron click -> effective-field map, for resnet50 on the CPU.

Measures, with one torch thread as the app's job thread uses, the engine part of a click
(`GradientProbe.field`: the forward pass up to the layer when the layer or image changed,
then one backward pass) for layers at four depths: the first click on a layer and further
clicks on the same layer, interleaved. Target (issue 3): median <= 150 ms from click to map.

    .venv/bin/python benchmarks/bench_receptive_field.py [--clicks 9] [--quick]

--quick (tests/test_benchmarks.py): resnet18, one round of 2 clicks per layer: same calls, a few seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")

import torch  # noqa: E402

from cnnviewer.engine.media.images import sample_image  # noqa: E402
from cnnviewer.engine.models.catalogue import load_torchvision_model  # noqa: E402
from cnnviewer.engine.runtime.memory import keep_freed_memory  # noqa: E402
from cnnviewer.engine.structure.receptive_field import GradientProbe  # noqa: E402
from cnnviewer.engine.structure.summary_graph import summarize  # noqa: E402

TARGET_MS = 150.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="resnet18, 1 round of 2 clicks per layer")
    args = parser.parse_args()
    name, clicks, rounds = ("resnet18", 2, 1) if args.quick else ("resnet50", args.clicks, 3)
    keep_freed_memory()
    torch.set_num_threads(1)
    model = load_torchvision_model(name, device="cpu")
    image = sample_image("chelsea")
    fields = summarize(model.module, (224, 224)).fields
    print(f"{name} (random init), 224 px, 1 torch thread, {clicks} clicks per layer")
    print(f"{'layer':<10}{'field':>7}{'first click ms':>16}{'next clicks ms (median)':>25}  verdict")
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        firsts, nexts = [], []
        for _ in range(rounds):
            probe = GradientProbe()
            firsts.append(probe.field(model, image, layer, (2, 2), None, fields[layer]).milliseconds)
            for click in range(clicks):
                nexts.append(probe.field(model, image, layer, (click % 7, (3 * click) % 7), None,
                                         fields[layer]).milliseconds)
        first, following = statistics.median(firsts), statistics.median(nexts)
        ok = first <= TARGET_MS and following <= TARGET_MS
        print(f"{layer:<10}{fields[layer].size[0]:>7.0f}{first:>16.1f}{following:>25.1f}  "
              f"{'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
