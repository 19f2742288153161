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

from ..core import (
    find_experiment_runs,
    json_safe,
    replace_container,
    run_problems,
    stored_frames,
    stream_columns,
)
from .experiment import ExperimentState
from .model import FRAME_KEY, ReductionParameters, RunData, accepts
from .pipeline import reduce_run
from .store import write_experiment, write_run

__all__ = ["reduce_experiment", "find_runs", "load_run"]

logger = logging.getLogger(__name__)


def find_runs(raw, uid_or_experiment_id: str) -> tuple[str, list]:
    """``(experiment_id, [(uid, run), ...])`` of the experiment's XCT runs, in start order."""
    return find_experiment_runs(raw, uid_or_experiment_id, accept=accepts)


def load_run(run, problems: list | None = None) -> RunData:
    """A stored raw run as :class:`RunData` (frames stay on the server, read lazily).

    A stream whose detector file holds fewer frames than its events recorded
    (a run cut short) keeps the frames the file holds and as many events; what
    is missing is appended to ``problems``."""
    md = run.metadata
    columns, frames, configuration = {}, {}, {}
    for stream in run:
        node = run[stream]
        configuration[stream] = dict((node.metadata or {}).get("configuration") or {})
        cols = stream_columns(node)
        columns[stream] = {k: np.asarray(v) for k, v in cols.items() if np.asarray(v).ndim == 1}
        if FRAME_KEY in node:
            stack, n, problem = stored_frames(node, FRAME_KEY)
            if problem is not None:
                held = 0 if stack is None else int(stack.shape[0])
                if problems is not None:
                    problems.append(f"stream {stream!r}: {problem}")
                columns[stream] = {k: v[:held] for k, v in columns[stream].items()}
            if stack is not None and int(stack.shape[0]):
                frames[stream] = stack
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
    replaced = superseded_runs(runs)
    incomplete: list[dict] = []
    for uid, run in runs:
        t1 = time.perf_counter()
        problems = run_problems(run.metadata)
        start = run.metadata["start"]
        try:
            res = reduce_run(load_run(run, problems), params)
        except Exception as exc:  # noqa: BLE001 - one bad run does not stop the others
            if not problems:
                logger.exception("offline reduction of %s failed", uid)
                continue
            problems.append(f"not reducible: {type(exc).__name__}: {exc}")
            res = None
        t_reduce += time.perf_counter() - t1
        if problems:
            note = {
                "uid": uid,
                "step": start.get("step"),
                "cycle": start.get("cycle"),
                "reasons": problems,
                "superseded_by": replaced.get(uid),
            }
            incomplete.append(note)
            logger.warning(
                "run %s (%s, cycle %s) is incomplete: %s%s",
                uid,
                note["step"],
                note["cycle"],
                "; ".join(problems),
                f"; taken again in {note['superseded_by']}" if note["superseded_by"] else "",
            )
        if res is None:
            if problems and reduced is not None:
                replace_container(reduced, uid, _incomplete_md(note, eid, start))
                written.append(uid)
            continue
        volume = getattr(res, "volume", None)
        if uid not in replaced:  # a step taken again counts once, by its complete run
            state.add(res)
        if reduced is not None:
            t1 = time.perf_counter()
            write_run(reduced, res, state, **({"volume": volume} if volume is not None else {}))
            if problems:
                reduced[uid].update_metadata(metadata=_incomplete_md(note, eid, start))
            written.append(uid)
            t_write += time.perf_counter() - t1
        del volume
    figures: list[str] = []
    if figures_dir is not None and state.results:
        from .figures import experiment_figures

        figures = experiment_figures(state.figure_data(), Path(figures_dir) / (eid or "unnamed"))
    if reduced is not None and state.results:
        t1 = time.perf_counter()
        node = write_experiment(reduced, state, figures=figures)
        node.update_metadata(metadata=json_safe({"incomplete_runs": incomplete}))
        written.append(eid or "unnamed")
        t_write += time.perf_counter() - t1
    summary = state.summary()
    summary.update(
        incomplete=[n["uid"] for n in incomplete],
        incomplete_runs=incomplete,
        figures=figures,
        written=written,
        state=state,
        seconds={"reduce": t_reduce, "write": t_write, "total": time.perf_counter() - t0},
    )
    return summary


def _step_key(start: dict) -> tuple:
    return (start.get("step"), start.get("cycle"), start.get("postmortem_scan"))


def superseded_runs(runs) -> dict[str, str]:
    """``{uid: uid of the later complete run}`` for every run that did not
    complete and whose step (step, cycle, post-mortem scan) was taken again
    and completed: an experiment resumed after an interruption counts each
    step once."""
    last_complete: dict[tuple, tuple[float, str]] = {}
    for uid, run in runs:
        md = run.metadata
        if not run_problems(md):
            start = md["start"]
            last_complete[_step_key(start)] = (float(start.get("time", 0.0)), uid)
    out = {}
    for uid, run in runs:
        md = run.metadata
        if run_problems(md):
            start = md["start"]
            done = last_complete.get(_step_key(start))
            if done is not None and done[0] > float(start.get("time", 0.0)):
                out[uid] = done[1]
    return out


def _incomplete_md(note: dict, eid: str, start: dict) -> dict:
    return json_safe(
        {
            "raw_uid": note["uid"],
            "experiment_id": eid,
            "step": start.get("step"),
            "cycle": start.get("cycle"),
            "incomplete": True,
            "incomplete_reason": "; ".join(note["reasons"]),
            "superseded_by": note["superseded_by"],
        }
    )
