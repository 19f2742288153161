"""Offline (re-)reduction of a scanning SAXS/WAXS experiment from Tiled.

::

    from tiled.client import from_uri
    from operando.callbacks.saxs_offline import reduce_experiment
    summary = reduce_experiment(from_uri(uri, api_key=key), "saxs-1a2b3c4d", figures_dir="figures")

The same reduction as live (:mod:`~operando.callbacks.saxs_reduction`), on the
raw runs as Tiled stores them, without the acquisition code or the HDF5 files'
paths:

* runs: ``client["raw"]`` searched for ``start.experiment_id``; the argument
  may also be the uid of any raw run of the experiment.  Only
  ``technique="saxs_waxs"`` runs with ``step`` background, ocv or operando are
  reduced, in the order of their start time.
* run metadata: ``run.metadata["start"]``.
* detector geometry: TiledWriter stores each descriptor's fields (except
  ``name``, ``object_keys``, ``run_start``) as the metadata of the stream
  container, so the configuration is
  ``run["primary"].metadata["configuration"]["saxs"]["data"]["saxs_cam_geometry"]``
  (JSON of ``ai.get_config()``), ``...["saxs_cam_beamstop_radius"]`` (m),
  likewise for ``waxs``.  A later descriptor of the same stream would be in
  ``metadata["_config_updates"]`` (not used by these runs).
* frames: ``run["primary"]["saxs_image"]`` / ``["waxs_image"]``, an array
  (n_events, rows, cols) that the server reads from the registered HDF5 files,
  fetched a few frames per request.
* scalars: the stream's ``internal`` table (one request), else key by key.

Writing **replaces** (overwrite, not versioned): every ``reduced/<raw uid>`` of
the experiment and ``reduced/<experiment_id>`` are deleted and written anew;
their ``reduction`` metadata say ``mode="offline"`` and ``reduced_at``.  All
runs are reduced before anything is written, so every SODC is final from the
start (live rewrites them once the first discharge has ended).  Re-running on
an unchanged experiment writes the same numbers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .core import find_experiment_runs, stream_columns
from .saxs_reduction import (
    REDUCED_STEPS,
    ExperimentReduction,
    RasterData,
    ReductionParameters,
    detector_configs,
    integrate_frame,
    write_experiment,
    write_raster,
)

__all__ = ["reduce_experiment", "find_runs", "load_raster"]

logger = logging.getLogger(__name__)

#: frames fetched per HTTP request (a Pilatus 1M frame is 4 MB)
FRAMES_PER_REQUEST = 4


def _accept(start: dict) -> bool:
    return start.get("technique") == "saxs_waxs" and start.get("step") in REDUCED_STEPS


def find_runs(raw, experiment_id_or_raw_uid: str) -> tuple[str, list]:
    """``(experiment_id, [(uid, run), ...])`` of the experiment's reducible runs,
    in start-time order."""
    return find_experiment_runs(raw, experiment_id_or_raw_uid, accept=_accept)





def load_raster(run, npt: int = 1000) -> RasterData | None:
    """Read one raw run back through Tiled and integrate its frames."""
    start = dict(run.metadata["start"])
    if "primary" not in run:
        return None
    stream = run["primary"]
    dets = detector_configs(stream.metadata.get("configuration", {}))
    columns = {k: v for k, v in stream_columns(stream).items() if np.asarray(v).dtype.kind in "biuf"}
    curves = []
    for role in ("saxs", "waxs"):
        key = f"{role}_image"
        if role not in dets or key not in stream:
            curves += [None, None, None]
            continue
        arr = stream[key]
        n = int(arr.shape[0])
        rows = []
        for i0 in range(0, n, FRAMES_PER_REQUEST):
            block = np.asarray(arr[i0:min(n, i0 + FRAMES_PER_REQUEST)])
            rows += [integrate_frame(f, dets[role], npt) for f in block]
        if not rows:
            curves += [None, None, None]
            continue
        curves += [rows[0][0], np.array([r[1] for r in rows]), np.array([r[2] for r in rows])]
    if curves[1] is None and curves[4] is None:
        return None
    return RasterData.from_columns(start, columns, tuple(curves))


def reduce_experiment(client, experiment_id_or_raw_uid: str, *, figures_dir=None, npt: int = 1000,
                      parameters: ReductionParameters | None = None,
                      pixel: tuple[int, int] | None = None, write: bool = True) -> dict:
    """Reduce a stored experiment (see the module doc); returns a summary:
    ``experiment_id``, ``runs``, ``q1_mah``, ``sodc_final``,
    ``instrument_fwhm_nm``, per-raster numbers (``rasters``), ``figures``
    (paths), ``written`` (Tiled keys), ``seconds`` and the
    ``ExperimentReduction`` itself under ``reduction``."""
    from operando.tiled_server import reduced_container

    t0 = time.perf_counter()
    params = replace(parameters or ReductionParameters(), npt=int(npt))
    eid, runs = find_runs(client["raw"], experiment_id_or_raw_uid)
    exp = ExperimentReduction(eid, params, pixel=pixel, mode="offline")
    for uid, run in runs:
        raster = load_raster(run, params.npt)
        if raster is None:
            logger.warning("run %s has no frames: skipped", uid)
            continue
        exp.add(raster)
    t_reduce = time.perf_counter() - t0
    figures: list[str] = []
    if figures_dir is not None:
        from .saxs_figures import experiment_figures

        figures = experiment_figures(exp.figure_data(), Path(figures_dir) / (eid or "unnamed"), title=eid)
    written = []
    if write:
        reduced = reduced_container(client)
        for res in exp.results.values():
            write_raster(reduced, res, exp)
            written.append(res.uid)
        if exp.rasters():
            write_experiment(reduced, exp, figures=figures)
            written.append(eid)
    summary = exp.summary()
    summary.update(figures=figures, written=written, reduction=exp,
                   seconds={"reduce": t_reduce, "total": time.perf_counter() - t0})
    return summary
