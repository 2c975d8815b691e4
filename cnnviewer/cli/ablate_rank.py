"""`cnnviewer ablate-rank IMAGE --layer L`: which channels of a layer the prediction depends on.

Each channel of L is knocked out alone (zeroed, or replaced by its mean over the image) and the drop
of the target is measured: the top-1 class (or --target-class), or a later layer's channel
(--target-layer with --channel, optionally --neuron). Prints the K channels whose loss hurts most;
--json writes every channel's drop.
"""

from __future__ import annotations

import argparse
import json
import math

from cnnviewer.cli.common import Parser, UsageError, int_in, load_model_and_image, model_options


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnviewer ablate-rank", description="Rank a layer's channels by how much the target "
                    "drops when each alone is knocked out.")
    parser.add_argument("image")
    parser.add_argument("--layer", required=True, help="the layer whose channels are knocked out (dotted name)")
    parser.add_argument("--target-class", type=int_in(0), help="class index (default: the top-1 class)")
    parser.add_argument("--target-layer", help="a later layer's channel as the target instead of a class")
    parser.add_argument("--channel", type=int_in(0), help="channel of --target-layer (default 0)")
    parser.add_argument("--neuron", type=int_in(0), nargs=2, metavar=("Y", "X"),
                        help="one neuron of that channel (default: the channel's sum)")
    parser.add_argument("--mode", choices=("zero", "mean"), default="zero",
                        help="knocked-out value: zero, or the channel's mean over this image (default zero)")
    parser.add_argument("--top", type=int_in(1), default=10, help="channels to print (default 10)")
    parser.add_argument("--batch", type=int_in(1, 4096), default=32, help="knocked-out copies per forward "
                        "pass (default 32)")
    parser.add_argument("--json", metavar="OUT", help="every channel's drop as JSON, to a file or - (stdout)")
    model_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnviewer.cli.common import stderr_progress
    from cnnviewer.engine.attribution.target import Target
    from cnnviewer.engine.experiments.importance import channel_importance, channels_last
    from cnnviewer.engine.media.files import atomic_output, writable_target
    from cnnviewer.engine.runtime.inference import predict, prepare_input
    from cnnviewer.engine.workbench import Workbench

    prog = "cnnviewer ablate-rank"
    if (args.channel is not None or args.neuron) and args.target_layer is None:
        raise UsageError(f"{prog}: --channel and --neuron need --target-layer (the layer they belong to)")
    if args.target_layer is not None and args.target_class is not None:
        raise UsageError(f"{prog}: choose --target-class or --target-layer, not both")
    if args.json and args.json != "-":
        writable_target(args.json, UsageError)
    model, image = load_model_and_image(args)
    for name in (args.layer, args.target_layer):
        if name is not None and name not in model.layer_names:
            raise UsageError(f"{prog}: {model.name} has no layer {name!r}")
    if args.target_layer is None:
        index = args.target_class if args.target_class is not None else predict(model, image, 1)[0].index
        target = Target(class_index=index)
    else:
        target = Target(layer=args.target_layer, channel=args.channel or 0,
                        neuron=tuple(args.neuron) if args.neuron else None)
    inputs = prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels).tensor
    try:
        result = channel_importance(model, inputs, args.layer, target, mode=args.mode, batch=args.batch,
                                    channels_last=channels_last(Workbench(), model, args.layer),
                                    progress=lambda f: stderr_progress(f, f"knocking out {args.layer}"))
    except (IndexError, ValueError) as error:
        raise UsageError(f"{prog}: {error}") from None
    finally:
        stderr_progress.done()
    what = target.describe()
    if target.class_index is not None and target.class_index < len(model.categories):
        what += f" ({model.categories[target.class_index]})"
    if args.json:
        text = json.dumps({**result.to_json(), "model": model.name, "trained": model.trained,
                           "target_description": what}, indent=1)
        if args.json == "-":
            print(text)
            return 0
        with atomic_output(args.json) as temporary:
            temporary.write_text(text + "\n", encoding="utf-8")
    print("\n".join(table(result, model.name, what, args.top)))
    return 0


def table(result, model_name: str, what: str, top: int) -> list[str]:
    """A header and the `top` channels with the largest drops, as aligned text lines."""
    lines = [(f"{model_name}: {result.layer} ({result.channels} channels, {result.mode} knock-out), target {what} = "
              f"{result.intact:.4g}; {result.forwards} forward passes in {result.seconds:.2f} s"),
             f"{'rank':>4}  {'channel':>7}  {'drop':>10}  {'% of intact':>11}"]
    for rank, (channel, drop) in enumerate(result.top(top), start=1):
        share = result.percent(channel)
        lines.append(f"{rank:>4}  {channel:>7}  {drop:>10.4f}  {'—' if math.isnan(share) else f'{share:.1f} %':>11}")
    return lines
