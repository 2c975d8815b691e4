"""What every subcommand shares: one-line usage errors, the model options, loading model and image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnviewer.engine.types import DEFAULT_MODEL, ONNX_SUFFIX


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message} (see --help)")


def int_in(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high], refused in one line otherwise.

    Negative class, channel and stride values would otherwise reach Python's
    negative indexing, and unbounded sizes would allocate until the system runs out.
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {bound}")
        return value
    parse.__name__ = "integer"
    return parse


MAX_EXPORT_SIDE = 8192     # pixels: a PNG of 8192x8192 is 256 MiB in memory while drawn
MAX_INPUT_SIDE = 2048      # summary input: a 2048x2048 pass of a large model takes minutes already


def model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="torchvision model name, FILE.py:NAME for your own architecture, "
                                        "or FILE.onnx (converted to PyTorch)")
    parser.add_argument("--weights", help="weights file (.pt .pth .bin .safetensors .pt2, TorchScript, .onnx)")
    parser.add_argument("--labels", help="class names, one per line")
    parser.add_argument("--trust", action="store_true",
                        help="allow a full pickled model file (it runs code from the file)")
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"), help="default: cuda, then mps, then cpu")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="fp16/bf16 on a GPU")


def ablate_option(parser: argparse.ArgumentParser) -> None:
    """`--ablate LAYER:C1,C2[:zero|mean|scale=F]`, repeatable: run the model with those channels knocked out."""
    parser.add_argument("--ablate", action="append", default=[], metavar="LAYER:C1,C2[:MODE]",
                        help="knock out channels of LAYER (repeatable): zero (default), mean (their mean over "
                             "the input image) or scale=F; channel ranges as A-B, e.g. features.14.conv.0:3,7:zero")


# Knock-outs for a command whose model is loaded deeper down (top: through the dataset's loader).
pending_ablations: list[str] = []


def apply_ablations(model, image, specs: list[str]):
    """`model` with the --ablate specs applied (means over `image`); one-line errors (exit 2)."""
    from cnnviewer.engine.experiments.knockout import intervene, parse_ablation, resolve_means

    knockouts = [parse_ablation(spec) for spec in specs]
    inputs = None
    if image is not None and any(k.mode == "mean" for k in knockouts):
        from cnnviewer.engine.runtime.inference import prepare_input
        inputs = prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels).tensor
    return intervene(model, resolve_means(model, inputs, knockouts))


def load_model_and_image(args: argparse.Namespace, need_image: bool = True):
    """Model (with weights, and with --ablate's knock-outs) and image for the headless commands."""
    from cnnviewer.engine.media.images import load_image
    from cnnviewer.engine.models.loading import load_model, load_weights, read_labels
    from cnnviewer.engine.runtime.memory import keep_freed_memory

    keep_freed_memory()
    if args.weights and args.model and args.weights.lower().endswith(ONNX_SUFFIX):
        raise UsageError(f"{Path(args.weights).name} is a whole model (ONNX), not weights for {args.model}: "
                         f"give it alone, as --model {args.weights}")
    image = load_image(args.image) if need_image else None
    model = load_model(args.model or DEFAULT_MODEL, device=args.device, precision=args.precision,
                       allow_download=True, progress=stderr_progress)
    stderr_progress.done()
    labels = read_labels(args.labels) if args.labels else None
    if args.weights:
        from cnnviewer.engine.errors import UntrustedPickleError
        named = model
        try:
            model = load_weights(args.weights, model, trust=args.trust, labels=labels,
                                 device=args.device, precision=args.precision)
        except UntrustedPickleError as error:
            raise UsageError(f"{error}. Add --trust only if you trust this file.") from None
        if args.model and model.name != named.name:   # the file fits another architecture than the one named
            raise UsageError(f"{Path(args.weights).name} holds {model.name} weights, not {named.name}: "
                             f"use --model {model.name}, or leave --model out")
    elif labels:
        from dataclasses import replace
        model = replace(model, categories=labels)
    warn_if_untrained(model.name, model.trained)
    specs = list(getattr(args, "ablate", None) or pending_ablations)
    if specs:
        model = apply_ablations(model, image, specs)
    return model, image


pending_warnings: list[str] = []    # printed once the command has made its outputs (cli.main)


def warn_if_untrained(name: str, trained: bool) -> None:
    """One stderr line when a command's outputs come from random weights: a script reading
    `--json` cannot see the window's orange label, and the numbers look as real as any. Said after
    the outputs are made, so a command that fails still says one line only."""
    if not trained:
        pending_warnings.append(f"cnnviewer: warning: {name} is untrained (no weights here offline): random "
                                "weights, its outputs mean nothing")


class TerminalProgress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal.

    Piped or logged stderr stays clean: only real warnings and errors go there.
    """

    WIDTH = 28

    def __init__(self) -> None:
        self.drawn = False

    def __call__(self, fraction: float, text: str = "") -> None:
        if not sys.stderr.isatty():
            return
        filled = int(round(max(0.0, min(1.0, fraction)) * self.WIDTH))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        print(f"\r[{bar}] {fraction:4.0%} {text[:56]:<56}", end="", file=sys.stderr, flush=True)
        self.drawn = True

    def done(self) -> None:
        """End the bar's line so what follows starts on its own."""
        if self.drawn:
            print(file=sys.stderr, flush=True)
            self.drawn = False


stderr_progress = TerminalProgress()


def one_line_warnings() -> None:
    """Show Python warnings as one line each (`cnnviewer: warning: ...`), never a source excerpt."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings API
        stderr_progress.done()
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        print(f"cnnviewer: warning: {text}", file=sys.stderr)

    warnings.showwarning = show
    _one_line_log_warnings()


def _one_line_log_warnings() -> None:
    """The engine's logged warnings as `cnnviewer: warning: ...` lines too: without a handler,
    logging's last resort printed the bare message. Each line once per command: `compare` of two
    models of one architecture logged 'traced copy of MobileNetV2 … using hooks' for each."""
    import logging

    class OneLine(logging.Handler):
        def __init__(self, level: int) -> None:
            super().__init__(level)
            self.printed: set[str] = set()

        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage().strip().splitlines()
            line = f"cnnviewer: warning: {text[0] if text else record.levelname.lower()}"
            if line in self.printed:
                return
            self.printed.add(line)
            stderr_progress.done()
            print(line, file=sys.stderr)

    logger = logging.getLogger("cnnviewer")
    for handler in logger.handlers:
        if getattr(handler, "one_line", False):
            handler.printed.clear()          # a new command (main() run again in one process): say it again
            return
    handler = OneLine(logging.WARNING)
    handler.one_line = True
    logger.addHandler(handler)
