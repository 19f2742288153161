"""Projections and sinograms before reconstruction: dark/flat correction, −ln,
the 360° → 180° fold, stripe (ring) suppression. Pure functions on arrays.

Array conventions and the method: ``docs/reduction-xct.md``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["MIN_TRANSMISSION", "normalize", "minus_log", "fold_to_180", "suppress_stripes"]


#: Smallest transmission kept by :func:`normalize` (−ln of it is ~13.8).
MIN_TRANSMISSION = 1e-6


def _mean_frame(frames: Any) -> np.ndarray | None:
    """Average a stack of frames (n, row, col) or pass a single frame through."""
    if frames is None:
        return None
    arr = np.asarray(frames, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr.mean(axis=0, dtype=np.float64).astype(np.float32)
    if arr.ndim != 2:
        raise ValueError(f"flats/darks must be 2D or a 3D stack, got shape {arr.shape}")
    return arr


def normalize(
    projections: Any, flats: Any, darks: Any = None, *, min_transmission: float = MIN_TRANSMISSION
) -> np.ndarray:
    """Dark/flat correction: transmission ``(P - D) / (F - D)``, clipped ``> 0``.

    ``projections`` may be one frame ``(row, col)`` or a stack ``(n, row, col)``;
    ``flats`` and ``darks`` a frame or a stack (averaged). ``darks=None`` means
    a zero dark current. Returns float32 of the shape of ``projections``.
    """
    flat = _mean_frame(flats)
    if flat is None:
        raise ValueError("normalize needs flats")
    dark = _mean_frame(darks)
    if dark is None:
        dark = np.zeros_like(flat)
    if flat.shape != dark.shape:
        raise ValueError(f"flats {flat.shape} and darks {dark.shape} differ in shape")
    proj = np.asarray(projections, dtype=np.float32)
    if proj.shape[-2:] != flat.shape:
        raise ValueError(f"projections {proj.shape} do not match flats {flat.shape}")
    den = flat - dark
    # dead flat pixels: keep them finite, they become stripes handled later
    den = np.where(den > 1e-6, den, np.float32(1e-6)).astype(np.float32)
    trans = (proj - dark) / den
    np.clip(trans, min_transmission, None, out=trans)
    return trans.astype(np.float32, copy=False)


def minus_log(transmission: Any, *, min_transmission: float = MIN_TRANSMISSION) -> np.ndarray:
    """Line integrals ``-ln(T)`` (float32), with ``T`` clipped to ``min_transmission``."""
    t = np.asarray(transmission, dtype=np.float32)
    return (-np.log(np.clip(t, min_transmission, None))).astype(np.float32, copy=False)


def _angular_step(angles_deg: np.ndarray) -> float:
    d = np.abs(np.diff(np.sort(np.mod(angles_deg, 360.0))))
    d = d[d > 1e-9]
    return float(np.median(d)) if d.size else 1.0


def _coverage(angles_deg: np.ndarray) -> float:
    a = np.asarray(angles_deg, dtype=float)
    return float(a.max() - a.min()) if a.size else 0.0


def _shift_columns(data: np.ndarray, shift: float, *, pad: int = 16) -> np.ndarray:
    """Shift along the last axis by ``shift`` columns (Fourier, edge-extended)."""
    if abs(shift) < 1e-6:
        return data
    from scipy import fft as sfft

    n = data.shape[-1]
    m = sfft.next_fast_len(n + 2 * pad, real=True)
    widths = [(0, 0)] * data.ndim
    widths[-1] = (pad, m - n - pad)
    ext = np.pad(np.asarray(data, dtype=np.float32), widths, mode="edge")
    ramp = np.exp(-2j * np.pi * sfft.rfftfreq(m) * shift).astype(np.complex64)
    out = sfft.irfft(sfft.rfft(ext, axis=-1) * ramp, n=m, axis=-1)
    return out[..., pad : pad + n].astype(np.float32, copy=False)


def fold_to_180(sino: np.ndarray, angles_deg: Any, center: float) -> tuple[np.ndarray, int]:
    """Centre a sinogram on its axis and resample it onto a uniform 0..180° grid.

    ``sino`` is ``(angle, column)`` or ``(angle, slices, column)`` of line
    integrals. The data are shifted so that the axis falls on the middle column
    of an odd width ``W`` (``W = ncol`` or ``ncol + 1``), then every projection
    at ``theta >= 180`` is mirrored onto ``theta - 180`` (parallel beam), the two
    halves are averaged where they coincide, and the result is interpolated
    linearly in angle onto ``M + 1`` rows at ``k * 180 / M`` degrees (0 and 180
    both included, the grid algotom's DFI expects).

    Returns ``(sino180, W)``.
    """
    sino = np.asarray(sino, dtype=np.float32)
    angles = np.asarray(angles_deg, dtype=float)
    if sino.shape[0] != angles.size:
        raise ValueError(f"{angles.size} angles for a sinogram of {sino.shape[0]} rows")
    ncol = sino.shape[-1]
    width = ncol if ncol % 2 else ncol + 1
    if width != ncol:
        pad = [(0, 0)] * sino.ndim
        pad[-1] = (0, 1)
        sino = np.pad(sino, pad, mode="edge")
    c0 = (width - 1) / 2.0
    sino = _shift_columns(sino, c0 - center)

    a = np.mod(angles - angles[0], 360.0)
    upper = a >= 180.0 - 1e-9
    phi = np.where(upper, a - 180.0, a)
    order = np.argsort(phi, kind="stable")
    phi = phi[order]
    flip = upper[order]
    # group (nearly) identical angles and average them
    step = _angular_step(angles)
    tol = 0.25 * step
    groups = np.concatenate([[0], np.cumsum(np.diff(phi) > tol)])
    data = sino[order]
    data[flip] = data[flip][..., ::-1]
    starts = np.flatnonzero(np.concatenate([[True], np.diff(groups) > 0]))
    counts = np.diff(np.append(starts, groups.size)).astype(np.float32)
    shape = (starts.size,) + (1,) * (sino.ndim - 1)
    rows = np.add.reduceat(data, starts, axis=0) / counts.reshape(shape)
    gphi = np.add.reduceat(phi, starts) / counts
    if gphi[-1] > 180.0 - tol:  # a group that sits at 180 == mirrored 0
        rows = rows[:-1]
        gphi = gphi[:-1]
    # periodic continuation: angle phi + 180 is the mirror of phi
    ext_phi = np.concatenate([gphi[-1:] - 180.0, gphi, gphi[:1] + 180.0])
    ext = np.concatenate([rows[-1:, ..., ::-1], rows, rows[:1, ..., ::-1]], axis=0)
    m = max(int(round(180.0 / step)), 2)
    grid = np.linspace(0.0, 180.0, m + 1)
    hi = np.clip(np.searchsorted(ext_phi, grid, side="right"), 1, ext_phi.size - 1)
    lo = hi - 1
    w = (grid - ext_phi[lo]) / np.maximum(ext_phi[hi] - ext_phi[lo], 1e-12)
    w = w.reshape((-1,) + (1,) * (sino.ndim - 1)).astype(np.float32)
    out = (1.0 - w) * ext[lo] + w * ext[hi]
    return np.ascontiguousarray(out, dtype=np.float32), width


def _wavelet_levels(nrow: int, ncol: int) -> int:
    """The decomposition levels algotom's Fourier-wavelet filter can use on an
    ``nrow`` x ``ncol`` sinogram (it pads each side by 10 %, at most 150, and
    stops 16 pixels short)."""
    pad = min(150, int(0.1 * min(nrow, ncol)))
    size = min(nrow, ncol) + 2 * pad
    return int(math.floor(math.log2(size / 16.0))) if size > 0 else 0


def suppress_stripes(
    sinogram: Any, *, method: str | None = "sorting", **options: Any
) -> np.ndarray:
    """Remove stripe artifacts (rings after reconstruction) from sinograms.

    ``sinogram``: ``(angle, column)`` or a stack ``(angle, slices, column)``.
    ``method`` (all from algotom):

    * ``"wavelet_fft"``: Münch's Fourier-wavelet filter
      (``remove_stripe_based_wavelet_fft``); ~0.25 s for a 1601 x 1000
      sinogram here, the default of :func:`reconstruct`;
    * ``"sorting"``: Vo's sorting + median filter
      (``remove_stripe_based_sorting``), better on partial stripes; ~2 s;
    * ``"all"``: ``remove_all_stripe`` (dead, large and small stripes); ~3 s;
    * ``None``: no filtering.

    Extra keyword arguments go to the algotom function. A sinogram too small for
    one level of the wavelet decomposition (fewer than ~27 angles or columns
    over 180°, e.g. a scan of 11 projections) is returned unfiltered by
    ``"wavelet_fft"``: there is no stripe band to damp.
    """
    if method in (None, "none"):
        return np.asarray(sinogram, dtype=np.float32)
    from algotom.prep import removal

    funcs = {
        "sorting": removal.remove_stripe_based_sorting,
        "all": removal.remove_all_stripe,
        "wavelet_fft": removal.remove_stripe_based_wavelet_fft,
    }
    if method not in funcs:
        raise ValueError(f"unknown stripe method {method!r}; one of {sorted(funcs)}")
    func = funcs[method]
    if method == "sorting":
        options.setdefault("size", 21)
    sino = np.asarray(sinogram, dtype=np.float32)
    if method == "wavelet_fft" and _wavelet_levels(sino.shape[0], sino.shape[-1]) < 1:
        return sino
    if sino.ndim == 2:
        return np.asarray(func(sino, **options), dtype=np.float32)
    out = np.empty_like(sino)
    for k in range(sino.shape[1]):
        out[:, k, :] = func(sino[:, k, :], **options)
    return out
