"""Plan stubs shared by the experiments: waiting on cell time, recording the cell."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.utils import Msg

MsgGenerator = Generator[Msg, Any, Any]

CELL_STREAM = "cell"


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
        yield from bps.trigger_and_read(self.readables, name=self.stream)
        self.last = yield from now(self.clock)

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
