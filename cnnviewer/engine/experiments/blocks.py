"""Residual blocks of a network, what deleting each one means (Veit et al. 2016), and running without them.

A residual block computes y = x + f(x); deleting it (a "lesion") keeps the skip: y = x. A block that
changes resolution or channels has no skip (MobileNetV2's first block of a stage) or a projection
(ResNet's `downsample`): deleting its residual branch then leaves the projection. Library blocks are
known by their flags (use_res_connect, downsample, timm's has_skip); any other module counts when its
torch.fx trace adds its own input (identity) or a short path from it (projection) to a longer branch.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, fx, nn

from cnnviewer.engine.errors import first_line
from cnnviewer.engine.runtime.modes import eval_mode
from cnnviewer.engine.runtime.outputs import first_tensor
from cnnviewer.engine.runtime.tracing import LeafTracer

IDENTITY, PROJECTION, NONE = "identity", "projection", "none"
_ADDS = (operator.add, operator.iadd, torch.add)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class Block:
    """One residual (or would-be residual) block, in execution order.

    Attributes:
        name: dotted `named_modules()` name, e.g. 'features.3'.
        skip: 'identity' (deleting leaves y = x), 'projection' (deleting leaves the projection) or
            'none' (cannot be deleted by skipping).
        reason: one sentence saying why, with the shapes that decide it.
        in_shape, out_shape: (C, H, W) of the block's input and output on the probed input.
    """

    name: str
    skip: str
    reason: str
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()

    @property
    def deletable(self) -> bool:
        return self.skip != NONE


def _known_skip(module: nn.Module) -> tuple[str, str] | None:
    """(skip, how it was recognised) for the library blocks whose flags say it, else None."""
    kind, home = type(module).__name__, type(module).__module__
    if home.startswith("torchvision.models") and kind == "InvertedResidual":
        return (IDENTITY if module.use_res_connect else NONE), "InvertedResidual.use_res_connect"
    if home.startswith(("torchvision.models.resnet", "timm.models.resnet")) and kind in ("BasicBlock", "Bottleneck"):
        if module.downsample is None:
            return IDENTITY, f"{kind} without downsample"
        return PROJECTION, f"{kind}.downsample"
    if home.startswith("timm.") and hasattr(module, "has_skip"):   # DepthwiseSeparableConv, InvertedResidual, …
        return (IDENTITY if module.has_skip else NONE), f"{kind}.has_skip"
    return None


def _ancestors(node: fx.Node, stop: fx.Node) -> set[fx.Node]:
    """Nodes computing `node` from `stop` (both excluded)."""
    seen: set[fx.Node] = set()
    todo = [node]
    while todo:
        current = todo.pop()
        for arg in current.all_input_nodes:
            if arg is not stop and arg not in seen and arg.op != "placeholder":
                seen.add(arg)
                todo.append(arg)
    return seen


def skip_add(graph: fx.Graph) -> tuple[fx.Node, fx.Node] | None:
    """The residual add of a block's graph and its skip operand (the shorter path from the input).

    Returns None when no add joins two paths from the block's input.
    """
    x = next((node for node in graph.nodes if node.op == "placeholder"), None)
    best = None
    for node in graph.nodes:
        is_add = (node.op == "call_function" and node.target in _ADDS) or \
                 (node.op == "call_method" and node.target in ("add", "add_"))
        if not is_add or len(node.args) < 2 or not all(isinstance(a, fx.Node) for a in node.args[:2]):
            continue
        left, right = node.args[:2]
        paths = []
        for operand in (left, right):
            behind = _ancestors(operand, x)
            reaches = operand is x or any(x in n.all_input_nodes for n in behind | {operand})
            paths.append((len(behind) + (operand is not x), reaches, operand))
        if not (paths[0][1] and paths[1][1]):
            continue
        skip = min(paths, key=lambda p: p[0])[2]
        best = (node, skip)   # the last such add: the one that closes the block
    return best


def _trace_block(module: nn.Module) -> fx.GraphModule | None:
    try:
        return fx.GraphModule(module, LeafTracer().trace(module), type(module).__name__)
    except Exception:  # noqa: BLE001 - any untraceable module is simply no candidate
        return None


def _traced_skip(module: nn.Module) -> str | None:
    traced = _trace_block(module)
    found = skip_add(traced.graph) if traced is not None else None
    return None if found is None else IDENTITY if found[1].op == "placeholder" else PROJECTION


def _shapes(module: nn.Module, names: list[str], example: Tensor) -> tuple[list[str], dict[str, tuple]]:
    """Run `example` once (eval mode, no grad) recording each named block's order, input and output shape."""
    modules = dict(module.named_modules())
    order: list[str] = []
    shapes: dict[str, tuple] = {}

    def hook_for(name: str):
        def hook(_module, inputs, output) -> None:
            if name not in shapes and inputs and isinstance(inputs[0], Tensor) and isinstance(output, Tensor):
                order.append(name)
                shapes[name] = (tuple(inputs[0].shape[1:]), tuple(output.shape[1:]))
        return hook

    with ExitStack() as stack, torch.no_grad(), eval_mode(module):
        for name in names:
            stack.enter_context(modules[name].register_forward_hook(hook_for(name)))
        module(example)
    return order, shapes


