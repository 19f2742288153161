"""Curves → numbers and maps: window integrals, background subtraction,
normalization to a reference, the relative Li2S and SAXS maps, and where each
raster point sits on its grid. Method: ``docs/reduction-saxs.md``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LI2S_WINDOW",
    "SAXS_WINDOW",
    "window_sum",
    "subtract_background",
    "reference_average",
    "normalize_to_reference",
    "raster_to_map",
    "li2s_map",
    "saxs_map",
    "grid_indices",
]

LI2S_WINDOW = (18.3, 20.8)
SAXS_WINDOW = (0.2, 1.0)


def window_sum(q: np.ndarray, intensity: np.ndarray, q_lo: float, q_hi: float) -> float:
    """∫ I dq over [q_lo, q_hi] (trapezoid; end points linearly interpolated)."""
    q = np.asarray(q, float)
    y = np.asarray(intensity, float)
    if q.ndim != 1 or q.shape != y.shape:
        raise ValueError("q and intensity must be 1-D arrays of equal length")
    if not q_hi > q_lo:
        raise ValueError("q_hi must be > q_lo")
    if q_lo < q[0] or q_hi > q[-1]:
        raise ValueError(
            f"window [{q_lo}, {q_hi}] outside the data range [{q[0]:.4g}, {q[-1]:.4g}]"
        )
    inside = (q > q_lo) & (q < q_hi)
    xs = np.concatenate(([q_lo], q[inside], [q_hi]))
    ys = np.concatenate(([np.interp(q_lo, q, y)], y[inside], [np.interp(q_hi, q, y)]))
    return float(np.trapezoid(ys, xs))


def subtract_background(intensity, background, scale: float = 1.0):
    """I − scale · I_bg (arrays broadcast)."""
    return np.asarray(intensity, float) - float(scale) * np.asarray(background, float)


def reference_average(curves) -> np.ndarray:
    """Mean curve over the first axis (e.g. a pixel's frames during the initial OCV)."""
    arr = np.asarray(curves, float)
    return arr.mean(axis=0) if arr.ndim > 1 else arr


def normalize_to_reference(intensity, reference) -> np.ndarray:
    """I / I_ref per q bin (per pixel if given 2-D/3-D stacks); NaN where I_ref ≤ 0."""
    i = np.asarray(intensity, float)
    r = np.asarray(reference, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, i / r, np.nan)


def raster_to_map(values, shape: tuple[int, int], *, snake: bool = False) -> np.ndarray:
    """Values in acquisition order → (rows, cols) map; ``snake``: odd rows reversed."""
    m = np.asarray(values, float).reshape(shape).copy()
    if snake:
        m[1::2] = m[1::2, ::-1]
    return m


def li2s_map(
    q: np.ndarray,
    curves,
    reference,
    shape: tuple[int, int],
    *,
    window: tuple[float, float] = LI2S_WINDOW,
    snake: bool = False,
    min_reference: float = 0.01,
) -> np.ndarray:
    """Relative Li2S signal map: per point, mean over the window of I/I_ref − 1.

    ``curves`` and ``reference`` are (n_points, n_q) on the same ``q`` (the
    reference: each point's average during the initial OCV, background
    subtracted or not, consistently with ``curves``).
    """
    cur = np.asarray(curves, float)
    ref = np.asarray(reference, float)
    lo, hi = window
    width = hi - lo
    rel = np.empty(len(cur))
    ref_sum = np.array([window_sum(q, r, lo, hi) for r in ref])
    top = np.nanmax(ref_sum) if np.any(np.isfinite(ref_sum)) else 0.0
    for k, (c, r) in enumerate(zip(cur, ref)):
        if not ref_sum[k] > min_reference * top:
            rel[k] = np.nan
            continue
        norm = normalize_to_reference(c, r)
        ok = np.isfinite(norm)
        rel[k] = window_sum(q[ok], norm[ok], lo, hi) / width - 1.0 if ok.sum() > 2 else np.nan
    return raster_to_map(rel, shape, snake=snake)


def saxs_map(
    q: np.ndarray,
    curves,
    shape: tuple[int, int],
    *,
    window: tuple[float, float] = SAXS_WINDOW,
    reference=None,
    snake: bool = False,
) -> np.ndarray:
    """SAXS window integral per point; with ``reference`` the ratio to it minus 1."""
    lo, hi = window
    vals = np.array([window_sum(q, c, lo, hi) for c in np.asarray(curves, float)])
    if reference is not None:
        ref = np.array([window_sum(q, r, lo, hi) for r in np.asarray(reference, float)])
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = np.where(ref > 0, vals / ref - 1.0, np.nan)
    return raster_to_map(vals, shape, snake=snake)


def grid_indices(x, y, shape, extents=None, snaking=None) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of every point, from the stage positions and the grid's
    ``extents`` [[y0, y1], [x0, x1]] (bluesky ``grid_scan``); if positions or
    extents are missing, or two points land on one cell, from the acquisition
    order (rows first, ``snaking[1]`` reversing odd rows)."""
    ny, nx = (int(v) for v in shape)
    n = len(x)
    x = np.asarray(x, float)
    y = np.asarray(y, float)

    def axis(v, lo, hi, m):
        if m <= 1 or hi == lo:
            return np.zeros(len(v), int)
        return np.clip(np.rint((v - lo) / (hi - lo) * (m - 1)), 0, m - 1).astype(int)

    if (
        extents is not None
        and len(extents) == 2
        and np.all(np.isfinite(x))
        and np.all(np.isfinite(y))
    ):
        (y0, y1), (x0, x1) = (tuple(map(float, e)) for e in extents)
        rows, cols = axis(y, y0, y1, ny), axis(x, x0, x1, nx)
        if len(set(zip(rows.tolist(), cols.tolist()))) == n:
            return rows, cols
    k = np.arange(n)
    rows, cols = k // nx, k % nx
    if snaking is not None and len(snaking) > 1 and snaking[1]:
        odd = rows % 2 == 1
        cols = np.where(odd, nx - 1 - cols, cols)
    return rows, cols
