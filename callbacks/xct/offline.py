"""Offline (re-)reduction of a stored XCT experiment, from Tiled alone.

::

    from tiled.client import from_uri
    from operando.callbacks.xct.offline import reduce_experiment
    summary = reduce_experiment(from_uri(uri, api_key=key), "xct-1a2b3c4d", figures_dir="figures")

The same reduction as live (:mod:`.pipeline`, :mod:`.experiment`) on the raw
runs as Tiled stores them; it replaces every ``reduced/`` node of the
experiment. Where each input is found in Tiled: ``docs/reduction-xct.md``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core import find_experiment_runs, stream_columns
from .experiment import ExperimentState
from .model import FRAME_KEY, ReductionParameters, RunData, accepts
from .pipeline import reduce_run
from .store import write_experiment, write_run

__all__ = ["reduce_experiment", "find_runs", "load_run"]

logger = logging.getLogger(__name__)


def find_runs(raw, uid_or_experiment_id: str) -> tuple[str, list]:
    """``(experiment_id, [(uid, run), ...])`` of the experiment's XCT runs, in start order."""
    return find_experiment_runs(raw, uid_or_experiment_id, accept=accepts)


def load_run(run) -> RunData:
    """A stored raw run as :class:`RunData` (frames stay on the server, read lazily)."""
    md = run.metadata
    columns, frames, configuration = {}, {}, {}
    for stream in run:
        node = run[stream]
        configuration[stream] = dict((node.metadata or {}).get("configuration") or {})
        cols = stream_columns(node)
        columns[stream] = {k: np.asarray(v) for k, v in cols.items() if np.asarray(v).ndim == 1}
        if FRAME_KEY in node:
            frames[stream] = node[FRAME_KEY]
    return RunData(
        start=dict(md["start"]),
        stop=dict(md.get("stop") or {}),
        columns=columns,
        frames=frames,
        configuration=configuration,
    )


def reduce_experiment(
    client,
    uid_or_experiment_id: str,
    *,
    figures_dir=None,
    parameters: ReductionParameters | None = None,
    reconstruct: bool = True,
    write: bool = True,
) -> dict:
    """Reduce a stored XCT experiment; returns a summary:
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
        from .figures import experiment_figures

        figures = experiment_figures(state.figure_data(), Path(figures_dir) / (eid or "unnamed"))
    if reduced is not None and state.results:
        t1 = time.perf_counter()
        write_experiment(reduced, state, figures=figures)
        written.append(eid or "unnamed")
        t_write += time.perf_counter() - t1
    summary = state.summary()
    summary.update(
        figures=figures,
        written=written,
        state=state,
        seconds={"reduce": t_reduce, "write": t_write, "total": time.perf_counter() - t0},
    )
    return summary
