"""Channel importance: knocking out each of a layer's C channels, batched, against C plain forwards.

One torch thread (the app's job thread), real MobileNetV2 weights (offline package), the cat photo.
For each layer, side by side in one run, batch 32:
- graph: `channel_importance` as the app runs it (the network traced and cut at the layer: the part
  before it runs once, the rest on batches of 32 knocked-out copies) ÷ C × the median plain forward
  pass (interleaved repetitions); goal <= 0.6;
- hook: the fallback for untraceable models (a forward hook returns the batch of copies; the part
  before the layer runs once per batch);
- without --quick also "inputs" (32 whole inputs per pass, as AblationCAM batches) and Captum's
  LayerFeatureAblation (32 perturbations per evaluation) on the same layer.

    .venv/bin/python benchmarks/bench_importance.py [--reps 3] [--quick]

--quick (tests/test_benchmarks.py): 112 px input, one repetition, no inputs/Captum columns.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.experiments.importance import channel_importance
from cnnviewer.engine.models.handle import Preprocess
from cnnviewer.engine.runtime.memory import keep_freed_memory

LAYERS = ("features.4", "features.14", "features.17")   # early (32 ch, 28 px), middle (160, 7 px), late (320, 7 px)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="112 px, one repetition, no Captum")
    args = parser.parse_args()
    reps, size = (1, 112) if args.quick else (args.reps, 224)
    keep_freed_memory()
    torch.set_num_threads(1)
    import dataclasses

    from skimage import data

    from cnnviewer.engine.media.images import from_array
    from cnnviewer.engine.models.loading import load_model
    from cnnviewer.engine.runtime.inference import prepare_input

    model = load_model("mobilenet_v2")
    model = dataclasses.replace(model, preprocess=Preprocess(resize_size=size * 8 // 7, crop_size=size))
    x = prepare_input(from_array(data.chelsea(), "chelsea"), model.preprocess, model.device, model.dtype).tensor
    with torch.inference_mode():
        top = int(model.module(x).argmax())
    target = Target(class_index=top)
    try:
        from captum.attr import LayerFeatureAblation
    except ImportError:
        LayerFeatureAblation = None
    use_captum = LayerFeatureAblation is not None and not args.quick
    print(f"mobilenet_v2 (real weights), {size} px, class {top}, 1 torch thread, {reps} interleaved repetitions, "
          "medians")
    print(f"{'model':<13}{'layer':<13}{'C':>5}{'graph s':>9}{'hook s':>8}{'forward ms':>11}{'C fwd s':>9}"
          f"{'ratio':>7}{'forwards':>9}{'inputs s':>9}{'captum s':>9}  verdict (graph ÷ C fwd, goal <= 0.6)")
    modules = dict(model.module.named_modules())
    for layer in LAYERS:
        for strategy in ("graph", "suffix"):    # warm-up (and the graph's trace, kept per model)
            channel_importance(model, x, layer, target, batch=32, strategy=strategy)
        ours, hooked, plain = [], [], []
        for _ in range(reps):
            with torch.inference_mode():
                plain.extend(timed(lambda: model.module(x)) for _ in range(5))
            ours.append(timed(lambda layer=layer: channel_importance(model, x, layer, target, batch=32)))
            hooked.append(timed(lambda layer=layer: channel_importance(model, x, layer, target, batch=32,
                                                                       strategy="suffix")))
        result = channel_importance(model, x, layer, target, batch=32)
        assert result.strategy == "graph"
        forward = statistics.median(plain)
        importance, hook = statistics.median(ours), statistics.median(hooked)
        ratio = importance / (result.channels * forward)
        inputs = captum = float("nan")
        if use_captum:
            inputs = timed(lambda layer=layer: channel_importance(model, x, layer, target, batch=32, strategy="inputs"))
            mask = torch.arange(result.channels).view(1, -1, 1, 1)
            ablation = LayerFeatureAblation(model.module, modules[layer])
            captum = timed(lambda ablation=ablation, mask=mask: ablation.attribute(
                x, target=top, layer_mask=mask, perturbations_per_eval=32))
        print(f"{'mobilenet_v2':<13}{layer:<13}{result.channels:>5}{importance:>9.3f}{hook:>8.3f}{forward * 1000:>11.2f}"
              f"{result.channels * forward:>9.3f}{ratio:>7.2f}{result.forwards:>9}{inputs:>9.2f}{captum:>9.2f}  "
              f"{'PASS' if ratio <= 0.6 else 'FAIL'}")


if __name__ == "__main__":
    main()
