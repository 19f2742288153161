"""Pure reduction functions for operando X-ray CT of the pressurized cell.

Everything here works on numpy arrays (or anything sliceable like an h5py
dataset) and knows nothing of bluesky, EPICS or the simulators: the numbers
must come out of the data alone.

Conventions
-----------
* Projections are shaped ``(angle, row, column)``; a sinogram is
  ``(angle, column)``; angles are in degrees.
* ``center`` is the detector column (0-based, pixel centres on integers) onto
  which the rotation axis projects.
* Geometry is parallel beam: the projection at angle ``theta`` of a point
  ``(x, y)`` lands on column ``center + x cos(theta) + y sin(theta)``.
* Volumes are shaped ``(row, y, x)``, float32, in linear attenuation per voxel
  (mu times the voxel size, dimensionless). ``x`` and ``y`` have the width of the
  detector, and the rotation axis sits at ``x = y = ncol // 2``. Voxels outside
  the circle that every projection saw are 0.
  A stage that turns the other way round gives the mirror image (y → −y):
  distances, layer positions and radial directions do not change.
* The cell's layers are horizontal, so the detector rows (and the volume's first
  axis) run along the stack. Row 0 is the top of the image.

Libraries (chosen by measurement, see ``benchmarks/bench_reconstruction.py``):

* reconstruction: algotom's direct Fourier inversion (DFI, a gridrec-class
  method), one process per core. A 1000-px slice with 1601 views over 360°
  (folded onto 801 over 180°) takes ~1.2 s on one core; scikit-image's
  ``iradon`` ~12.5 s, astra-toolbox's CPU FBP ~9 s (single-threaded),
  algotom's numba FBP ~1.9 s on both cores. A full 970-slice volume projects
  to ~11 min on the 2-core machine, all corrections included.
* centre of rotation: views registered with the mirror of the views 180°
  later (scikit-image phase correlation), on the rows that change with angle;
  algotom's ``find_center_vo`` for 180° scans.
* stripes (rings): algotom's filters, Münch's wavelet-FFT by default.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "normalize",
    "minus_log",
    "find_center",
    "find_center_projections",
    "suppress_stripes",
    "fold_to_180",
    "reconstruct",
    "reconstruct_sinogram",
    "layer_profile",
    "find_layers",
    "electrode_diameter",
    "electrode_geometry",
    "segment_particles",
    "match_particles",
]

#: Smallest transmission kept by :func:`normalize` (−ln of it is ~13.8).
MIN_TRANSMISSION = 1e-6


# --------------------------------------------------------------------------
# Corrections
# --------------------------------------------------------------------------

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


def normalize(projections: Any, flats: Any, darks: Any = None, *,
              min_transmission: float = MIN_TRANSMISSION) -> np.ndarray:
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


# --------------------------------------------------------------------------
# Angles and the 360 -> 180 degree fold
# --------------------------------------------------------------------------

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
    return out[..., pad:pad + n].astype(np.float32, copy=False)


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


# --------------------------------------------------------------------------
# Centre of rotation
# --------------------------------------------------------------------------

def _opposite_pairs(angles_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Index pairs (i, j) with angle[j] ≈ angle[i] + 180°, or None."""
    a = np.asarray(angles_deg, dtype=float)
    step = _angular_step(a)
    tol = 0.26 * step
    i_list, j_list = [], []
    srt = np.argsort(a)
    sa = a[srt]
    for i, ang in enumerate(a):
        k = np.searchsorted(sa, ang + 180.0)
        for kk in (k - 1, k):
            if 0 <= kk < sa.size and abs(sa[kk] - ang - 180.0) <= tol:
                i_list.append(i)
                j_list.append(int(srt[kk]))
                break
    if len(i_list) < 2:
        return None
    return np.asarray(i_list), np.asarray(j_list)


def _mirror_center(first: np.ndarray, opposite: np.ndarray) -> float:
    """Axis column from views ``first`` and the views 180° later ``opposite``.

    Both are ``(n, column)`` stacks (rows of sinograms). In parallel beam the
    view at theta + 180° is the mirror of the one at theta about the axis:
    ``opposite[:, ::-1](u) = first(u + d)`` with ``d = 2 c - (ncol - 1)``. ``d``
    comes from phase correlation with an upsampled DFT (scikit-image), a Hann
    window along the columns keeping the truncated edges quiet.
    """
    from skimage.registration import phase_cross_correlation

    ncol = first.shape[-1]
    win = np.hanning(ncol)[None, :].astype(np.float32)
    a = np.asarray(first, dtype=np.float32)
    b = np.asarray(opposite, dtype=np.float32)[:, ::-1]
    a = (a - a.mean(axis=1, keepdims=True)) * win
    b = (b - b.mean(axis=1, keepdims=True)) * win
    shift = phase_cross_correlation(a, b, upsample_factor=50, normalization="phase")[0]
    return float((ncol - 1 + shift[-1]) / 2.0)