def _change(in_shape: tuple, out_shape: tuple) -> str:
    """'resolution 56→28 and channels 24→32' (what differs between input and output)."""
    parts = []
    if in_shape[1:] != out_shape[1:] and len(in_shape) == 3 and len(out_shape) == 3:
        parts.append(f"resolution {in_shape[1]}→{out_shape[1]}" if in_shape[1] == in_shape[2] and
                     out_shape[1] == out_shape[2] else f"size {in_shape[1]}×{in_shape[2]}→{out_shape[1]}×{out_shape[2]}")
    if in_shape[:1] != out_shape[:1]:
        parts.append(f"channels {in_shape[0]}→{out_shape[0]}")
    return " and ".join(parts)


def _reason(skip: str, how: str, in_shape: tuple, out_shape: tuple) -> str:
    change = _change(in_shape, out_shape)
    if skip == IDENTITY:
        return f"identity skip ({how}): deleting it passes its input on unchanged"
    if skip == PROJECTION:
        return (f"changes {change}: its skip is a projection ({how}); deleting the residual branch "
                "leaves the projection, and that is what is measured")
    if change:
        return f"changes {change}: its output cannot be its input, so it has no skip to keep"
    return f"has no skip connection ({how}): deleting it would cut the network"


def residual_blocks(module: nn.Module, example: Tensor | None = None) -> list[Block]:
    """The network's residual blocks (and their skip-less siblings) in execution order.

    Args:
        module: the network; run once on `example` to order the blocks and read their shapes
            (eval mode, no grad, every hook removed afterwards).
        example: an input batch; default zeros (1, C, 224, 224) with C of the first convolution.

    Returns:
        One Block per candidate module; nested blocks inside a block are not listed.
    """
    found: dict[str, tuple[str, str]] = {}
    kinds: set[type] = set()
    skipped_prefixes: list[str] = []
    for name, sub in module.named_modules():
        if not name or any(name.startswith(prefix) for prefix in skipped_prefixes):
            continue
        known = _known_skip(sub)
        if known is None and (isinstance(sub, _CONTAINERS) or next(sub.children(), None) is None):
            continue
        if known is None:
            traced = _traced_skip(sub)
            known = (traced, "found by tracing: an add of the block's input") if traced else None
        if known is not None:
            found[name] = known
            kinds.add(type(sub))
            skipped_prefixes.append(name + ".")
    if not any(skip != NONE for skip, _ in found.values()):
        return []
    for name, sub in module.named_modules():   # skip-less modules of a block's class (a stage's first block)
        if name not in found and type(sub) in kinds and not any(name.startswith(p) for p in skipped_prefixes):
            found[name] = (NONE, f"a {type(sub).__name__} without an add of its input")
    if example is None:
        first = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
        like = next(module.parameters(), torch.zeros(()))
        example = torch.zeros(1, first.in_channels if first is not None else 3, 224, 224, device=like.device,
                              dtype=like.dtype)
    order, shapes = _shapes(module, list(found), example)
    blocks = []
    for name in order:
        skip, how = found[name]
        in_shape, out_shape = shapes[name]
        if skip == IDENTITY and in_shape != out_shape:   # an add that broadcasts: not a true identity skip
            skip = NONE
        if skip == PROJECTION and _traced_skip(module.get_submodule(name)) != PROJECTION:
            skip, how = NONE, f"{how}, but its residual add could not be traced"
        blocks.append(Block(name, skip, _reason(skip, how, in_shape, out_shape), in_shape, out_shape))
    return blocks


