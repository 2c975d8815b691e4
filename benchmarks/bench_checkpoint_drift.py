"""A training run's drift plot: a pass from scratch against a pass after Follow adds one checkpoint.

The real ImageNet MobileNetV2, N checkpoints of it (parameters perturbed progressively, torch.save),
the chelsea photo, one torch thread, the layer features.3. Side by side, interleaved:
  scratch  series_drift with no cache: every checkpoint read, fitted and run (what every listing,
           image or layer change cost before the DriftCache);
  arrival  a new checkpoint joins the series and series_drift runs with the cache of the pass before:
           only the new one is read and run;
  slider   one slider load of a checkpoint not in the series' cache (what a move waits for at most
           now that the drift runs a checkpoint per job, instead of behind a whole pass).

    .venv/bin/python benchmarks/bench_checkpoint_drift.py [--checkpoints 12] [--rounds 3] [--quick]

--quick (tests/test_benchmarks.py): 4 checkpoints, one round; figures are indicative only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CNNVIEWER_OFFLINE", "1")
sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, rounds = (4, 1) if args.quick else (args.checkpoints, args.rounds)

    import torch
    torch.set_num_threads(1)
    from cnnviewer.engine.media.images import sample_image
    from cnnviewer.engine.models.checkpoint_drift import DriftCache, series_drift
    from cnnviewer.engine.models.checkpoints import (
        CheckpointSeries,
        describe_entry,
        list_checkpoints,
    )
    from cnnviewer.engine.models.loading import load_model

    model = load_model("mobilenet_v2")
    state = model.module.state_dict()
    params = dict(model.module.named_parameters())
    generator = torch.Generator().manual_seed(0)
    noise = {k: torch.randn(v.shape, generator=generator) * 0.01 * float(v.std()) if k in params and v.numel() > 1
             else None for k, v in state.items()}

    def save(folder: Path, k: int) -> Path:
        path = folder / f"epoch={k}-step={500 * k}.ckpt"
        torch.save({"state_dict": {key: v + k * noise[key] if noise[key] is not None else v
                                   for key, v in state.items()}, "epoch": k, "global_step": 500 * k}, path)
        return path

    image = sample_image("chelsea")
    scratch, arrival, slider = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            folder = Path(tmp) / f"run{round_}"
            folder.mkdir()
            for k in range(count - 1):
                save(folder, k)
            series = CheckpointSeries(folder, list_checkpoints(folder), model)
            cache = DriftCache()
            list(series_drift(series, image, "features.3", cache=cache))   # the pass before the arrival
            new = save(folder, count - 1)
            series.add(describe_entry(new, new))
            start = time.perf_counter()
            list(series_drift(series, image, "features.3", cache=cache))
            arrival.append(time.perf_counter() - start)
            start = time.perf_counter()
            list(series_drift(series, image, "features.3"))
            scratch.append(time.perf_counter() - start)
            start = time.perf_counter()
            series.model(count - 2)
            slider.append(time.perf_counter() - start)
    s, a, m = statistics.median(scratch), statistics.median(arrival), statistics.median(slider)
    print(f"{count} checkpoints of mobilenet_v2, layer features.3, {rounds} round(s), median seconds")
    print(f"drift pass from scratch          {s:8.3f}")
    print(f"drift pass after one arrival     {a:8.3f}")
    print(f"one slider load (cold)           {m:8.3f}")
    print(f"scratch / arrival ratio {s / a:.1f}   scratch / slider load ratio {s / m:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
