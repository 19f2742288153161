"""The cell's layers along the stack (Cu current collectors, Li, hybrid
electrolyte) from a profile of a volume, a slice or a radiogram.

Method: ``docs/reduction-xct.md``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = ["layer_profile", "find_layers"]


def layer_profile(
    volume_or_slice: Any,
    *,
    radius: float | None = None,
    center: tuple[float, float] | None = None,
    band: float = 0.5,
) -> np.ndarray:
    """Mean attenuation per row along the stack.

    * a volume ``(row, y, x)``: the mean over a disc of ``radius`` voxels
      about ``center`` (``(y, x)``, default the rotation axis; default radius
      0.8 of the reconstructed circle, staying clear of its rim);
    * a 2D image ``(row, x)`` (a vertical slice, or −ln of a radiogram): the
      mean over the central ``band`` fraction of the columns.
    """
    arr = volume_or_slice
    if arr.ndim == 2:
        img = np.asarray(arr, dtype=np.float64)
        ncol = img.shape[1]
        half = max(1, int(round(band * ncol / 2)))
        c = ncol // 2
        return img[:, max(0, c - half) : min(ncol, c + half)].mean(axis=1)
    if arr.ndim != 3:
        raise ValueError("layer_profile needs a 2D slice or a 3D volume")
    ny, nx = arr.shape[1:]
    cy, cx = center if center is not None else (ny // 2, nx // 2)
    if radius is None:
        radius = 0.8 * (min(ny, nx) / 2.0 - 1)
    yy, xx = np.ogrid[:ny, :nx]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    prof = np.empty(arr.shape[0])
    for z in range(arr.shape[0]):
        prof[z] = float(np.asarray(arr[z], dtype=np.float64)[mask].mean())
    return prof


def _centroid(values: np.ndarray, k: int, half: int) -> float:
    lo, hi = max(0, k - half), min(values.size, k + half + 1)
    w = np.clip(values[lo:hi], 0, None)
    if w.sum() <= 0:
        return float(k)
    return float(np.sum(w * np.arange(lo, hi)) / w.sum())


def _edge(grad: np.ndarray, lo: int, hi: int, *, rising: bool, half: int = 2) -> float:
    """Sub-pixel step in ``grad[lo:hi]``: centroid of the gradient about its extreme."""
    g = grad if rising else -grad
    lo, hi = max(0, lo), min(g.size, hi)
    if hi <= lo:
        raise ValueError("no room for a Li/electrolyte interface next to a Cu layer")
    k = lo + int(np.argmax(g[lo:hi]))
    a, b = max(0, k - half), min(g.size, k + half + 1)
    w = np.clip(g[a:b], 0, None)
    if w.sum() <= 0:
        return float(k + 0.5)
    return float(np.sum(w * (np.arange(a, b) + 0.5)) / w.sum())


def _nearest_step(
    grad: np.ndarray, lo: int, hi: int, *, toward_high_index: bool, half: int = 2
) -> tuple[float, float]:
    """The clear step of ``grad[lo:hi]`` nearest one end: (position, signed height).

    Candidates are local maxima of ``|grad|`` of at least 30 % of the largest
    one in the range; the one nearest ``hi`` (``toward_high_index``) or ``lo``
    wins. Position: centroid of the gradient of that sign about the maximum.
    """
    lo, hi = max(0, lo), min(grad.size, hi)
    if hi - lo < 1:
        raise ValueError("no room for a Cu layer next to the electrolyte")
    g = np.abs(grad[lo:hi])
    thr = 0.3 * g.max()
    ext = np.concatenate([[-1.0], g, [-1.0]])
    cand = [k for k in range(g.size) if g[k] >= thr and g[k] >= ext[k] and g[k] >= ext[k + 2]]
    k = lo + (max(cand) if toward_high_index else min(cand))
    sign = 1.0 if grad[k] > 0 else -1.0
    a, b = max(0, k - half), min(grad.size, k + half + 1)
    w = np.clip(sign * grad[a:b], 0, None)
    pos = float(np.sum(w * (np.arange(a, b) + 0.5)) / w.sum()) if w.sum() > 0 else k + 0.5
    return pos, float(sign * w.sum())


def find_layers(
    profile: Any,
    pixel_um: float,
    *,
    top_first: bool = True,
    cu_width_px: int = 3,
    cu_snr: float = 5.0,
) -> dict[str, float]:
    """Cu current collectors and Li/electrolyte interfaces from a stack profile.

    ``profile``: attenuation per row across the stack (:func:`layer_profile`
    of a volume, or ``radiography.vertical_profile`` of a radiogram).
    ``top_first``: index 0 is the top of the cell (row 0 is the top of a
    detector image).

    * The hybrid electrolyte (HSE, strongly absorbing ceramic) is the widest
      run of the profile, cleared of peaks narrower than ``cu_width_px``
      (grey opening), above half-way between its low and top levels.
    * Each Li/HSE interface is the centroid of the profile's gradient across
      that run's edge (sub-pixel: the middle of a blurred or partial-volume
      step, even when the electrolyte's level keeps rising inside because of
      its particles).
    * Each Cu coating (0.5–1 µm, a fraction of a pixel) sits at the face of
      its PEEK spacer, where the profile steps from the Li up to the spacer:
      the nearest clear step beyond the Li layer. When the coating shows as
      a narrow peak there (white top-hat above ``cu_snr`` times its noise),
      the peak's centroid is taken instead. Seen edge-on, a sheet covering
      1/7 of a pixel row removes only ~1/7 of that row's intensity however
      dense it is, so in radiograms the coating mostly shows as that step.

    Returns positions in profile index (rows, sub-pixel) and lengths in µm:
    ``cu_top``, ``cu_bottom``, ``li_hse_top``, ``hse_li_bottom``,
    ``cu_to_cu_um``, ``top_li_um`` (top Cu to the top Li/HSE interface),
    ``hse_um``, ``bottom_li_um`` (the source paper calls this one unreliable),
    ``pixel_um``.
    """
    p = np.asarray(profile, dtype=np.float64)
    n = p.size
    if not top_first:
        p = p[::-1]
    if n < 12:
        raise ValueError("profile too short")
    p = np.where(np.isfinite(p), p, np.nanmedian(p))
    opened = ndi.grey_opening(p, size=max(2, cu_width_px), mode="nearest")
    tophat = p - opened  # what is narrower than cu_width_px: a visible Cu coating
    base = ndi.median_filter(opened, size=3, mode="nearest")
    lo, hi = float(np.percentile(base, 5)), float(base.max())
    above = base > 0.5 * (lo + hi)
    lab, nlab = ndi.label(above)
    if nlab == 0 or hi <= lo:
        raise ValueError("no electrolyte layer in the profile")
    sizes = ndi.sum(above, lab, index=np.arange(1, nlab + 1))
    idx = np.flatnonzero(lab == int(np.argmax(sizes)) + 1)
    s0, s1 = int(idx[0]), int(idx[-1])
    if s0 < 4 or s1 > n - 5:
        raise ValueError("the electrolyte reaches the end of the profile: no Cu on one side")
    grad = np.diff(p)  # grad[k] sits at k + 0.5
    x_top = _edge(grad, s0 - 4, s0 + 3, rising=True)
    x_bot = _edge(grad, s1 - 3, s1 + 4, rising=False)

    grad_o = np.diff(opened)
    # the profile's own noise, from its row-to-row differences (robust)
    noise = 1.4826 * float(np.median(np.abs(grad))) / math.sqrt(2.0) + 1e-12

    def cu_at(step: float) -> float:
        k0 = int(round(step))
        a, b = max(0, k0 - 2), min(n, k0 + 3)
        k = a + int(np.argmax(tophat[a:b]))
        if tophat[k] > cu_snr * noise and tophat[k] > 0:
            return _centroid(tophat, k, 1)
        return step

    top_step, _ = _nearest_step(grad_o, 0, int(math.floor(x_top)) - 2, toward_high_index=True)
    bot_step, _ = _nearest_step(grad_o, int(math.ceil(x_bot)) + 2, n - 1, toward_high_index=False)
    cu_top = cu_at(top_step)
    cu_bot = cu_at(bot_step)

    def orig(x: float) -> float:
        return x if top_first else (n - 1) - x

    return {
        "cu_top": orig(cu_top),
        "cu_bottom": orig(cu_bot),
        "li_hse_top": orig(x_top),
        "hse_li_bottom": orig(x_bot),
        "cu_to_cu_um": (cu_bot - cu_top) * pixel_um,
        "top_li_um": (x_top - cu_top) * pixel_um,
        "hse_um": (x_bot - x_top) * pixel_um,
        "bottom_li_um": (cu_bot - x_bot) * pixel_um,
        "pixel_um": float(pixel_um),
    }