def lesion_function(module: nn.Module, block: Block) -> Callable[[Tensor], Tensor]:
    """What the deleted block computes instead: its input (identity skip), or its graph with the
    residual add replaced by the skip operand (projection: e.g. relu(bn(conv1x1(x))) for ResNet).

    Raises:
        ValueError: the block has no skip, or its projection cannot be traced.
    """
    if block.skip == IDENTITY:
        return lambda x: x
    if block.skip != PROJECTION:
        raise ValueError(f"{block.name}: {block.reason}")
    sub = module.get_submodule(block.name)
    traced = _trace_block(sub)
    found = skip_add(traced.graph) if traced is not None else None
    if found is None:
        raise ValueError(f"{block.name}: its projection could not be traced")
    add, skip = found
    add.replace_all_uses_with(skip)
    traced.graph.erase_node(add)
    traced.graph.eliminate_dead_code()
    traced.recompile()
    return traced


class Mutated(Exception):
    """A kept value changed in place: run the batch again (the runner now copies them, or runs whole)."""


class _BlockTracer(LeafTracer):
    def __init__(self, blocks: Iterable[str]) -> None:
        super().__init__()
        self.blocks = frozenset(blocks)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.blocks or super().is_leaf_module(m, module_qualified_name)


class LesionRunner:
    """Run a network intact once per batch, then with any set of blocks deleted, from the kept values.

    Args:
        module: the network (already in eval mode and under no_grad when called: lesion_study does it).
        blocks: from residual_blocks; only deletable ones can be deleted.
    """

    def __init__(self, module: nn.Module, blocks: Sequence[Block]) -> None:
        self.module = module
        self.functions = {b.name: lesion_function(module, b) for b in blocks if b.deletable}
        self.copy_kept = False
        self._plans: dict[tuple[str, ...], tuple[list[fx.Node], dict[fx.Node, list[fx.Node]], set[fx.Node]]] = {}
        try:
            tracer = _BlockTracer(b.name for b in blocks)
            graph = tracer.trace(module)
            self.graph_module: fx.GraphModule | None = fx.GraphModule(tracer.root, graph)
        except Exception as error:  # noqa: BLE001 - any model fx cannot trace runs whole
            self.graph_module = None
            self.reuse = f"nothing (torch.fx cannot trace {type(module).__name__}: {first_line(error)}): " \
                         "every lesion is a whole forward pass"
            return
        self._nodes = list(graph.nodes)
        self._block_nodes = {n.target: n for n in self._nodes if n.op == "call_module" and n.target in self.functions}
        self.kept: set[fx.Node] = set()
        for name in self._block_nodes:
            self.kept |= self._plan((name,))[2]
        self.reuse = ("the intact pass of each batch, torch.fx graph with the blocks as nodes: a deleted block's "
                      f"downstream part starts from {len(self.kept)} kept values (each block's input); "
                      "the prefix before it is never recomputed")

    def _plan(self, deleted: tuple[str, ...]):
        """(nodes to run, node -> values freed after it, values read from the intact pass) for `deleted`."""
        if deleted in self._plans:
            return self._plans[deleted]
        downstream: set[fx.Node] = set()
        for name in deleted:
            todo = [self._block_nodes[name]]
            while todo:
                node = todo.pop()
                if node not in downstream:
                    downstream.add(node)
                    todo.extend(node.users)
        order = [n for n in self._nodes if n in downstream]
        feeds = {arg for n in order for arg in n.all_input_nodes if arg not in downstream}
        plan = (order, _last_uses(order, keep=feeds), feeds)
        self._plans[deleted] = plan
        return plan

    def intact(self, inputs: Tensor) -> tuple[Tensor, dict]:
        """Logits of the intact model and the kept values for the lesions of this batch.

        Raises:
            Mutated: a kept value was changed in place later in the pass: run the batch again (whole passes).
        """
        if self.graph_module is None:
            return first_tensor(self.module(inputs)), {}
        placeholder = next(n for n in self._nodes if n.op == "placeholder")
        env: dict[fx.Node, object] = {placeholder: inputs}
        order = [n for n in self._nodes if n.op != "placeholder"]
        stored: dict[fx.Node, tuple[object, int]] = {}
        if placeholder in self.kept:      # a block first thing in the model reads the input itself
            stored[placeholder] = _stored(inputs, self.copy_kept)
        output = self._execute(order, _last_uses(order, keep=self.kept), env, (), stored)
        kept = {n: value for n, (value, _) in stored.items()}
        if any(isinstance(value, Tensor) and value._version != version for value, version in stored.values()):
            # Read after an in-place change by a node that a lesion would not rerun: only the model itself
            # knows that order, so run it whole from now on.
            self.graph_module = None
            self.reuse = ("nothing (the model changes a block's input in place after the block read it): "
                          "every lesion is a whole forward pass")
            raise Mutated()
        return first_tensor(output), {"values": kept, "versions": _versions(kept)}

    def lesioned(self, kept: dict, deleted: Sequence[str], inputs: Tensor | None = None) -> Tensor:
        """Logits with the `deleted` blocks' outputs replaced by their lesion (their input, or the projection).

        Args:
            kept: from `intact` for the same batch.
            inputs: the batch (needed only when the model could not be traced).
        """
        deleted = tuple(sorted(set(deleted)))
        if self.graph_module is None:
            return self._hooked(inputs, deleted)
        order, frees, feeds = self._plan(deleted)
        values = kept["values"]
        env = {n: values[n].clone() if self.copy_kept and isinstance(values[n], Tensor) else values[n] for n in feeds}
        output = self._execute(order, frees, env, deleted)
        if _versions({n: values[n] for n in feeds}) != {n: kept["versions"][n] for n in feeds}:
            self.copy_kept = True
            raise Mutated()
        return first_tensor(output)

    def _execute(self, order: list[fx.Node], frees: dict, env: dict, deleted: tuple[str, ...],
                 stored: dict | None = None):
        """Run `order`'s nodes from `env`; `stored` gets each kept value (a copy once copy_kept) and its version."""
        graph_module = self.graph_module
        for node in order:
            args = fx.node.map_arg(node.args, env.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
            if node.op == "output":
                return args[0]
            if node.op == "call_module":
                env[node] = self.functions[node.target](args[0]) if node.target in deleted else \
                    graph_module.get_submodule(node.target)(*args, **kwargs)
            elif node.op == "call_function":
                env[node] = node.target(*args, **kwargs)
            elif node.op == "call_method":
                env[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
            elif node.op == "get_attr":
                env[node] = operator.attrgetter(node.target)(graph_module)
            if stored is not None and node in self.kept:
                stored[node] = _stored(env[node], self.copy_kept)
            for dead in frees.get(node, ()):
                env.pop(dead, None)
        raise RuntimeError("graph without output")

    def _hooked(self, inputs: Tensor, deleted: tuple[str, ...]) -> Tensor:
        """The whole model, each deleted block's output replaced by a hook that lives only for this pass."""
        with ExitStack() as stack:
            for name in deleted:
                hook = partial(_replace_output, self.functions[name])
                stack.enter_context(self.module.get_submodule(name).register_forward_hook(hook))
            return first_tensor(self.module(inputs))


def _replace_output(function: Callable[[Tensor], Tensor], _module: nn.Module, args: tuple, _output) -> Tensor:
    """A forward hook's answer: the lesion of the block's input instead of its output."""
    return function(args[0])


def _last_uses(order: list[fx.Node], keep: set[fx.Node]) -> dict[fx.Node, list[fx.Node]]:
    """node -> the values nobody reads after it (kept values are never freed)."""
    last = {arg: node for node in order for arg in node.all_input_nodes}   # the later reader wins
    frees: dict[fx.Node, list[fx.Node]] = {}
    for value, node in last.items():
        if value not in keep:
            frees.setdefault(node, []).append(value)
    return frees


def _versions(values: dict) -> dict:
    return {n: v._version for n, v in values.items() if isinstance(v, Tensor)}


def _stored(value, copy: bool) -> tuple[object, int]:
    """A kept value (a copy when asked) and its version counter now."""
    if not isinstance(value, Tensor):
        return value, 0
    value = value.clone() if copy else value
    return value, value._version
