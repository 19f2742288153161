"""Plan stubs shared by the experiments: waiting on cell time, recording the cell."""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import Msg
from ophyd import Signal

MsgGenerator = Generator[Msg, Any, Any]

CELL_STREAM = "cell"
#: The stream of a run's pauses (one event per pause; see :class:`PauseRecord`).
PAUSES_STREAM = "pauses"


def experiment_md(
    plan_name: str,
    plan_args: dict,
    *,
    technique: str,
    step: str,
    cycle: int | None,
    experiment_id: str | None,
    cell: str | None,
    md: dict | None,
    **extra,
) -> dict:
    """Start-document metadata shared by every run of an experiment.

    ``experiment_id``, ``cell``, ``technique``, ``step`` and ``cycle`` make the
    runs searchable; ``plan_args`` as values (:func:`plain_value`), so that a
    query or a re-run reads numbers, not reprs; the user's ``md`` wins over
    everything. Without an ``experiment_id`` the key is left out, so the
    RunEngine's own ``RE.md["experiment_id"]`` (a session's default) applies.
    """
    out = {
        "plan_name": plan_name,
        "plan_args": {k: plain_value(v) for k, v in plan_args.items()},
        "technique": technique,
        "step": step,
        "cycle": cycle,
        "cell": cell or "",
        **extra,
    }
    if experiment_id:
        out["experiment_id"] = experiment_id
    out.update(md or {})
    return out


def plain_value(value):
    """``value`` as JSON-able data: numbers, strings, booleans, None, lists and
    dicts of those (numpy scalars and arrays included); a device by its name;
    anything else by its repr."""
    import numpy as np

    if isinstance(value, np.generic):  # before float: np.float64 is one
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    name = getattr(value, "name", None)
    if isinstance(name, str) and hasattr(value, "read"):
        return name
    return repr(value)


def wait_until(clock, t: float) -> MsgGenerator:
    """Wait until the station clock reads cell time ``t`` (s): a hardware wait."""
    yield from bps.mv(clock, float(t))


def start_technique(pstat, technique) -> MsgGenerator:
    """Configure and start a potentiostat technique that runs in the background.

    The plan goes on at once; it learns of the technique's end from
    :func:`technique_running` (a fresh read of the state, never a monitor that
    may arrive late) or waits for it with :func:`wait_technique`.
    """
    yield from bps.prepare(pstat, technique, wait=True)
    yield from bps.mv(pstat.start_cmd, 1)


def technique_running(pstat) -> MsgGenerator:
    """True while the potentiostat's technique runs (read from the hardware now)."""
    state = yield from bps.rd(pstat.state)
    return state == "running"


def wait_technique(pstat) -> MsgGenerator:
    """Wait until the running technique has ended: a hardware wait (on virtual time
    the clock advances to the technique's end)."""
    yield from bps.mv(pstat.wait_cmd, 1)


def now(clock) -> MsgGenerator:
    """The station's cell time (s)."""
    value = yield from bps.rd(clock.time)
    return float(value)


class CellRecorder:
    """Records the cell (force, potential, current, cell time) in its own stream.

    ``yield from rec.sample()`` reads the cell into the ``cell`` stream;
    ``yield from rec.maybe_sample()`` does so only when ``every`` cell seconds
    have passed since the last sample, so a loop busy with other work (a 3D scan)
    still records the cell at a steady rate.
    """

    def __init__(self, clock, readables: Sequence, *, every: float, stream: str = CELL_STREAM):
        if every <= 0:
            raise ValueError(f"cell sampling interval must be > 0 s, not {every}")
        self.clock = clock
        self.readables = [clock, *readables]
        self.every = float(every)
        self.stream = stream
        self.last = None

    def sample(self) -> MsgGenerator:
        reading = yield from checkpointed_read(self.readables, name=self.stream)
        self.last = float(reading[self.clock.time.name]["value"])  # the sample's own time

    def maybe_sample(self) -> MsgGenerator:
        t = yield from now(self.clock)
        if self.last is None or t - self.last >= self.every:
            yield from self.sample()

    def record_until(self, t_end: float) -> MsgGenerator:
        """Sample every ``every`` cell seconds until ``t_end``, waiting on the clock."""
        t = yield from now(self.clock)
        if self.last is None:
            yield from self.sample()
        while t < t_end:
            t_next = min(self.last + self.every, t_end)
            yield from wait_until(self.clock, t_next)
            yield from self.sample()
            t = self.last


