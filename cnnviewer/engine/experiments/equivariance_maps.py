"""The probe's geometry: transformed inputs, and where each map position of φ(T x) came from in φ(x).

Coordinates are input pixels with pixel i spanning [i, i + 1]; a map position i sits at
start + i·jump (structure.summary.Field), so one inverse map serves the image and every layer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cnnviewer.engine.experiments.consistency import crop, larger_view
from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.handle import LoadedModel

TRANSFORMS = ("shift", "flip", "rotate", "scale")
Inverse = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def inverse_map(transform: str, amount: float, size: int) -> Inverse:
    """Where a point (y, x) of T x came from in x, in input pixels (pixel i spans [i, i + 1])."""
    c = size / 2.0
    if transform == "shift":            # content moves right by `amount` px
        return lambda y, x: (y, x - amount)
    if transform == "flip":             # horizontal mirror
        return lambda y, x: (y, size - x)
    if transform == "rotate":           # counter-clockwise on screen by `amount` degrees about the centre
        cos, sin = math.cos(math.radians(amount)), math.sin(math.radians(amount))
        return lambda y, x: (c + sin * (x - c) + cos * (y - c), c + cos * (x - c) - sin * (y - c))
    if transform == "scale":            # magnified by `amount` about the centre
        return lambda y, x: (c + (y - c) / amount, c + (x - c) / amount)
    raise ValueError(f"unknown transform {transform!r}; choose {', '.join(TRANSFORMS)}")


def margin_for(transform: str, amounts: Sequence[float], size: int) -> tuple[int, int]:
    """Extra view around the crop that the transformed crops read from."""
    if transform == "shift":
        return 0, math.ceil(max(abs(a) for a in amounts))
    if transform == "rotate":
        worst = max(abs(math.radians(a)) for a in amounts)
        extra = math.ceil(size / 2 * (abs(math.cos(worst)) + abs(math.sin(worst))) - size / 2) + 1
        return extra, extra
    if transform == "scale":
        extra = math.ceil(size / 2 * max(1.0 / min(amounts) - 1.0, 0.0)) + 1
        return extra, extra
    return 0, 0


def _warp(view: Tensor, inverse: Inverse, size: int, margin: tuple[int, int]) -> Tensor:
    """T x sampled bilinearly from the larger view (its centre is x)."""
    centres = np.arange(size, dtype=np.float64) + 0.5
    y, x = inverse(*np.meshgrid(centres, centres, indexing="ij"))
    gy = 2.0 * (y + margin[0]) / view.shape[-2] - 1.0
    gx = 2.0 * (x + margin[1]) / view.shape[-1] - 1.0
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1)).to(view.dtype).to(view.device)[None]
    return F.grid_sample(view, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def transformed_inputs(model: LoadedModel, image: InputImage, transform: str, amounts: Sequence[float],
                       boundary: str = "crop") -> Tensor:
    """(1 + A, C, S, S): the model's crop, then T x for every amount."""
    size = model.preprocess.crop_size
    margin = margin_for(transform, amounts, size) if boundary == "crop" else (0, 0)
    view = larger_view(model, image, margin)
    x = crop(view, margin[0], margin[1], size)
    out = [x]
    for amount in amounts:
        if transform == "shift" and boundary == "wrap":
            if amount != int(amount):
                raise ValueError("a wrapped shift must be a whole number of pixels")
            out.append(torch.roll(x, shifts=int(amount), dims=-1))
        elif transform == "shift" and amount == int(amount):
            out.append(crop(view, margin[0], margin[1] - int(amount), size))
        elif transform == "flip":
            out.append(x.flip(-1))
        else:
            out.append(_warp(view, inverse_map(transform, amount, size), size, margin))
    return torch.cat(out)


def _interior(field, size: int, length: int, axis: int) -> tuple[int, int]:
    """Positions whose theoretical field stays inside the image (or, where every field is wider than
    half the image, the central half: the effective field is far smaller, Luo et al. 2016)."""
    half = min(field.size[axis] / 2.0, size / 4.0)
    low = math.ceil((half - field.start[axis]) / field.jump[axis] - 1e-9)
    high = math.floor((size - half - field.start[axis]) / field.jump[axis] + 1e-9)
    return max(0, low), min(length - 1, high)


