"""Resuming an interrupted experiment from what Tiled holds of it.

An experiment is the runs that share an ``experiment_id``; each run's start
document names its ``step`` and ``cycle`` (:func:`.stubs.experiment_md`), and
its stop document whether it completed (``exit_status == "success"``). When
the acquisition process dies (killed, a crash, the machine lost), the run it
had open keeps no stop document in Tiled. :func:`find_resume_point` reads the
experiment back, gives every such dangling run a stop document
(``exit_status="abort"`` with the reason) and says which steps completed;
``xct_operando(..., resume=...)`` and ``saxs_waxs_operando(..., resume=...)``
then go on at the first step that did not complete, under the same
``experiment_id``.

The station is not reset: the simulators (and a real cell) keep their own
state; a step that was cut short is taken again (a 3D scan, a raster, an OCV
rest), a plating passes the charge it had left.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field

from .validation import PlanArgumentError

__all__ = [
    "StepRun",
    "ResumePoint",
    "find_resume_point",
    "close_dangling_run",
    "remaining_duration",
    "INTERRUPTED",
]

logger = logging.getLogger(__name__)

#: The reason of the stop document given to a run that had none.
INTERRUPTED = (
    "interrupted: the acquisition stopped before the run was closed (no stop document); "
    "closed when experiment {experiment_id} was resumed"
)


@dataclass
class StepRun:
    """One stored run of the experiment, as a resume sees it."""

    uid: str
    step: str
    cycle: int | None
    exit_status: str
    reason: str
    time: float
    start: dict = field(repr=False)
    stop: dict = field(repr=False)
    #: the run had no stop document until this resume
    dangling: bool = False

    @property
    def completed(self) -> bool:
        return self.exit_status == "success"


@dataclass
class ResumePoint:
    """What an interrupted experiment completed (``runs``, in start order)."""

    experiment_id: str
    technique: str
    runs: list[StepRun]
    #: uids of the dangling runs this resume gave a stop document
    closed: list[str] = field(default_factory=list)
    #: per-step data a plan keeps for its own resume (e.g. charges passed)
    notes: dict = field(default_factory=dict)

    def completed(self, step: str, cycle=None, **match) -> StepRun | None:
        """The last completed run of ``step`` (and ``cycle``, and start keys ``match``)."""
        found = [r for r in self._of(step, cycle, match) if r.completed]
        return found[-1] if found else None

    def interrupted(self, step: str, cycle=None, **match) -> list[StepRun]:
        """Runs of ``step`` (``cycle``, ``match``) that did not complete, oldest first."""
        return [r for r in self._of(step, cycle, match) if not r.completed]

    def count(self, step: str, cycle=None, **match) -> int:
        return sum(1 for r in self._of(step, cycle, match) if r.completed)

    def _of(self, step, cycle, match):
        out = []
        for r in self.runs:
            if r.step != step or (cycle is not None and r.cycle != cycle):
                continue
            if any(r.start.get(k) != v for k, v in match.items()):
                continue
            out.append(r)
        return out

    def as_runs(self) -> list[tuple]:
        """``(step, cycle, uid)`` of the completed runs, as the plans list them."""
        return [(r.step, r.cycle, r.uid) for r in self.runs if r.completed]


def _runs(catalog):
    from operando.tiled_server import RUNS_CONTAINER, runs_container

    if RUNS_CONTAINER in catalog:
        return runs_container(catalog)
    return catalog


def _num_events(run) -> dict:
    out = {}
    for stream in run:
        try:
            node = run[stream]
            base = getattr(node, "base", node)
            if "internal" in base:
                out[stream] = int(len(base["internal"].read()))
        except Exception:  # noqa: BLE001 - a count is a courtesy, not a requirement
            continue
    return out


def close_dangling_run(run, *, reason: str, exit_status: str = "abort") -> dict:
    """Write a stop document into a stored run that has none (as TiledWriter
    writes one: ``metadata["stop"]``); returns it."""
    start = run.metadata["start"]
    doc = {
        "uid": str(uuid.uuid4()),
        "time": time.time(),
        "run_start": start["uid"],
        "exit_status": exit_status,
        "reason": reason,
        "num_events": _num_events(run),
    }
    run.update_metadata(metadata={"stop": doc}, drop_revision=True)
    logger.warning(
        "run %s (%s) had no stop document: closed as %r",
        start["uid"],
        start.get("step"),
        exit_status,
    )
    return doc


def find_resume_point(
    catalog, experiment_id: str, *, technique: str | None = None, close: bool = True
) -> ResumePoint:
    """The stored state of experiment ``experiment_id``.

    ``catalog``: a Tiled client (its ``raw`` container is searched) or the
    container of runs itself. With ``close`` every run without a stop document
    gets one (``exit_status="abort"``, reason :data:`INTERRUPTED`). Raises
    :class:`~.validation.PlanArgumentError` when the experiment has no run
    (or runs of another technique than ``technique``).
    """
    from tiled.queries import Key

    eid = str(experiment_id or "").strip()
    if not eid:
        raise PlanArgumentError("resume needs the experiment id of the experiment to go on with")
    runs = _runs(catalog)
    found = list(runs.search(Key("start.experiment_id") == eid).items())
    if not found:
        raise PlanArgumentError(f"no runs of experiment {eid!r} in the catalog: nothing to resume")
    techniques = {str(run.metadata["start"].get("technique") or "") for _, run in found}
    if technique is not None and techniques != {technique}:
        raise PlanArgumentError(
            f"experiment {eid!r} holds runs of {sorted(techniques)}, not of {technique!r}"
        )
    point = ResumePoint(eid, technique or next(iter(techniques)), [])
    for uid, run in found:
        md = run.metadata
        start = dict(md["start"])
        stop = dict(md.get("stop") or {})
        dangling = not stop
        if dangling and close:
            stop = close_dangling_run(run, reason=INTERRUPTED.format(experiment_id=eid))
            point.closed.append(uid)
        cycle = start.get("cycle")
        point.runs.append(
            StepRun(
                uid=uid,
                step=str(start.get("step") or ""),
                cycle=None if cycle is None else int(cycle),
                exit_status=str(stop.get("exit_status") or ""),
                reason=str(stop.get("reason") or ""),
                time=float(start.get("time") or 0.0),
                start=start,
                stop=stop,
                dangling=dangling,
            )
        )
    point.runs.sort(key=lambda r: (r.time, r.uid))
    return point


def resolve(resume, catalog, *, technique: str) -> ResumePoint | None:
    """``resume`` as given to a plan (None, an experiment id, or a ResumePoint)."""
    if resume is None or isinstance(resume, ResumePoint):
        return resume
    if catalog is None:
        raise PlanArgumentError(
            "resume=<experiment id> needs catalog= (the Tiled client the runs are in)"
        )
    return find_resume_point(catalog, str(resume), technique=technique)


def remaining_duration(duration: float, current: float, charge_passed: float) -> float:
    """Cell seconds of ``current`` still due of a step of ``duration`` s that
    passed ``charge_passed`` C already (0 when nothing is left)."""
    if current == 0 or not math.isfinite(charge_passed):
        return float(duration)
    left = duration - abs(charge_passed) / abs(current)
    return max(0.0, float(left))


def last_value(run, stream: str, key: str) -> float:
    """The last recorded value of ``key`` in a stored run's ``stream`` (nan if none)."""
    try:
        node = run[stream]
    except KeyError:
        return math.nan
    from operando.callbacks.core import stream_columns

    cols = stream_columns(node)
    values = cols.get(key)
    if values is None or len(values) == 0:
        return math.nan
    return float(values[-1])
