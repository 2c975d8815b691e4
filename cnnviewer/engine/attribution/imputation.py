"""Noisy linear imputation (Rong et al. 2022, ROAD): fill removed pixels from their neighbours.

Each removed pixel is set to the weighted mean of its 8 neighbours (1/6 for the
four edge neighbours, 1/12 for the diagonals; a neighbour outside the image drops
out of the mean), removed neighbours being unknowns too: one sparse linear system
per image, solved for all channels at once, then a little Gaussian noise. A hole
filled this way has no edge of its own, so a drop in p(target) measures the
information removed rather than the shape of the hole (the class leakage that
plain black deletion suffers from).

The equations are those of pytorch-grad-cam's `metrics/road.py` (from the authors'
code); the system is assembled here with vectorised index arithmetic into one COO
matrix instead of a `lil_matrix` filled offset by offset.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

NEIGHBOURS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def linear_system(keep: np.ndarray, image: np.ndarray):
    """The (N, N) sparse system and (N, C) right-hand side for the N removed pixels.

    Row i reads: Σ_known-neighbours w·v + Σ_removed-neighbours w·x_j − (Σ_in-image w)·x_i = 0.
    """
    height, width = keep.shape
    known = keep.reshape(-1) > 0.5
    flat = image.reshape(image.shape[0], -1)
    missing = np.flatnonzero(~known)
    unknown_id = np.full(height * width, -1, dtype=np.int64)
    unknown_id[missing] = np.arange(missing.size)
    ys, xs = np.divmod(missing, width)
    rows, cols, data = [], [], []
    b = np.zeros((missing.size, image.shape[0]), dtype=np.float64)
    total = np.ones(missing.size, dtype=np.float64)
    for (dy, dx), weight in NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (nx >= 0) & (ny < height) & (nx < width)
        total[~inside] -= weight
        ids = np.flatnonzero(inside)
        neighbour = ny[ids] * width + nx[ids]
        has_value = known[neighbour]
        b[ids[has_value]] -= weight * flat[:, neighbour[has_value]].T
        rows.append(ids[~has_value])
        cols.append(unknown_id[neighbour[~has_value]])
        data.append(np.full(int((~has_value).sum()), weight))
    diagonal = np.arange(missing.size)
    rows.append(diagonal)
    cols.append(diagonal)
    data.append(-total)
    matrix = coo_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(missing.size, missing.size)).tocsc()
    return matrix, b


def impute(image: np.ndarray, keep: np.ndarray, noise: float = 0.01,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """(C, H, W) image with the pixels where `keep` is 0 replaced by noisy linear imputation.

    `noise` is the standard deviation of the Gaussian noise added to the imputed values
    (absolute, in the image's units: ROAD's 0.01 on the normalised tensor).
    """
    image = np.asarray(image)
    missing = np.flatnonzero(np.asarray(keep).reshape(-1) <= 0.5)
    filled = image.reshape(image.shape[0], -1).copy()
    if missing.size == 0:
        return filled.reshape(image.shape)
    matrix, b = linear_system(np.asarray(keep), image)
    solution = spsolve(matrix, b).reshape(missing.size, -1).T.astype(np.float32)
    if noise:
        rng = rng if rng is not None else np.random.default_rng(0)
        solution = solution + np.float32(noise) * rng.standard_normal(solution.shape, dtype=np.float32)
    filled[:, missing] = solution
    return filled.reshape(image.shape)