@dataclass(frozen=True)
class Plan:
    """Which positions of φ(T x) are compared, and where in φ(x) each came from."""

    rows: Tensor            # (n,) long: positions of φ(T x) compared (row, col), or a rectangle's
    cols: Tensor
    source_rows: Tensor     # whole steps: long indices into φ(x); else float grid coordinates
    source_cols: Tensor
    rectangle: bool         # rows × cols (separable), else paired positions
    whole: bool             # sources are whole positions (exact), else bilinear
    runs: tuple | None = None   # whole rectangle of consecutive positions: (rows, cols, source rows, source cols)
                                # as (start, stop, reversed); slicing is ~10x faster than index_select

    @property
    def cut(self) -> tuple[slice, slice, slice]:
        """moved[plan.cut]: the compared rectangle of φ(T x) (runs only)."""
        (r0, r1, _), (c0, c1, _) = self.runs[:2]
        return slice(None), slice(r0, r1), slice(c0, c1)

    def on(self, device) -> Plan:
        """The plan's index tensors on the maps' device (a GPU model's maps stay on the GPU)."""
        if self.rows.device == device:
            return self
        move = {name: getattr(self, name).to(device) for name in ("rows", "cols", "source_rows", "source_cols")}
        return dataclasses.replace(self, **move)


def plan_for(field, height: int, width: int, inverse: Inverse, size: int, wrap: bool, separable: bool,
          whole_steps_only: bool) -> Plan | None:
    """Positions compared for one layer and amount: the interior of the map whose source lies in the
    interior too (None: nothing comparable, or a shift that is not a whole step of this map)."""
    iy, ix = np.arange(height), np.arange(width)
    if separable:   # shift, flip, scale: rows and columns map on their own
        centre_y, centre_x = np.full(height, size / 2.0), np.full(width, size / 2.0)
        qy = (inverse(field.start[0] + iy * field.jump[0], centre_y)[0] - field.start[0]) / field.jump[0]
        qx = (inverse(centre_x, field.start[1] + ix * field.jump[1])[1] - field.start[1]) / field.jump[1]
    else:
        iy, ix = (a.ravel() for a in np.meshgrid(iy, ix, indexing="ij"))
        y, x = inverse(field.start[0] + iy * field.jump[0], field.start[1] + ix * field.jump[1])
        qy, qx = (y - field.start[0]) / field.jump[0], (x - field.start[1]) / field.jump[1]
    whole = bool(np.all(np.abs(qy - np.round(qy)) < 1e-6) and np.all(np.abs(qx - np.round(qx)) < 1e-6))
    if whole_steps_only and not whole:
        return None
    if whole:
        qy, qx = np.round(qy), np.round(qx)
    if wrap:
        keep_y, keep_x = np.ones(len(qy), bool), np.ones(len(qx), bool)
        qy, qx = qy % height, qx % width
    else:
        (y0, y1), (x0, x1) = _interior(field, size, height, 0), _interior(field, size, width, 1)
        keep_y = (iy >= y0) & (iy <= y1) & (np.floor(qy) >= y0) & (np.ceil(qy) <= y1)
        keep_x = (ix >= x0) & (ix <= x1) & (np.floor(qx) >= x0) & (np.ceil(qx) <= x1)
    if separable:
        if not keep_y.any() or not keep_x.any():
            return None
        rows, cols, qy, qx = iy[keep_y], ix[keep_x], qy[keep_y], qx[keep_x]
    else:
        keep = keep_y & keep_x
        if not keep.any():
            return None
        rows, cols, qy, qx = iy[keep], ix[keep], qy[keep], qx[keep]
    if whole:
        sources = torch.from_numpy(qy.astype(np.int64)), torch.from_numpy(qx.astype(np.int64))
    else:   # grid_sample's coordinates (align_corners=False: position i is centred at 2(i + 0.5)/n − 1)
        sources = (torch.from_numpy(2 * (qy + 0.5) / height - 1).float(),
                   torch.from_numpy(2 * (qx + 0.5) / width - 1).float())
    runs = None
    if whole and separable:
        found = [_run(v) for v in (rows, cols, qy.astype(np.int64), qx.astype(np.int64))]
        runs = tuple(found) if all(r is not None for r in found) else None
    return Plan(torch.from_numpy(rows), torch.from_numpy(cols), *sources, separable, whole, runs)


