"""Offline (re-)reduction of a stored SAXS/WAXS experiment, from Tiled alone.

::

    from tiled.client import from_uri
    from operando.callbacks.saxs.offline import reduce_experiment
    summary = reduce_experiment(from_uri(uri, api_key=key), "saxs-1a2b3c4d", figures_dir="figures")

The same reduction as live (:mod:`.pipeline`, :mod:`.experiment`) on the raw
runs as Tiled stores them; all runs are reduced before anything is written, and
every ``reduced/`` node of the experiment is replaced. Where each input is found
in Tiled: ``docs/reduction-saxs.md``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core import find_experiment_runs, json_safe, run_problems, stored_frames, stream_columns
from .experiment import ExperimentState
from .model import (
    CELL_STREAM,
    AlignmentScan,
    CellRecord,
    RasterData,
    ReductionParameters,
    accepts,
    is_alignment,
    is_cycling,
)
from .science.integration import detector_configs, integrate_frame
from .store import write_experiment, write_run

__all__ = ["reduce_experiment", "find_runs", "load_run", "load_cell_record"]

logger = logging.getLogger(__name__)

#: frames fetched per HTTP request (a Pilatus 1M frame is 4 MB)
FRAMES_PER_REQUEST = 4


def find_runs(raw, experiment_id_or_raw_uid: str) -> tuple[str, list]:
    """``(experiment_id, [(uid, run), ...])`` of the experiment's reducible runs,
    in start-time order."""
    return find_experiment_runs(
        raw,
        experiment_id_or_raw_uid,
        accept=lambda s: accepts(s) or is_alignment(s) or is_cycling(s),
    )


def load_run(run, npt: int = 1000, problems: list | None = None) -> RasterData | None:
    """Read one raw run back through Tiled and integrate its frames.

    A raster cut short (events recorded for frames the detector file never
    received) keeps the points whose frames are there; what is missing is
    appended to ``problems``."""
    start = dict(run.metadata["start"])
    if "primary" not in run:
        return None
    stream = run["primary"]
    dets = detector_configs(stream.metadata.get("configuration", {}))
    columns = {
        k: v for k, v in stream_columns(stream).items() if np.asarray(v).dtype.kind in "biuf"
    }
    arrays, held = {}, None
    for role in ("saxs", "waxs"):
        key = f"{role}_image"
        if role not in dets or key not in stream:
            continue
        arr, n, problem = stored_frames(stream, key)
        count = 0 if arr is None else int(arr.shape[0])
        if problem is not None and problems is not None:
            problems.append(problem)
        held = count if held is None else min(held, count)
        arrays[role] = arr
    if held is not None and columns and held < len(next(iter(columns.values()))):
        columns = {k: np.asarray(v)[:held] for k, v in columns.items()}
    curves = []
    for role in ("saxs", "waxs"):
        if role not in arrays or not held:
            curves += [None, None, None]
            continue
        arr = arrays[role]
        n = held
        rows = []
        for i0 in range(0, n, FRAMES_PER_REQUEST):
            block = np.asarray(arr[i0 : min(n, i0 + FRAMES_PER_REQUEST)])
            rows += [integrate_frame(f, dets[role], npt) for f in block]
        if not rows:
            curves += [None, None, None]
            continue
        curves += [rows[0][0], np.array([r[1] for r in rows]), np.array([r[2] for r in rows])]
    if curves[1] is None and curves[4] is None:
        return None
    return RasterData.from_columns(
        start, columns, tuple(curves), stream.metadata.get("configuration", {})
    )


def load_cell_record(run) -> CellRecord | None:
    """The ``cell`` stream of a stored cycling run (None when it has none)."""
    if CELL_STREAM not in run:
        return None
    return CellRecord.from_columns(dict(run.metadata["start"]), stream_columns(run[CELL_STREAM]))


def load_alignment(run) -> AlignmentScan | None:
    """One alignment transmission scan read back through Tiled."""
    if "primary" not in run:
        return None
    start = dict(run.metadata["start"])
    return AlignmentScan.from_columns(start, stream_columns(run["primary"]))


def reduce_experiment(
    client,
    experiment_id_or_raw_uid: str,
    *,
    figures_dir=None,
    npt: int = 1000,
    parameters: ReductionParameters | None = None,
    pixel: tuple[int, int] | None = None,
    write: bool = True,
) -> dict:
    """Reduce a stored SAXS/WAXS experiment; returns a summary:
    ``experiment_id``, ``runs``, ``q1_mah``, ``sodc_final``,
    ``instrument_fwhm_nm``, per-raster numbers (``rasters``), ``figures``
    (paths), ``written`` (Tiled keys), ``seconds`` and the
    ``ExperimentState`` itself under ``reduction``."""
    from operando.tiled_server import reduced_container

    t0 = time.perf_counter()
    params = replace(parameters or ReductionParameters(), npt=int(npt))
    eid, runs = find_runs(client["raw"], experiment_id_or_raw_uid)
    exp = ExperimentState(eid, params, pixel=pixel, mode="offline")
    from ..xct.offline import superseded_runs

    replaced = superseded_runs(runs)
    incomplete = {}
    for uid, run in runs:
        if is_alignment(run.metadata["start"]):
            scan = load_alignment(run)
            if scan is not None:
                exp.add_alignment(scan)
            continue
        if is_cycling(run.metadata["start"]):
            # An interrupted record is kept too: every sample is a true reading.
            record = load_cell_record(run)
            if record is not None:
                exp.add_cell_record(record)
            continue
        problems = run_problems(run.metadata)
        raster = load_run(run, params.npt, problems)
        if problems:
            incomplete[uid] = {
                "uid": uid,
                "reasons": problems,
                "superseded_by": replaced.get(uid),
            }
            logger.warning("run %s is incomplete: %s", uid, "; ".join(problems))
        if raster is None:
            logger.warning("run %s has no frames: skipped", uid)
            continue
        if uid in replaced:
            continue
        exp.add(raster)
    t_reduce = time.perf_counter() - t0
    figures: list[str] = []
    if figures_dir is not None:
        from .figures import experiment_figures

        figures = experiment_figures(
            exp.figure_data(), Path(figures_dir) / (eid or "unnamed"), title=eid
        )
    written = []
    if write:
        reduced = reduced_container(client)
        for res in exp.results.values():
            write_run(reduced, res, exp)
            if res.uid in incomplete:
                note = incomplete[res.uid]
                reduced[res.uid].update_metadata(
                    metadata=json_safe(
                        {"incomplete": True, "incomplete_reason": "; ".join(note["reasons"])}
                    )
                )
            written.append(res.uid)
        if exp.rasters():
            node = write_experiment(reduced, exp, figures=figures)
            if node is not None:
                node.update_metadata(
                    metadata=json_safe({"incomplete_runs": list(incomplete.values())})
                )
            written.append(eid)
    summary = exp.summary()
    summary.update(
        incomplete=list(incomplete),
        figures=figures,
        written=written,
        reduction=exp,
        seconds={"reduce": t_reduce, "total": time.perf_counter() - t0},
    )
    return summary