def find_center(sinogram: Any, angles: Any, *, method: str = "auto") -> float:
    """Column of the rotation axis from one sinogram ``(angle, column)``.

    ``sinogram`` holds line integrals (−ln T). ``angles`` in degrees.

    Methods:

    * ``"pairs"`` (default when the scan has views 180° apart, e.g. 360°
      scans): every view is registered with the mirror of the view 180° later
      (phase correlation, :func:`_mirror_center`). Exact for parallel beam and
      insensitive to the sample running out of the field of view, since both
      views see the same truncation. Within ~0.1 px on the test phantoms.
    * ``"vo"`` (default for 180° scans): Vo's Fourier double-wedge metric
      (``algotom.prep.calculation.find_center_vo``) on the 0–180° part.
    """
    sino = np.asarray(sinogram, dtype=np.float32)
    ang = np.asarray(angles, dtype=float)
    if sino.ndim != 2 or sino.shape[0] != ang.size:
        raise ValueError(f"sinogram {sino.shape} does not match {ang.size} angles")
    sino = np.nan_to_num(sino)
    ncol = sino.shape[1]
    pairs = _opposite_pairs(ang)
    if method == "auto":
        method = "pairs" if pairs is not None and pairs[0].size >= 8 else "vo"
    if method == "pairs":
        if pairs is None:
            raise ValueError("no projections 180° apart: use method='vo'")
        i, j = pairs
        return _mirror_center(sino[i], sino[j])
    if method == "vo":
        from algotom.prep.calculation import find_center_vo

        rel = ang - ang.min()
        sel = rel <= 180.0 + 0.26 * _angular_step(ang)
        sino180 = sino[sel][np.argsort(rel[sel])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(find_center_vo(sino180, start=ncol // 2 - ncol // 8,
                                        stop=ncol // 2 + ncol // 8, ncore=1))
    raise ValueError(f"unknown method {method!r}")


def _structured_rows(sampled: np.ndarray, n_rows: int) -> list[int]:
    """The ``n_rows`` detector rows whose line integrals change most with angle.

    ``sampled``: a few views ``(angle, row, column)`` of −ln T. The cell is
    mostly coaxial cylinders, identical at every angle: those rows say nothing
    about the axis; rows through the particles do.
    """
    score = np.nan_to_num(np.asarray(sampled, dtype=np.float32)).std(axis=0).mean(axis=1)
    order = np.argsort(score)[::-1]
    return sorted(int(r) for r in order[:n_rows])


def find_center_projections(line_integrals: Any, angles: Any, *, n_rows: int = 8,
                            rows: Sequence[int] | None = None) -> float:
    """Axis column from a stack of projections ``(angle, row, column)`` of −ln T.

    The sinograms of the ``n_rows`` rows that change most with angle (judged
    on 32 views), or of the given ``rows``, are registered together, every
    view against the mirror of the one 180° later (see :func:`find_center`);
    a scan without such pairs takes the median of Vo's method over those rows.
    """
    proj = line_integrals
    ang = np.asarray(angles, dtype=float)
    if rows is None:
        views = np.unique(np.linspace(0, ang.size - 1, min(32, ang.size)).astype(int))
        rows = _structured_rows(np.asarray(proj[views]), n_rows)
    rows = sorted(int(r) for r in rows)
    sinos = np.nan_to_num(np.asarray(proj[:, rows, :], dtype=np.float32))  # (angle, rows, col)
    pairs = _opposite_pairs(ang)
    if pairs is None or pairs[0].size < 8:
        return float(np.median([find_center(sinos[:, k, :], ang, method="vo")
                                for k in range(len(rows))]))
    i, j = pairs
    first = sinos[i].transpose(1, 0, 2).reshape(-1, sinos.shape[-1])
    opposite = sinos[j].transpose(1, 0, 2).reshape(-1, sinos.shape[-1])
    return _mirror_center(first, opposite)


# --------------------------------------------------------------------------
# Stripes (rings)
# --------------------------------------------------------------------------

def suppress_stripes(sinogram: Any, *, method: str | None = "sorting", **options: Any) -> np.ndarray:
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

    Extra keyword arguments go to the algotom function.
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
    if sino.ndim == 2:
        return np.asarray(func(sino, **options), dtype=np.float32)
    out = np.empty_like(sino)
    for k in range(sino.shape[1]):
        out[:, k, :] = func(sino[:, k, :], **options)
    return out


# --------------------------------------------------------------------------
# Reconstruction
# --------------------------------------------------------------------------

def _dfi(sino180: np.ndarray, width: int, filter_name: str | None,
         pad_rate: float) -> np.ndarray:
    """algotom DFI of centred 0..180° sinograms ``(M+1, slices, W)`` → ``(slices, W, W)``."""
    from algotom.rec.reconstruction import dfi_reconstruction

    c0 = (width - 1) / 2.0
    if sino180.ndim == 2:
        sino180 = sino180[:, None, :]
    out = np.empty((sino180.shape[1], width, width), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # one 2D call per slice: algotom's 3D path re-splines the whole chunk
        for k in range(sino180.shape[1]):
            rec = dfi_reconstruction(np.ascontiguousarray(sino180[:, k, :]), c0, angles=None,
                                     ratio=None, filter_name=filter_name, pad_rate=pad_rate,
                                     pad_mode="edge", apply_log=False, ncore=1)
            # algotom's image has y running against this module's convention
            out[k] = rec[::-1, :]
    return out


def _fov_mask(ncol: int, center: float) -> np.ndarray:
    """Disc (y, x) of the output grid that every projection covered."""
    axis = ncol // 2
    radius = min(center, ncol - 1 - center) - 0.5
    yy, xx = np.ogrid[:ncol, :ncol]
    return (yy - axis) ** 2 + (xx - axis) ** 2 <= radius ** 2


def _reconstruct_block(block: np.ndarray, angles: np.ndarray, center: float,
                       flat: np.ndarray | None, dark: np.ndarray | None, log: bool,
                       stripes: str | None, filter_name: str | None,
                       pad_rate: float) -> np.ndarray:
    """Worker: raw rows ``(angle, rows, col)`` → slices ``(rows, col, col)``."""
    if flat is not None:
        data = normalize(block, flat, dark)
    else:
        data = np.asarray(block, dtype=np.float32)
    if log:
        data = minus_log(data)
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    ncol = data.shape[-1]
    sino180, width = fold_to_180(data, angles, center)
    if stripes:
        # after the fold: half the rows, and a column-gain stripe stays a stripe
        sino180 = suppress_stripes(sino180, method=stripes)
    rec = _dfi(sino180, width, filter_name, pad_rate)
    rec = rec[:, :ncol, :ncol]
    rec *= _fov_mask(ncol, center)[None]
    return rec


def reconstruct(projections: Any, angles: Any, *, flats: Any = None, darks: Any = None,
                center: float | None = None, stripes: str | None = "wavelet_fft",
                filter_name: str | None = "hann", pad_rate: float = 0.25,
                log: bool = True, rows: slice | None = None,
                chunk_rows: int = 8, workers: int | None = None) -> np.ndarray:
    """Reconstruct a volume ``(row, y, x)`` float32 in attenuation per voxel.

    ``projections`` ``(angle, row, column)`` (numpy array or an h5py dataset:
    it is read ``chunk_rows`` rows at a time). ``angles`` in degrees, any
    coverage of at least 180° (360° scans are folded onto 180°, averaging the
    opposite views).

    * ``flats``/``darks``: frames or stacks; given flats, the raw counts are
      dark/flat corrected. Without flats the projections are taken as
      transmissions already corrected (:func:`normalize`); with
      ``log=False`` as line integrals (−ln T) already.
    * ``center``: axis column; found from the data when None
      (:func:`find_center_projections` on the rows that change most with
      angle: views registered with the mirror of the views 180° later, or
      Vo's method for 180° scans).
    * ``stripes``: ring suppression, see :func:`suppress_stripes`.
    * ``filter_name``: smoothing window on the ramp (algotom names: "hann",
      None for a plain ramp, ...).
    * ``pad_rate``: edge-extension of each sinogram, as a fraction of its width
      on each side, before the Fourier steps: the cell is wider than the field
      of view (interior tomography) and the extension keeps truncation from
      cupping the slices.
    * ``workers``: processes (each reconstructs ``chunk_rows`` slices at a time);
      default: all cores for more than ``4 * chunk_rows`` slices, else in process.
    """
    ang = np.asarray(angles, dtype=float)
    nang, nrow, ncol = projections.shape
    if ang.size != nang:
        raise ValueError(f"{ang.size} angles for {nang} projections")
    if _coverage(ang) < 180.0 - 1.5 * _angular_step(ang):
        raise ValueError(f"angles cover {_coverage(ang):.1f}°; at least 180° needed")
    flat = _mean_frame(flats)
    dark = _mean_frame(darks)
    if flat is None and dark is not None:
        raise ValueError("darks without flats")
    row_sel = range(nrow)[rows] if rows is not None else range(nrow)
    row_list = list(row_sel)
    if not row_list:
        return np.zeros((0, ncol, ncol), np.float32)

    if center is None:
        center = _auto_center(projections, ang, flat, dark, log)

    out = np.zeros((len(row_list), ncol, ncol), dtype=np.float32)
    chunks = [row_list[k:k + chunk_rows] for k in range(0, len(row_list), chunk_rows)]

    def block_of(rws: list[int]) -> np.ndarray:
        r0, r1 = rws[0], rws[-1] + 1
        if r1 - r0 == len(rws):
            return np.asarray(projections[:, r0:r1, :])
        return np.asarray(projections[:, rws, :])

    def flat_of(rws: list[int]) -> tuple[np.ndarray | None, np.ndarray | None]:
        f = flat[rws] if flat is not None else None
        d = dark[rws] if dark is not None else None
        return f, d

    if workers is None:
        workers = (os.cpu_count() or 1) if len(row_list) > 4 * chunk_rows else 1
    args = (ang, float(center))
    opts = (log, stripes, filter_name, pad_rate)
    if workers <= 1:
        pos = 0
        for rws in chunks:
            f, d = flat_of(rws)
            out[pos:pos + len(rws)] = _reconstruct_block(block_of(rws), *args, f, d, *opts)
            pos += len(rws)
        return out

    try:
        _run_pool(out, chunks, block_of, flat_of, args, opts, workers)
    except BrokenProcessPool:
        # e.g. a script without the ``if __name__ == "__main__":`` guard under
        # forkserver: finish in this process rather than fail
        warnings.warn("reconstruction worker processes failed; continuing in-process",
                      RuntimeWarning, stacklevel=2)
        pos = 0
        for rws in chunks:
            f, d = flat_of(rws)
            out[pos:pos + len(rws)] = _reconstruct_block(block_of(rws), *args, f, d, *opts)
            pos += len(rws)
    return out


def _pool_context():
    """``fork`` while this process has one thread (cheap, no re-import of
    ``__main__``), else ``forkserver`` (forking a threaded process, e.g. one
    running a RunEngine or caproto, can deadlock the child)."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return get_context("fork")
    return get_context("forkserver" if "forkserver" in methods else "spawn")


def _run_pool(out, chunks, block_of, flat_of, args, opts, workers) -> None:
    """Reconstruct ``chunks`` in worker processes, at most 2 blocks per worker in flight."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        pending: dict = {}
        starts = []
        pos = 0
        for rws in chunks:
            starts.append(pos)
            pos += len(rws)
        it = iter(zip(chunks, starts))

        def submit() -> bool:
            nxt = next(it, None)
            if nxt is None:
                return False
            rws, start = nxt
            fut = pool.submit(_reconstruct_block, block_of(rws), *args, *flat_of(rws), *opts)
            pending[fut] = start
            return True

        for _ in range(2 * workers):
            if not submit():
                break
        while pending:
            fut = next(iter(pending))
            start = pending.pop(fut)
            rec = fut.result()
            out[start:start + rec.shape[0]] = rec
            submit()


def _auto_center(projections: Any, ang: np.ndarray, flat: np.ndarray | None,
                 dark: np.ndarray | None, log: bool, n_rows: int = 8) -> float:
    """Axis column from the data (:func:`find_center_projections`), reading
    32 views to pick the rows and then only those rows' sinograms."""

    def prep(frames: np.ndarray, rws) -> np.ndarray:
        frames = np.asarray(frames, dtype=np.float32)
        if flat is not None:
            frames = normalize(frames, flat[rws], dark[rws] if dark is not None else None)
        return minus_log(frames) if log else frames

    views = np.unique(np.linspace(0, ang.size - 1, min(32, ang.size)).astype(int))
    rows = _structured_rows(prep(np.asarray(projections[views]), slice(None)), n_rows)
    sinos = prep(np.asarray(projections[:, rows, :]), rows)
    return find_center_projections(sinos, ang, rows=range(len(rows)))


def reconstruct_sinogram(sinogram: Any, angles: Any, center: float, *,
                         filter_name: str | None = "hann", pad_rate: float = 0.25) -> np.ndarray:
    """One slice ``(y, x)`` from a sinogram of line integrals ``(angle, column)``."""
    sino = np.asarray(sinogram, dtype=np.float32)[:, None, :]
    return _reconstruct_block(sino, np.asarray(angles, float), float(center), None, None,
                              False, None, filter_name, pad_rate)[0]


# --------------------------------------------------------------------------
# Layers along the stack
# --------------------------------------------------------------------------

def layer_profile(volume_or_slice: Any, *, radius: float | None = None,
                  center: tuple[float, float] | None = None,
                  band: float = 0.5) -> np.ndarray:
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
        return img[:, max(0, c - half):min(ncol, c + half)].mean(axis=1)
    if arr.ndim != 3:
        raise ValueError("layer_profile needs a 2D slice or a 3D volume")
    ny, nx = arr.shape[1:]
    cy, cx = center if center is not None else (ny // 2, nx // 2)
    if radius is None:
        radius = 0.8 * (min(ny, nx) / 2.0 - 1)
    yy, xx = np.ogrid[:ny, :nx]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
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


def _nearest_step(grad: np.ndarray, lo: int, hi: int, *, toward_high_index: bool,
                  half: int = 2) -> tuple[float, float]:
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


def find_layers(profile: Any, pixel_um: float, *, top_first: bool = True,
                cu_width_px: int = 3, cu_snr: float = 5.0) -> dict[str, float]:
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
    ``hse_um``, ``bottom_li_um`` (the paper calls this one unreliable),
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


# --------------------------------------------------------------------------
# Electrode diameter
# --------------------------------------------------------------------------

def _radial_profile(img: np.ndarray, center_yx: tuple[float, float], r_max: float,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """Mean of ``img`` in 1-pixel rings about ``center_yx`` out to ``r_max``."""
    ny, nx = img.shape
    yy, xx = np.indices((ny, nx), dtype=np.float64)
    r = np.hypot(yy - center_yx[0], xx - center_yx[1])
    sel = r < r_max
    if mask is not None:
        sel &= mask
    k = np.floor(r[sel]).astype(int)
    n = int(np.ceil(r_max))
    sums = np.bincount(k, weights=img[sel], minlength=n)[:n]
    cnt = np.bincount(k, minlength=n)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = sums / cnt
    return prof  # prof[k]: ring k <= r < k + 1, centred at k + 0.5


def _disc_edges(prof: np.ndarray, r_min: float,
                min_fraction: float = 0.1) -> tuple[list[tuple[float, float]], float]:
    """Candidate disc edges in a radial profile: ``([(radius, step), ...], noise)``.

    The profile is cut into monotonic runs (of its lightly smoothed version);
    a run is an edge candidate when it is a step rather than a slow trend
    (most of its rise or fall within ±5 rings of its steepest point, which
    rules out the cupping of an interior scan), has the sign of the largest
    such step and at least ``min_fraction`` of its height. Radius: centroid
    of the gradient over the run (sub-pixel); sorted from the centre out.
    """
    prof = np.asarray(prof, dtype=float)
    good = np.isfinite(prof)
    if good.sum() < 8:
        return [], math.inf
    prof = np.interp(np.arange(prof.size), np.flatnonzero(good), prof[good])
    sm = ndi.gaussian_filter1d(prof, 1.0, mode="nearest")
    grad = np.diff(sm)  # grad[k] at radius k + 1 (between ring centres k+.5 and k+1.5)
    lo = int(max(1, r_min))
    g = grad[lo:]
    noise = float(1.4826 * np.median(np.abs(np.diff(prof[lo:])))) / math.sqrt(2) if g.size > 2 else math.inf
    if g.size < 3:
        return [], noise
    runs = []
    start = 0
    for k in range(1, g.size + 1):
        if k == g.size or np.sign(g[k]) != np.sign(g[start]):
            total = float(g[start:k].sum())
            peak = start + int(np.argmax(np.abs(g[start:k])))
            local = float(g[max(start, peak - 5):min(k, peak + 6)].sum())
            if abs(local) >= 0.4 * abs(total) and total != 0:
                w = np.abs(g[start:k])
                radius = float(np.sum(w * (np.arange(start, k) + lo + 1.0)) / w.sum())
                runs.append((radius, total))
            start = k
    if not runs:
        return [], noise
    main = max(runs, key=lambda r: abs(r[1]))
    sign = np.sign(main[1])
    cands = [(r, abs(st)) for r, st in runs
             if np.sign(st) == sign and abs(st) >= min_fraction * abs(main[1])]
    return sorted(cands), noise


def electrode_geometry(volume: Any, z_range: tuple[int, int] | slice, pixel_um: float, *,
                       center_yx: tuple[float, float] | None = None, edge: str = "outermost",
                       refine_center: bool = True, min_snr: float = 5.0,
                       min_contrast: float = 0.15) -> dict[str, Any]:
    """Li electrode disc in the rows ``z_range``: diameter and centre.

    The slab's slices are averaged and reduced to a radial profile (ring
    means) about the axis, which beats the voxel noise by the number of
    voxels per ring: Li and the argon around it differ by ~5e-5 per voxel
    only. Edge candidates are the steps of that profile (:func:`_disc_edges`)
    at least ``min_snr`` times the ring-mean noise and ``min_contrast`` of the
    level inside (Li against argon is a step of the whole Li attenuation; a
    ripple is not); ``edge="outermost"`` takes the outermost (with rows of
    the crept Li lip against a Cu face in ``z_range``, the footprint),
    ``"strongest"`` the largest. With ``refine_center`` the centre comes from
    a circle fitted to the edge found in 16 sectors.

    Returns ``diameter_um``, ``center_yx`` (voxels), ``step`` (edge height,
    attenuation per voxel), ``snr`` (step over the ring-mean noise),
    ``contrast`` (step over the level inside: Li against argon is a step of
    the whole Li attenuation, a ripple is not), ``truncated`` (no clear
    edge inside the field of view, away from its rim: the electrode is wider
    than the field, or invisible; then ``diameter_um`` means nothing).
    """
    zs = z_range if isinstance(z_range, slice) else slice(int(z_range[0]), int(z_range[1]))
    slab = np.asarray(volume[zs], dtype=np.float32)
    img = slab.mean(axis=0) if slab.ndim == 3 else slab
    ny, nx = img.shape
    axis = (ny // 2, nx // 2)
    inside = img != 0
    yy, xx = np.indices((ny, nx))
    rr = np.hypot(yy - axis[0], xx - axis[1])
    r_fov = float(rr[inside].max()) if inside.any() else min(ny, nx) / 2.0
    cy, cx = center_yx if center_yx is not None else axis
    r_min = 3.0

    margin = max(5.0, 0.03 * r_fov)  # the rim of an interior scan is unreliable

    def measure(c):
        """(radius, step, noise, contrast, r_lim) of the chosen edge about ``c``."""
        r_lim = r_fov - math.hypot(c[0] - axis[0], c[1] - axis[1]) - margin
        prof = _radial_profile(img, c, r_lim, inside)
        cands, noise = _disc_edges(prof, r_min)
        good = []
        for radius, step in cands:
            level = float(np.nanmedian(prof[int(r_min):max(int(radius) - 2, int(r_min) + 1)]))
            contrast = step / abs(level) if level else math.inf
            if radius <= r_lim - 2.0 and step >= min_snr * noise and contrast >= min_contrast:
                good.append((radius, step, contrast))
        if not good:
            return math.nan, 0.0, noise, 0.0, r_lim
        if edge == "outermost":
            radius, step, contrast = good[-1]
        elif edge == "strongest":
            radius, step, contrast = max(good, key=lambda t: t[1])
        else:
            raise ValueError(f"edge must be 'outermost' or 'strongest', not {edge!r}")
        return radius, step, noise, contrast, r_lim

    if refine_center and center_yx is None:
        for _ in range(2):
            r0, _, _, _, r_lim = measure((cy, cx))
            if not np.isfinite(r0):
                break
            ang = np.arctan2(yy - cy, xx - cx)
            pts = []
            for k in range(16):
                a0 = -np.pi + k * np.pi / 8
                sector = inside & (ang >= a0) & (ang < a0 + np.pi / 8)
                prof = _radial_profile(img, (cy, cx), r_lim, sector)
                # the strongest step of the sector's profile close to r0
                k0 = max(1, int(r0) - 8)
                cands, _ = _disc_edges(prof[k0:int(r0) + 9], 0)
                if not cands:
                    continue
                rk = max(cands, key=lambda t: t[1])[0] + k0
                if abs(rk - r0) < 6:
                    mid = a0 + np.pi / 16
                    pts.append((cy + rk * np.sin(mid), cx + rk * np.cos(mid)))
            if len(pts) < 8:
                break
            p = np.asarray(pts)
            # algebraic circle fit: y² + x² + D y + E x + F = 0
            A = np.column_stack([p[:, 0], p[:, 1], np.ones(len(p))])
            rhs = -(p[:, 0] ** 2 + p[:, 1] ** 2)
            sol = np.linalg.lstsq(A, rhs, rcond=None)[0]
            cy, cx = -sol[0] / 2, -sol[1] / 2
    radius, step, noise, contrast, r_lim = measure((cy, cx))
    snr = step / noise if noise > 0 else math.inf
    truncated = not np.isfinite(radius)
    return {
        "diameter_um": 2.0 * radius * pixel_um if np.isfinite(radius) else math.nan,
        "center_yx": (float(cy), float(cx)),
        "step": step,
        "snr": snr,
        "contrast": contrast,
        "truncated": bool(truncated),
    }


def electrode_diameter(volume: Any, z_range: tuple[int, int] | slice, pixel_um: float,
                       **kwargs: Any) -> float:
    """Area-equivalent Li electrode diameter in µm (see :func:`electrode_geometry`).

    Returns NaN, with a warning, when the disc runs out of the field of view
    (the operando 3.4 mm field is narrower than a ø4–5 mm electrode: use the
    overview scan).
    """
    geo = electrode_geometry(volume, z_range, pixel_um, **kwargs)
    if geo["truncated"]:
        warnings.warn("electrode reaches the edge of the field of view; diameter unknown",
                      RuntimeWarning, stacklevel=2)
        return float("nan")
    return float(geo["diameter_um"])


# --------------------------------------------------------------------------
# Ceramic particles
# --------------------------------------------------------------------------

def segment_particles(volume: Any, *, z_range: tuple[int, int] | slice | None = None,
                      snr: float = 6.0, threshold: float | None = None,
                      min_voxels: int = 2, max_extent: float = 0.25,
                      pixel_um: float | None = None) -> np.ndarray:
    """Strongly absorbing particles: ``(N, 4)`` rows of ``x, y, z, r_eq``.

    Each slice's own level (the median inside the field of view: PEEK, Li,
    electrolyte matrix, whatever the row crosses) is subtracted, leaving the
    particles as compact bright excess. They are detected where the excess
    passes ``snr`` times its robust noise (or ``threshold``, in attenuation
    per voxel above the slice level), then each is measured at half its own
    peak excess (the half-maximum contour of a blurred sphere is its
    surface): ``r_eq`` is the radius of the sphere of that many voxels, the
    position the excess-weighted centroid.

    Positions are in voxels of ``volume`` (``x``, ``y`` as in its last two
    axes, ``z`` counted from row 0 of the full volume whatever ``z_range``);
    with ``pixel_um`` all four columns are in µm. ``z_range``: the rows to
    search (default all), e.g. the electrolyte from :func:`find_layers`.
    Objects wider than ``max_extent`` of the slice (a layer, not a particle)
    or smaller than ``min_voxels`` at detection are dropped.
    """
    if z_range is None:
        zs = slice(0, volume.shape[0])
    else:
        zs = z_range if isinstance(z_range, slice) else slice(int(z_range[0]), int(z_range[1]))
    z0 = zs.start or 0
    vol = np.asarray(volume[zs], dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError("segment_particles needs a volume (row, y, x)")
    fov = np.any(vol != 0, axis=0)
    if not fov.any():
        return np.zeros((0, 4))
    level = np.array([np.median(sl[fov]) for sl in vol], dtype=np.float32)
    excess = (vol - level[:, None, None]) * fov[None]
    if threshold is not None:
        detect = excess > float(threshold)
    else:
        # noise per slice: rows through the electrolyte are far noisier (less
        # light) than rows through Li or PEEK
        sigma = np.array([1.4826 * np.median(np.abs(sl[fov])) for sl in excess]) + 1e-12
        detect = excess > snr * sigma[:, None, None].astype(np.float32)
    labels, nlab = ndi.label(detect)
    if nlab == 0:
        return np.zeros((0, 4))
    boxes = ndi.find_objects(labels)
    width = max(vol.shape[1], vol.shape[2])
    out = []
    for k, box in enumerate(boxes, start=1):
        if box is None:
            continue
        if max(box[1].stop - box[1].start, box[2].stop - box[2].start) > max_extent * width:
            continue
        obj = labels[box] == k
        if obj.sum() < min_voxels:
            continue
        sub = excess[box]
        peak_idx = np.unravel_index(np.argmax(np.where(obj, sub, -np.inf)), sub.shape)
        peak = float(sub[peak_idx])
        # the half-maximum region connected to the peak, in a margin around the object
        grow = tuple(slice(max(0, sl.start - 3), min(n, sl.stop + 3))
                     for sl, n in zip(box, excess.shape))
        win = excess[grow]
        pk = tuple(int(i + sl.start - g.start) for i, sl, g in zip(peak_idx, box, grow))
        half_lab, _ = ndi.label(win > 0.5 * peak)
        region = half_lab == half_lab[pk]
        w = np.where(region, win, 0.0)
        idx = np.indices(win.shape)
        cz, cy, cx = (float(np.sum(w * idx[d]) / w.sum()) + grow[d].start for d in range(3))
        r_eq = float(np.cbrt(3.0 * region.sum() / (4.0 * np.pi)))
        out.append((cx, cy, cz + z0, r_eq))
    arr = np.asarray(out, dtype=float).reshape(-1, 4)
    if pixel_um is not None:
        arr = arr * float(pixel_um)
    return arr


def match_particles(prev: Any, curr: Any, max_distance: float, *,
                    center: tuple[float, float] | None = None,
                    radius_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match particles of two scans; their displacements and radial components.

    ``prev``/``curr``: ``(N, 4)`` arrays from :func:`segment_particles`
    (x, y, z, r_eq). A one-to-one assignment (Hungarian, on distance plus
    ``radius_weight`` times the change of radius) among candidate pairs closer
    than ``max_distance``; unmatched particles are left out.

    ``center``: ``(x, y)`` of the cell axis for the radial direction (e.g. the
    rotation axis ``(ncol // 2, ncol // 2)`` or the electrode centre); default
    the centroid of ``prev``'s positions.

    Returns ``pairs`` (K, 2) indices into prev and curr, ``displacements``
    (K, 3) dx, dy, dz, and ``radial`` (K,) the in-plane displacement along
    the outward direction from the axis (positive: toward the edge).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial import cKDTree

    a = np.asarray(prev, dtype=float).reshape(-1, np.shape(prev)[-1] if np.ndim(prev) else 4)
    b = np.asarray(curr, dtype=float).reshape(-1, np.shape(curr)[-1] if np.ndim(curr) else 4)
    empty = (np.zeros((0, 2), int), np.zeros((0, 3)), np.zeros(0))
    if len(a) == 0 or len(b) == 0:
        return empty
    tree = cKDTree(b[:, :3])
    cand = tree.query_ball_point(a[:, :3], r=max_distance)
    ia = [i for i, c in enumerate(cand) if c]
    ib = sorted({j for c in cand for j in c})
    if not ia:
        return empty
    col = {j: k for k, j in enumerate(ib)}
    big = 1e9
    cost = np.full((len(ia), len(ib)), big)
    for r, i in enumerate(ia):
        for j in cand[i]:
            d = np.linalg.norm(b[j, :3] - a[i, :3])
            dr = abs(b[j, 3] - a[i, 3]) if a.shape[1] > 3 and b.shape[1] > 3 else 0.0
            cost[r, col[j]] = d + radius_weight * dr
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] < big
    pairs = np.column_stack([np.asarray(ia)[rows[ok]], np.asarray(ib)[cols[ok]]]).astype(int)
    disp = b[pairs[:, 1], :3] - a[pairs[:, 0], :3]
    cxy = np.asarray(center, dtype=float) if center is not None else a[:, :2].mean(axis=0)
    rvec = a[pairs[:, 0], :2] - cxy
    norm = np.linalg.norm(rvec, axis=1)
    unit = np.divide(rvec, norm[:, None], out=np.zeros_like(rvec), where=norm[:, None] > 0)
    radial = np.sum(disp[:, :2] * unit, axis=1)
    return pairs, disp, radial
