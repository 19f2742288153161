"""Reconstruction of a volume ``(row, y, x)`` from projections: algotom's direct
Fourier inversion, a few detector rows at a time (slabs), the slabs on a
``dask.distributed`` cluster: a ``LocalCluster`` of this machine's cores by
default, or the scheduler at ``$OPERANDO_DASK_SCHEDULER`` (:func:`dask_client`).

Conventions, library choices and timings: ``docs/reduction-xct.md``;
the cluster: ``docs/workers.md``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import warnings
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

__all__ = ["reconstruct", "reconstruct_sinogram", "dask_client", "close_clients", "SCHEDULER_ENV"]

logger = logging.getLogger(__name__)

#: address of a ``dask.distributed`` scheduler (``tcp://host:8786``) to send the
#: slabs to; unset: a ``LocalCluster`` started by the first large reconstruction
SCHEDULER_ENV = "OPERANDO_DASK_SCHEDULER"
#: volumes up to this size are reconstructed in process unless a scheduler is
#: named (a binned test scan: seconds; starting a cluster costs about as much)
LOCAL_MAX_BYTES = 64 << 20


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
    scheduler: str | None = None,
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
    * ``workers``: the slabs of ``chunk_rows`` slices go to a ``dask.distributed``
      cluster (:func:`dask_client`) unless ``workers`` is 1 (in process); the
      default is the cluster for more than ``4 * chunk_rows`` slices and
      ``LOCAL_MAX_BYTES`` of volume, else in process, and always the cluster
      when a scheduler is named. ``scheduler`` (default
      ``$OPERANDO_DASK_SCHEDULER``): the address of a running scheduler (its
      workers, ``workers`` ignored); without one a ``LocalCluster`` of
      ``workers`` processes (default: one per core). Every slab is computed by
      the same function wherever it runs: the volume is the same to the bit.
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

    if scheduler is None:
        scheduler = os.environ.get(SCHEDULER_ENV) or None
    if workers is None:
        big = len(row_list) > 4 * chunk_rows and out.nbytes > LOCAL_MAX_BYTES
        workers = 0 if (big or scheduler is not None) else 1  # 0: the cluster's own size
    args = (ang, float(center))
    opts = (log, stripes, filter_name, pad_rate)

    def in_process() -> np.ndarray:
        pos = 0
        for rws in chunks:
            f, d = flat_of(rws)
            out[pos : pos + len(rws)] = _reconstruct_block(block_of(rws), *args, f, d, *opts)
            pos += len(rws)
        return out

    if workers == 1 or len(chunks) == 1:
        return in_process()
    try:
        client = dask_client(scheduler, workers=workers or None)
    except Exception as err:  # noqa: BLE001 - no cluster: finish here rather than fail
        # e.g. a script without the ``if __name__ == "__main__":`` guard (the
        # LocalCluster's processes start by spawn, which imports the main module)
        warnings.warn(
            f"no dask cluster for the reconstruction ({err!r}); continuing in-process",
            RuntimeWarning,
            stacklevel=2,
        )
        return in_process()
    _run_dask(client, out, chunks, block_of, flat_of, args, opts)
    return out


# --------------------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------------------

_clients: dict = {}
_clients_lock = threading.Lock()


def dask_client(scheduler: str | None = None, *, workers: int | None = None):
    """The ``dask.distributed`` client the slabs go to, made once per process.

    ``scheduler``: a scheduler address (``tcp://host:8786``; default
    ``$OPERANDO_DASK_SCHEDULER``): its workers, wherever they run, do the
    slabs. Without one, a ``LocalCluster`` on 127.0.0.1 of ``workers``
    single-threaded processes (default: one per core), started on first use,
    kept for the next volumes and closed when the process exits.
    """
    from distributed import Client, LocalCluster

    address = scheduler or os.environ.get(SCHEDULER_ENV) or None
    n = int(workers or os.cpu_count() or 1)
    key = address or f"local:{n}"
    with _clients_lock:
        client = _clients.get(key)
        if client is not None and client.status == "running":
            return client
        if address:
            client = Client(address, set_as_default=False, timeout="30s")
        else:
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                memory_limit=0,
                silence_logs=logging.WARNING,
            )
            client = Client(cluster, set_as_default=False)
        _clients[key] = client
        return client


@atexit.register
def close_clients() -> None:
    """Close the clients :func:`dask_client` made (and the LocalClusters it started)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        cluster = getattr(client, "cluster", None)
        try:
            client.close()
            if cluster is not None:
                cluster.close()
        except Exception:  # noqa: BLE001 - closing at exit is best effort
            pass


def _run_dask(client, out, chunks, block_of, flat_of, args, opts) -> None:
    """Reconstruct ``chunks`` on the cluster, at most 2 slabs per worker in flight
    (a slab's rows are read here, sent to a worker, and its slices come back)."""
    from distributed import as_completed

    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    angles, center = args
    angles_f = client.scatter(angles, broadcast=True, hash=False)
    starts, pos = [], 0
    for rws in chunks:
        starts.append(pos)
        pos += len(rws)
    it = iter(zip(chunks, starts))
    where: dict = {}

    def submit():
        nxt = next(it, None)
        if nxt is None:
            return None
        rws, start = nxt
        f, d = flat_of(rws)
        [block] = client.scatter([block_of(rws)], hash=False)
        fut = client.submit(_reconstruct_block, block, angles_f, center, f, d, *opts, pure=False)
        where[fut.key] = (start, block)
        return fut

    first = [f for f in (submit() for _ in range(2 * n_workers)) if f is not None]
    running = as_completed(first, loop=client.loop)
    for fut in running:
        start, block = where.pop(fut.key)
        rec = fut.result()
        out[start : start + rec.shape[0]] = rec
        del block, fut
        nxt = submit()
        if nxt is not None:
            running.add(nxt)


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