def _run(indices: np.ndarray) -> tuple[int, int, bool] | None:
    """(start, stop, reversed) when `indices` are consecutive, rising or falling; else None."""
    if len(indices) == 1 or np.all(np.diff(indices) == 1):
        return int(indices[0]), int(indices[-1]) + 1, False
    if np.all(np.diff(indices) == -1):
        return int(indices[-1]), int(indices[0]) + 1, True
    return None


@functools.lru_cache(maxsize=8192)
def cached_plan(field, height: int, width: int, transform: str, amount: float, size: int, wrap: bool,
                separable: bool, whole_steps_only: bool) -> Plan | None:
    """plan_for, kept per layer geometry and amount: a rerun on the same model plans nothing."""
    return plan_for(field, height, width, inverse_map(transform, amount, size), size, wrap, separable,
                    whole_steps_only)


def integral(energy: Tensor) -> np.ndarray:
    """(H + 1, W + 1) float64 summed-area table of a (H, W) map: any rectangle's sum in four lookups."""
    table = np.zeros((energy.shape[0] + 1, energy.shape[1] + 1))
    table[1:, 1:] = energy.double().cpu().numpy().cumsum(0).cumsum(1)
    return table


def compare(reference: Tensor, moved: Tensor, plan: Plan | None, table: np.ndarray | None = None) -> float:
    """‖φ(T x) − T′φ(x)‖ / ‖T′φ(x)‖ over the plan's positions; reference and moved are (C, H, W).

    `table`: the `integral` of the reference's squared values summed over channels: with it, a
    rectangle's ‖T′φ(x)‖ costs four lookups instead of another pass over every channel.
    """
    if plan is None:
        return float("nan")
    if plan.runs is not None:
        (r0, r1, flip_rows), (c0, c1, flip_cols) = plan.runs[2:]
        got = moved[plan.cut]
        expected = reference[:, r0:r1, c0:c1]
        if flip_rows or flip_cols:
            expected = expected.flip([dim for dim, flag in ((1, flip_rows), (2, flip_cols)) if flag])
        if table is not None:
            norm = math.sqrt(max(table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0], 0.0))
            return float(torch.linalg.vector_norm(got - expected)) / norm if norm > 0.0 else float("nan")
    elif plan.rectangle:
        plan = plan.on(reference.device)
        got = moved.index_select(1, plan.rows).index_select(2, plan.cols)
        if plan.whole:
            expected = reference.index_select(1, plan.source_rows).index_select(2, plan.source_cols)
        else:
            gy, gx = torch.meshgrid(plan.source_rows, plan.source_cols, indexing="ij")
            grid = torch.stack([gx, gy], dim=-1).to(reference.dtype)[None]
            expected = F.grid_sample(reference[None], grid, mode="bilinear", align_corners=False)[0]
    else:
        plan = plan.on(reference.device)
        got = moved[:, plan.rows, plan.cols]
        if plan.whole:
            expected = reference[:, plan.source_rows, plan.source_cols]
        else:
            grid = torch.stack([plan.source_cols, plan.source_rows], dim=-1).to(reference.dtype)[None, None]
            expected = F.grid_sample(reference[None], grid, mode="bilinear", align_corners=False)[0, :, 0]
    norm = float(torch.linalg.vector_norm(expected))
    if norm == 0.0:
        return float("nan")
    return float(torch.linalg.vector_norm(got - expected)) / norm
