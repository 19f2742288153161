"""Offline (re-)reduction of an operando XCT experiment from Tiled.

::

    from tiled.client import from_uri
    from operando.callbacks.xct_offline import reduce_xct
    summary = reduce_xct(from_uri(uri, api_key=key), "xct-1a2b3c4d", figures_dir="figures")

The same reduction as live (:mod:`~operando.callbacks.xct_reduction`), on the
raw runs as Tiled stores them, without the acquisition code and without the
HDF5 files' paths:

* runs: ``client["raw"]`` searched with ``Key("start.experiment_id") ==
  experiment_id``; the argument may also be the uid of any raw run of the
  experiment (all its runs are then reduced). Only ``technique="xct"`` runs
  with ``step`` ``scan3d``, ``plating`` or ``postmortem`` are reduced, in the
  order of their start time.
* run metadata: ``run.metadata["start"]`` and ``["stop"]``.
* pixel size: TiledWriter keeps each stream's descriptor (all but ``name``,
  ``object_keys``, ``run_start``) as the metadata of the stream node, so the
  detector configuration is
  ``run["primary"].metadata["configuration"]["ct_det"]["data"]["ct_det_cam_pixel_size"]``
  (µm after binning), with ``ct_det_cam_objective`` and ``ct_det_cam_binning``
  next to it.
* frames: ``run[stream]["ct_det_image"]`` (n, rows, cols), read by the server
  from the registered HDF5 files; a scan is read a few detector rows at a time
  (all its projections, ``reconstruct``'s ``chunk_rows`` rows per request),
  radiograms and darks/flats frame by frame.
* scalars: the stream's ``internal`` table (one request per stream).

Writing **replaces** (overwrite, not versioned): every ``reduced/<raw uid>``
of the experiment and ``reduced/<experiment_id>`` are deleted and written
anew; their ``reduction`` metadata say ``mode="offline"`` and
``reduced_at``. Runs are reduced and written one at a time (a volume is held
only while its run is written); the experiment node is written at the end.
Re-running on an unchanged experiment writes the same numbers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .core import find_experiment_runs, stream_columns
from .xct_reduction import (
    FRAME_KEY,
    REDUCED_STEPS,
    ExperimentState,
    ReductionParameters,
    RunData,
    reduce_run,
    write_experiment,
    write_run,
)

__all__ = ["reduce_xct", "find_runs", "load_run"]

logger = logging.getLogger(__name__)


def _accept(start: dict) -> bool:
    return start.get("technique") == "xct" and start.get("step") in REDUCED_STEPS


def find_runs(raw, uid_or_experiment_id: str) -> tuple[str, list]:
    """``(experiment_id, [(uid, run), ...])`` of the experiment's XCT runs, in start order."""
    return find_experiment_runs(raw, uid_or_experiment_id, accept=_accept)


def load_run(run) -> RunData:
    """A stored raw run as :class:`RunData` (frames stay on the server, read lazily)."""
    md = run.metadata
    columns, frames, configuration = {}, {}, {}
    for stream in run:
        node = run[stream]
        configuration[stream] = dict((node.metadata or {}).get("configuration") or {})
        cols = stream_columns(node)
        columns[stream] = {k: np.asarray(v) for k, v in cols.items()
                           if np.asarray(v).ndim == 1}
        if FRAME_KEY in node:
            frames[stream] = node[FRAME_KEY]
    return RunData(start=dict(md["start"]), stop=dict(md.get("stop") or {}), columns=columns,
                   frames=frames, configuration=configuration)


def reduce_xct(client, uid_or_experiment_id: str, *, figures_dir=None,
               parameters: ReductionParameters | None = None, reconstruct: bool = True,
               write: bool = True) -> dict:
    """Reduce a stored XCT experiment (see the module doc); returns a summary:
    the :meth:`ExperimentState.summary` numbers plus ``figures`` (paths),
    ``written`` (Tiled keys under ``reduced``), ``seconds`` and the
    ``ExperimentState`` itself under ``state``."""
    from operando.tiled_server import reduced_container

    t0 = time.perf_counter()
    params = replace(parameters or ReductionParameters(), reconstruct=bool(reconstruct))
    eid, runs = find_runs(client["raw"], uid_or_experiment_id)
    state = ExperimentState(eid, params, mode="offline")
    reduced = reduced_container(client) if write else None
    written: list[str] = []
    t_reduce = t_write = 0.0
    for uid, run in runs:
        t1 = time.perf_counter()
        try:
            res = reduce_run(load_run(run), params)
        except Exception:  # noqa: BLE001 - one bad run does not stop the others
            logger.exception("offline reduction of %s failed", uid)
            continue
        t_reduce += time.perf_counter() - t1
        if res is None:
            continue
        volume = getattr(res, "volume", None)
        state.add(res)
        if reduced is not None:
            t1 = time.perf_counter()
            write_run(reduced, res, state, **({"volume": volume} if volume is not None else {}))
            written.append(uid)
            t_write += time.perf_counter() - t1
        del volume
    figures: list[str] = []
    if figures_dir is not None and state.results:
        from .xct_figures import experiment_figures

        figures = experiment_figures(state.figure_data(), Path(figures_dir) / (eid or "unnamed"))
    if reduced is not None and state.results:
        t1 = time.perf_counter()
        write_experiment(reduced, state, figures=figures)
        written.append(eid or "unnamed")
        t_write += time.perf_counter() - t1
    summary = state.summary()
    summary.update(figures=figures, written=written, state=state,
                   seconds={"reduce": t_reduce, "write": t_write,
                            "total": time.perf_counter() - t0})
    return summary
