"""Find, for each centre, the points within a radius, without comparing every centre to every point."""

from __future__ import annotations

import numpy as np


def within_radius(centers: np.ndarray, points: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Return each centre's points at distance <= `radius` as CSR arrays `(offsets, point indices)`.

    `centers` and `points` are (n, 2) coordinate arrays. Centre i's points are
    `indices[offsets[i]:offsets[i + 1]]`, ascending. Points are bucketed into square cells of side `radius`,
    so only the 3x3 cells around a centre are compared: the work grows with the number of close pairs,
    not with centres x points, and no Python loop runs per centre.
    """
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius!r}")
    lowest = np.minimum(centers.min(axis=0, initial=np.inf), points.min(axis=0, initial=np.inf))
    lowest = np.where(np.isfinite(lowest), lowest, 0.0)
    # Cells counted from the lowest coordinate, so every cell index is >= 0 and a neighbour at -1 is empty.
    p_cell = np.floor((points - lowest) / radius).astype(np.int64)
    c_cell = np.floor((centers - lowest) / radius).astype(np.int64)
    stride = int(max(p_cell.max(initial=0), c_cell.max(initial=0))) + 3
    p_key = p_cell[:, 0] * stride + p_cell[:, 1]
    by_cell = np.argsort(p_key, kind="stable")
    sorted_keys = p_key[by_cell]
    pair_c, pair_p = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            nx, ny = c_cell[:, 0] + dx, c_cell[:, 1] + dy
            c = np.flatnonzero((nx >= 0) & (ny >= 0))
            key = nx[c] * stride + ny[c]
            lo = np.searchsorted(sorted_keys, key, "left")
            size = np.searchsorted(sorted_keys, key, "right") - lo
            # Expand each centre's slice [lo, lo + size) of the sorted points into one row per candidate.
            first = np.cumsum(size) - size
            cand_c = np.repeat(c, size)
            cand_p = by_cell[np.repeat(lo - first, size) + np.arange(size.sum())]
            close = ((centers[cand_c] - points[cand_p]) ** 2).sum(axis=1) <= radius * radius
            pair_c.append(cand_c[close])
            pair_p.append(cand_p[close])
    pc, pp = np.concatenate(pair_c), np.concatenate(pair_p)
    offsets = np.zeros(len(centers) + 1, dtype=np.int64)
    np.cumsum(np.bincount(pc, minlength=len(centers)), out=offsets[1:])
    return offsets, pp[np.lexsort((pp, pc))]
