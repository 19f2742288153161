"""Reconstruction of a volume ``(row, y, x)`` from projections: algotom's direct
Fourier inversion, a few detector rows at a time, in worker processes.

Conventions, library choices and timings: ``docs/reduction-xct.md``.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

import numpy as np

from .center import _structured_rows, find_center_projections
from .projections import (
    _angular_step,
    _coverage,
    _mean_frame,
    fold_to_180,
    minus_log,
    normalize,
    suppress_stripes,
)

__all__ = ["reconstruct", "reconstruct_sinogram"]


def _dfi(sino180: np.ndarray, width: int, filter_name: str | None, pad_rate: float) -> np.ndarray:
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
            rec = dfi_reconstruction(
                np.ascontiguousarray(sino180[:, k, :]),
                c0,
                angles=None,
                ratio=None,
                filter_name=filter_name,
                pad_rate=pad_rate,
                pad_mode="edge",
                apply_log=False,
                ncore=1,
            )
            # algotom's image has y running against this module's convention
            out[k] = rec[::-1, :]
    return out


def _fov_mask(ncol: int, center: float) -> np.ndarray:
    """Disc (y, x) of the output grid that every projection covered."""
    axis = ncol // 2
    radius = min(center, ncol - 1 - center) - 0.5
    yy, xx = np.ogrid[:ncol, :ncol]
    return (yy - axis) ** 2 + (xx - axis) ** 2 <= radius**2


def _reconstruct_block(
    block: np.ndarray,
    angles: np.ndarray,
    center: float,
    flat: np.ndarray | None,
    dark: np.ndarray | None,
    log: bool,
    stripes: str | None,
    filter_name: str | None,
    pad_rate: float,
) -> np.ndarray:
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


def reconstruct(
    projections: Any,
    angles: Any,
    *,
    flats: Any = None,
    darks: Any = None,
    center: float | None = None,
    stripes: str | None = "wavelet_fft",
    filter_name: str | None = "hann",
    pad_rate: float = 0.25,
    log: bool = True,
    rows: slice | None = None,
    chunk_rows: int = 8,
    workers: int | None = None,
) -> np.ndarray:
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
    chunks = [row_list[k : k + chunk_rows] for k in range(0, len(row_list), chunk_rows)]

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
            out[pos : pos + len(rws)] = _reconstruct_block(block_of(rws), *args, f, d, *opts)
            pos += len(rws)
        return out

    try:
        _run_pool(out, chunks, block_of, flat_of, args, opts, workers)
    except BrokenProcessPool:
        # e.g. a script without the ``if __name__ == "__main__":`` guard under
        # forkserver: finish in this process rather than fail
        warnings.warn(
            "reconstruction worker processes failed; continuing in-process",
            RuntimeWarning,
            stacklevel=2,
        )
        pos = 0
        for rws in chunks:
            f, d = flat_of(rws)
            out[pos : pos + len(rws)] = _reconstruct_block(block_of(rws), *args, f, d, *opts)
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
            out[start : start + rec.shape[0]] = rec
            submit()


def _auto_center(
    projections: Any,
    ang: np.ndarray,
    flat: np.ndarray | None,
    dark: np.ndarray | None,
    log: bool,
    n_rows: int = 8,
) -> float:
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


def reconstruct_sinogram(
    sinogram: Any,
    angles: Any,
    center: float,
    *,
    filter_name: str | None = "hann",
    pad_rate: float = 0.25,
) -> np.ndarray:
    """One slice ``(y, x)`` from a sinogram of line integrals ``(angle, column)``."""
    sino = np.asarray(sinogram, dtype=np.float32)[:, None, :]
    return _reconstruct_block(
        sino,
        np.asarray(angles, float),
        float(center),
        None,
        None,
        False,
        None,
        filter_name,
        pad_rate,
    )[0]
