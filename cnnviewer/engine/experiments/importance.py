"""Which channels matter: the drop of a target when each channel of a layer alone is knocked out.

For a layer of C channels this is C perturbed forward passes; they are batched as AblationCAM does,
only cheaper. The model is traced with torch.fx and split at the layer: the part before it runs
ONCE, at batch 1; the rest runs on batches of copies of the layer's output, copy i with channel i
knocked out, reading the values it needs from before the layer (skip tensors, batch 1, broadcast
against the batch: x + block(x)) from that one run ("graph").

A model fx cannot trace uses a temporary forward hook at the layer that returns the batch of copies
instead; the part before the layer then runs once per batch ("suffix"). One that cannot take a
batch after the layer (torch.cat of a batch-1 skip with the batch, a per-image loop) falls back to
repeating the whole input ("inputs"), then to one input per channel ("single"). The first batch of
a batched strategy is checked against one unbatched knock-out through the model itself, so a model
that mixes batch items (or a graph that differs from the model) falls back rather than answering
wrong numbers.

The target's value is `attribution.base._score`, the number the gradient views explain. The model
is left as found: hooks live in `with` blocks, eval mode is restored per module, requires_grad is
never touched (inference mode).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from threading import Event

import numpy as np
import torch
from torch import Tensor, fx, nn

from cnnviewer.engine.attribution.base import _score
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import Cancelled
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.runtime.tracing import LeafTracer
from cnnviewer.engine.types import LayerId

MODES: tuple[str, ...] = ("zero", "mean")   # knocked-out value: 0, or the channel's mean over this image
STRATEGIES: tuple[str, ...] = ("graph", "suffix", "inputs", "single")   # how the knock-outs were batched


@dataclass(frozen=True, eq=False)
class ChannelImportance:
    """Per channel of `layer`: how much the target falls when that channel alone is knocked out."""

    layer: LayerId
    target: str            # Target.describe(), e.g. "class 285"
    intact: float          # the target's value with nothing knocked out
    drops: np.ndarray      # (C,) float32: intact − value with channel c knocked out
    order: np.ndarray      # (C,) int64: channels by drop, largest first
    forwards: int          # model calls made (the intact pass, the batches, the check)
    seconds: float
    mode: str = "zero"
    strategy: str = "graph"    # STRATEGIES: prefix once (fx), prefix per batch (hook), inputs batched, one by one

    @property
    def channels(self) -> int:
        return int(self.drops.shape[0])

    def percent(self, channel: int) -> float:
        """The drop as a percentage of |intact| (nan when the intact value is 0)."""
        return float(self.drops[channel]) / abs(self.intact) * 100.0 if self.intact else float("nan")

    def top(self, k: int) -> list[tuple[int, float]]:
        """The k channels whose loss hurts most: (channel, drop), largest drop first."""
        return [(int(c), float(self.drops[c])) for c in self.order[:k]]

    def to_json(self) -> dict:
        return {"layer": self.layer, "target": self.target, "mode": self.mode, "intact": self.intact,
                "channels": self.channels, "drops": [float(d) for d in self.drops],
                "order": [int(c) for c in self.order], "forwards": self.forwards,
                "seconds": round(self.seconds, 4), "strategy": self.strategy}


def channels_last(workbench, model: LoadedModel, layer: LayerId) -> bool:
    """Whether `layer` outputs (N, H, W, C) (ConvNeXt's pointwise Linear after a permute), from the
    workbench's summary; only a Linear or LayerNorm can, so other layers cost no summary."""
    kind = dict(zip(model.layer_names, model.layer_types)).get(layer)
    return kind in ("Linear", "LayerNorm", "LayerNorm2d") and layer in workbench.summary(model).channels_last


class _Unbatchable(Exception):
    """This strategy does not fit the model; try the next one."""


def channel_importance(model: LoadedModel, inputs: Tensor, layer: LayerId, target: Target, *, mode: str = "zero",
                       batch: int = 32, channels_last: bool = False, strategy: str | None = None,
                       cancel: Event | None = None,
                       progress: Callable[[float], None] | None = None) -> ChannelImportance:
    """Knock out each channel of `layer` alone and measure the target's drop.

    Args:
        model: the loaded model (its module is left exactly as found).
        inputs: (1, C, H, W) prepared input (runtime.inference.prepare_input).
        layer: dotted module name whose output's channels are knocked out.
        target: a class (the model's output) or a layer's channel / neuron after `layer`.
        mode: "zero", or "mean": the channel replaced by its mean over this image's positions.
        batch: knocked-out copies evaluated per model call.
        channels_last: the layer outputs (N, H, W, C) (ConvNeXt's pointwise Linear).
        strategy: one of STRATEGIES only (benchmarks, tests); None: the first that fits this model.
        cancel: set to stop between batches (raises Cancelled).
        progress: called with the fraction of channels done.
    """
    if mode not in MODES:
        raise ValueError(f"unknown knock-out mode {mode!r}; choose {', '.join(MODES)}")
    if strategy is not None and strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose {', '.join(STRATEGIES)}")
    if batch < 1:
        raise ValueError("batch must be 1 or more")
    if inputs.dim() < 1 or inputs.shape[0] != 1:
        raise ValueError("channel importance takes one image: inputs of batch size 1")
    net = model.module
    if isinstance(net, torch.jit.ScriptModule):
        raise ValueError(f"{model.name} is TorchScript (compiled): its channels cannot be knocked out one by one; "
                         "load the Python model with its weights instead")
    modules = dict(net.named_modules())
    for name in (layer, target.layer):
        if name is not None and name not in modules:
            raise ValueError(f"{model.name} has no layer {name!r}")
    start = time.perf_counter()
    with torch.inference_mode(), eval_mode(net):
        intact, activation = _intact(net, modules, inputs, layer, target)
        axis = activation.dim() - 1 if channels_last else 1
        if activation.dim() < 2:
            raise ValueError(f"{layer} outputs no channels (shape {tuple(activation.shape)})")
        knocker = _Knocker(activation, axis, mode)
        count = activation.shape[axis]
        drops, calls, used = None, [1], "single"     # the intact pass counts
        for used in (strategy,) if strategy else STRATEGIES:
            try:
                drops = _evaluate(used, net, layer, modules[layer], inputs, target, knocker, count, intact,
                                  batch, calls, cancel, progress)
            except _Unbatchable as error:
                if strategy:
                    raise ValueError(f"{layer}: {error}") from None
                continue
            break
    drops = np.asarray(drops, dtype=np.float32)
    order = np.argsort(-drops, kind="stable").astype(np.int64)
    return ChannelImportance(layer, target.describe(), intact, drops, order, calls[0],
                             time.perf_counter() - start, mode, used)


def _intact(net: nn.Module, modules: dict[str, nn.Module], inputs: Tensor, layer: LayerId,
            target: Target) -> tuple[float, Tensor]:
    """The intact target value and a copy of the layer's output; checks the layer runs once, before
    the target's layer (a target computed before the knock-out cannot change)."""
    seen: list[str] = []
    captured: list[Tensor] = []

    def keep(_module, _inputs, output) -> None:
        seen.append("layer")
        if isinstance(output, Tensor):
            captured.append(output.clone())   # a later in-place op (ReLU(inplace=True)) would overwrite it

    def mark(_module, _inputs, _output) -> None:
        seen.append("target")

    with modules[layer].register_forward_hook(keep):
        if target.layer is not None and target.layer != layer:
            with modules[target.layer].register_forward_hook(mark):
                value = _score(net, inputs, target)
        else:
            value = _score(net, inputs, target)
    if "layer" not in seen:
        raise ValueError(f"{layer} does not run in this model's forward pass")
    if seen.count("layer") > 1:
        raise ValueError(f"{layer} runs {seen.count('layer')} times in one forward pass (a shared module, "
                         "e.g. a ReLU used twice): choose a layer that runs once")
    if not captured:
        raise ValueError(f"{layer} does not output a single tensor: choose a layer with a feature map")
    if "target" in seen and seen.index("target") < seen.index("layer"):
        raise ValueError(f"the target ({target.describe()}) is computed before {layer}: knocking out "
                         f"{layer} cannot change it; choose a target after it, or an earlier layer")
    return float(value.float().reshape(-1)[0]), captured[0]


class _Knocker:
    """Builds copies of the layer's output, copy i with channel `chunk[i]` replaced by its fill."""

    def __init__(self, activation: Tensor, axis: int, mode: str) -> None:
        self.axis = axis
        moved = activation.movedim(axis, 1)                       # (1, C, ...)
        if mode == "zero":
            self.fill = torch.zeros_like(moved[0])                # (C, ...)
        else:
            spatial = tuple(range(2, moved.dim()))
            means = moved.mean(dim=spatial, keepdim=True) if spatial else moved
            self.fill = means.expand_as(moved)[0].clone()

    def knock(self, output: Tensor, chunk: list[int]) -> Tensor:
        """`output` (1 or len(chunk) items) as len(chunk) copies, each with its channel knocked out."""
        copies = output.expand(len(chunk), *output.shape[1:]).clone() if output.shape[0] == 1 else output.clone()
        index = torch.tensor(chunk, device=output.device)
        rows = torch.arange(len(chunk), device=output.device)
        copies.movedim(self.axis, 1)[rows, index] = self.fill[index].to(copies.dtype)
        return copies


def _evaluate(strategy: str, net: nn.Module, layer: LayerId, module: nn.Module, inputs: Tensor, target: Target,
              knocker: _Knocker, count: int, intact: float, batch: int, calls: list[int], cancel: Event | None,
              progress: Callable[[float], None] | None) -> list[float]:
    """Every channel's drop with one strategy, counting passes in `calls[0]` (the graph's part before the
    layer counts as one); raises _Unbatchable if the strategy does not fit the model."""
    size = 1 if strategy == "single" else batch
    if strategy == "graph":
        calls[0] += 1
        values_of = _Split(net, layer, target, inputs).values_of(knocker, target)
    else:
        def values_of(chunk: list[int]) -> list[float]:
            return _knocked_values(strategy, net, module, inputs, target, knocker, chunk)
    drops: list[float] = []
    for begin in range(0, count, size):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        chunk = list(range(begin, min(begin + size, count)))
        calls[0] += 1
        values = values_of(chunk)
        if begin == 0 and strategy != "single":
            calls[0] += 1
            alone = _knocked_values("single", net, module, inputs, target, knocker, chunk[:1])
            if abs(alone[0] - values[0]) > 1e-4 * max(1.0, abs(alone[0]), abs(intact)):
                raise _Unbatchable(f"{strategy}: batch items interact")
        drops.extend(intact - value for value in values)
        if progress is not None:
            progress(len(drops) / count)
    return drops


_traces: weakref.WeakKeyDictionary[nn.Module, tuple[fx.GraphModule, dict[str, fx.Node]] | None] = \
    weakref.WeakKeyDictionary()


class _NamedOutputs(LeafTracer):
    """LeafTracer that notes the node each module call returned (the last call wins, as with hooks)."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: dict[str, fx.Node] = {}

    def call_module(self, m: nn.Module, forward, args, kwargs):
        output = super().call_module(m, forward, args, kwargs)
        if isinstance(output, fx.Proxy):
            self.outputs[self.path_of_module(m)] = output.node
        return output


def _traced(net: nn.Module) -> tuple[fx.GraphModule, dict[str, fx.Node]] | None:
    """The model's fx graph (sharing its modules) and each module's output node; None if it does not
    trace. Kept per model (~30 ms for MobileNetV2)."""
    if net not in _traces:
        try:
            tracer = _NamedOutputs()
            graph = tracer.trace(net)
            _traces[net] = (fx.GraphModule(tracer.root, graph), tracer.outputs)
        except Exception:  # noqa: BLE001 - any tracing failure means: use the hook
            _traces[net] = None
    return _traces[net]


class _Split:
    """The model's graph cut after `layer`: the part before it run once, at batch 1, on creation."""

    def __init__(self, net: nn.Module, layer: LayerId, target: Target, inputs: Tensor) -> None:
        traced = _traced(net)
        if traced is None:
            raise _Unbatchable("graph: torch.fx cannot trace this model")
        graph_module, outputs = traced
        self.split = outputs.get(layer)
        self.watch = outputs.get(target.layer) if target.layer is not None else None
        if self.split is None or (target.layer is not None and self.watch is None):
            raise _Unbatchable("graph: the layer or the target is no single node of the graph")
        nodes = list(graph_module.graph.nodes)
        cut = nodes.index(self.split) + 1
        before, self.rest = nodes[:cut], nodes[cut:]
        self.interpreter = fx.Interpreter(graph_module, garbage_collect_values=False)
        self.interpreter.env, self.interpreter.args_iter = {}, iter([inputs])
        try:
            for node in before:
                self.interpreter.env[node] = self.interpreter.run_node(node)
        except Exception as error:  # noqa: BLE001 - the graph does not run as traced: use the hook
            raise _Unbatchable(f"graph: {error}") from error
        computed, self.interpreter.env = self.interpreter.env, {}
        later = set(self.rest)
        self.live = {node: value for node, value in computed.items() if any(user in later for user in node.users)}
        self.layer_output = computed[self.split]
        last: dict[fx.Node, fx.Node] = {}
        for node in self.rest:
            for used in node.all_input_nodes:
                last[used] = node
        self.free: dict[fx.Node, list[fx.Node]] = {}   # after running a node: the values no one needs any more
        for used, node in last.items():
            self.free.setdefault(node, []).append(used)

    def values_of(self, knocker: _Knocker, target: Target) -> Callable[[list[int]], list[float]]:
        """A function: channels to knock out -> the target's value for each, one batch through the rest."""
        def values(chunk: list[int]) -> list[float]:
            copies = knocker.knock(self.layer_output, chunk)
            # copies of what the rest reads from before the layer: an in-place op there must not reach the next batch
            env = {node: value.clone() if isinstance(value, Tensor) else value for node, value in self.live.items()}
            env[self.split] = copies
            watched, result = copies if self.watch is self.split else None, None
            self.interpreter.env = env
            try:
                for node in self.rest:
                    value = self.interpreter.run_node(node)
                    if node.op == "output":
                        result = value
                        break
                    env[node] = value
                    if node is self.watch:
                        watched = value
                    for used in self.free.get(node, ()):
                        env.pop(used, None)
            except Exception as error:  # noqa: BLE001 - e.g. torch.cat of a batch-1 skip with the batch
                raise _Unbatchable(f"graph: {error}") from error
            finally:
                self.interpreter.env = {}
            out = first_tensor(result) if target.layer is None else watched
            found = _reduce(out, target).float().reshape(-1)
            if found.shape[0] != len(chunk):
                raise _Unbatchable(f"graph: {found.shape[0]} values for {len(chunk)} copies")
            return found.tolist()
        return values


def _reduce(out: Tensor, target: Target) -> Tensor:
    """The target's value per batch item from the output (class) or its layer's output, as
    attribution.base._score reduces it (the first batch is checked against _score itself)."""
    if target.layer is None:
        return out.reshape(out.shape[0], -1)[:, target.class_index]
    if out.dim() == 2:
        return out[:, target.channel]
    if target.neuron is None:
        return out[:, target.channel].flatten(1).sum(dim=1)
    y, x = target.neuron
    return out[:, target.channel, y, x]


def _knocked_values(strategy: str, net: nn.Module, module: nn.Module, inputs: Tensor, target: Target,
                    knocker: _Knocker, chunk: list[int]) -> list[float]:
    """The target's value for each channel in `chunk` knocked out, in one model call."""
    def hook(_module, _inputs, output):
        if not isinstance(output, Tensor) or output.shape[0] != (len(chunk) if strategy == "inputs" else 1):
            raise _Unbatchable(f"{strategy}: the layer sees a batch of {getattr(output, 'shape', ['?'])[0]}")
        return knocker.knock(output, chunk)

    x = inputs.expand(len(chunk), *inputs.shape[1:]).contiguous() if strategy == "inputs" else inputs
    try:
        with module.register_forward_hook(hook):
            values = _score(net, x, target)
    except _Unbatchable:
        raise
    except (RuntimeError, IndexError) as error:   # e.g. torch.cat of a batch-1 skip with the batch
        if strategy == "single":
            raise
        raise _Unbatchable(f"{strategy}: {error}") from error
    values = values.float().reshape(-1)
    if values.shape[0] != len(chunk):
        if strategy == "single":
            raise ValueError(f"the target gives {values.shape[0]} values for one input")
        raise _Unbatchable(f"{strategy}: {values.shape[0]} values for {len(chunk)} copies")
    return values.tolist()