def checkpointed_read(readables, *, name: str = "primary", restore=()) -> MsgGenerator:
    """``trigger_and_read`` between two checkpoints, after the moves ``restore``.

    After a pause the RunEngine replays what followed the last checkpoint:
    ``restore`` (pairs of a two-state device and its state, e.g. ``(source,
    "on")``) puts back what the pause changed (the RunEngine stops every device
    it moved: the source goes off, the shutter closes), the reading is taken
    again, and a reading already emitted is never replayed (a checkpoint
    follows it at once). Motors need no restoring: a move cut short by the
    pause is itself replayed from the checkpoint before it.
    """
    yield from bps.checkpoint()
    for device, value in restore:
        yield from bps.mv(device, value)
    reading = yield from bps.trigger_and_read(list(readables), name=name)
    yield from bps.checkpoint()
    return reading


class PauseRecord:
    """The pauses of the open run, as the RunEngine makes them.

    The RunEngine calls ``pause()`` and ``resume()`` of every object a plan has
    shown it (bluesky's ``Pausable`` protocol) when it pauses and when it
    resumes; this one notes the wall time and the station's cell time of each
    (``pauses``: ``{start, end, cell_start, cell_end}``) while a run is open.
    :func:`record_pauses` shows it to the RunEngine at each ``open_run`` and
    writes what it noted at the ``close_run``.
    """

    name = "pause_record"
    parent = None

    def __init__(self, clock):
        self.clock = clock
        self.active = False
        self.pauses: list[dict] = []

    def _cell(self) -> float:
        try:
            return float(self.clock.time.get(use_monitor=False, timeout=5.0))
        except Exception:  # noqa: BLE001 - a pause is recorded even if the clock is away
            return math.nan

    def pause(self) -> None:
        if self.active:
            cell = self._cell()
            self.pauses.append(
                {"start": time.time(), "end": math.nan, "cell_start": cell, "cell_end": math.nan}
            )

    def resume(self) -> None:
        if self.active and self.pauses and math.isnan(self.pauses[-1]["end"]):
            self.pauses[-1].update(end=time.time(), cell_end=self._cell())

    def summary(self) -> str:
        """A sentence for the stop document's reason ("" when never paused)."""
        if not self.pauses:
            return ""
        cell = sum(_span(p, "cell_start", "cell_end") for p in self.pauses)
        wall = sum(_span(p, "start", "end") for p in self.pauses)
        return (
            f"paused {len(self.pauses)} time(s): {cell / 3600.0:.3f} h of cell time, "
            f"{wall:.1f} s of wall time (stream {PAUSES_STREAM!r})"
        )


def _span(p: dict, a: str, b: str) -> float:
    d = p[b] - p[a]
    return d if math.isfinite(d) else 0.0


def _pause_signals():
    keys = ("start", "end", "cell_start", "cell_end", "cell_s", "wall_s")
    return {k: Signal(name=f"pause_{k}", value=math.nan) for k in keys}


def _emit_pauses(record: PauseRecord) -> MsgGenerator:
    if not record.pauses:
        return
    signals = _pause_signals()
    for p in record.pauses:
        values = dict(p)
        values["cell_s"] = _span(p, "cell_start", "cell_end")
        values["wall_s"] = _span(p, "start", "end")
        for key, sig in signals.items():
            sig.put(float(values[key]))
        yield from bps.trigger_and_read(list(signals.values()), name=PAUSES_STREAM)


def record_pauses(plan, clock) -> MsgGenerator:
    """Record the pauses of every run ``plan`` opens.

    Each run gets a :class:`PauseRecord`; at its ``close_run`` the pauses go to
    the ``pauses`` stream (wall and cell times of each start and end) and their
    summary to the stop document's ``reason``. A run never paused is unchanged.
    """
    record = PauseRecord(clock)

    def after_open():
        record.pauses = []
        record.active = True
        yield Msg("null", record)

    def before_close(msg):
        record.active = False
        yield from _emit_pauses(record)
        summary = record.summary()
        kwargs = dict(msg.kwargs)
        if summary:
            reason = kwargs.get("reason") or ""
            kwargs["reason"] = f"{reason}; {summary}" if reason else summary
        closing = Msg("close_run", msg.obj, *msg.args, run=msg.run, **kwargs)
        made.append(closing)
        return (yield closing)

    made: list[Msg] = []  # close_run messages of our own: passed through as they are

    def proc(msg):
        if msg.command == "open_run":
            return None, after_open()
        if msg.command == "close_run" and not any(msg is m for m in made):
            return before_close(msg), None
        return None, None

    return (yield from bpp.plan_mutator(plan, proc))
