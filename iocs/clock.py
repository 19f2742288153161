"""The simulated clock shared by the simulators, and its PV group.

A simulated experiment runs ``scale`` times faster than the wall clock: the cell
time is ``t_start + (monotonic() - wall0) * scale``. Every duration in the IOCs
(exposures, techniques, motor moves, source warm-up) is expressed in cell time
and waited for with :meth:`SimClock.sleep_until`, so the same plan runs a real
experiment at ``scale = 1`` and a whole simulated one in minutes.

:class:`SimClock` is plain Python (no EPICS); :class:`ClockGroup` serves it::

    {P}clock:time    float RO  cell time in s (updated at 20 Hz wall, and on read)
    {P}clock:scale   float RO  time-scale factor
    {P}clock:wait    float RW  put T with completion: completes when clock:time >= T
    {P}clock:hold    int   RW  1: cell time frozen; put 0 to start it (again), 1 to freeze
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from caproto.server import PVGroup, pvproperty

__all__ = ["SimClock", "ClockGroup", "find_clock"]


class SimClock:
    """Cell time that runs ``scale`` times faster than the monotonic wall clock.

    Parameters
    ----------
    scale : float
        Cell seconds per wall second (> 0).
    t_start : float
        Cell time at construction, in s.
    monotonic : callable
        Wall clock in s (injectable for tests).
    hold : bool
        Start frozen at ``t_start`` until :meth:`release`.
    """

    #: Longest single wall sleep in :meth:`sleep_until`; the loop re-checks the
    #: clock after it, so a long wait never oversleeps by more than scheduling jitter.
    max_wall_sleep = 0.2

    def __init__(self, scale: float = 1.0, t_start: float = 0.0, *,
                 monotonic: Callable[[], float] = time.monotonic, hold: bool = False):
        scale = float(scale)
        if not scale > 0:
            raise ValueError(f"time scale must be > 0, got {scale!r}")
        self.scale = scale
        self.t_start = float(t_start)
        self._monotonic = monotonic
        self._wall0 = monotonic()
        self._held_at: float | None = self.t_start if hold else None

    def __repr__(self) -> str:
        return f"SimClock(scale={self.scale!r}, t={self.now():.3f})"

    def restart(self, t_start: float = 0.0) -> None:
        """Set the cell time to ``t_start`` now (e.g. when the server starts serving).

        A held clock stays held, at ``t_start``.
        """
        self.t_start = float(t_start)
        self._wall0 = self._monotonic()
        if self._held_at is not None:
            self._held_at = self.t_start

    @property
    def held(self) -> bool:
        return self._held_at is not None

    def hold(self) -> float:
        """Freeze the cell time where it is; return it."""
        if self._held_at is None:
            self._held_at = self.now()
        return self._held_at

    def release(self) -> float:
        """Let a held clock run again from where it was frozen; return that time."""
        if self._held_at is not None:
            t, self._held_at = self._held_at, None
            self.restart(t)
        return self.now()

    def now(self) -> float:
        """The current cell time in s."""
        if self._held_at is not None:
            return self._held_at
        return self.t_start + (self._monotonic() - self._wall0) * self.scale

    def wall_delay(self, cell_seconds: float) -> float:
        """Wall seconds that ``cell_seconds`` of cell time take (0 if negative)."""
        return max(float(cell_seconds), 0.0) / self.scale

    async def sleep_until(self, t_cell: float) -> float:
        """Wait (asyncio) until the cell time reaches ``t_cell``; return the time."""
        while True:
            now = self.now()
            remaining = t_cell - now
            if remaining <= 0:
                return now
            await asyncio.sleep(min(self.wall_delay(remaining), self.max_wall_sleep))

    async def sleep(self, cell_seconds: float) -> float:
        """Wait ``cell_seconds`` of cell time; return the cell time reached."""
        return await self.sleep_until(self.now() + cell_seconds)


def find_clock(group: PVGroup | None) -> SimClock | None:
    """The :class:`SimClock` of the nearest group up the parent chain, if any.

    A station sets ``self.simclock`` before ``PVGroup.__init__`` so that all its
    subgroups share one clock.
    """
    while group is not None:
        clock = getattr(group, "simclock", None)
        if isinstance(clock, SimClock):
            return clock
        group = getattr(group, "parent", None)
    return None


class ClockGroup(PVGroup):
    """The simulated clock.

    PVs
    ---
    time (float, RO, s): cell time since the experiment's t = 0; updated at
        20 Hz wall and refreshed on every read.
    scale (float, RO): cell seconds per wall second.
    wait (float, RW, s): put T with completion; the put completes once
        ``time >= T`` (returns at once if T is in the past).
    hold (int, RW): 1 while the cell time is frozen (an IOC started held waits
        for a put of 0, so a plan's t = 0 is the moment it is released); put 1
        to freeze it.
    """

    update_period = 0.05  # wall s between clock:time updates (20 Hz)

    def __init__(self, *args, simclock: SimClock | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.simclock = simclock or find_clock(self.parent) or SimClock()

    cell_time = pvproperty(
        name="time", value=0.0, read_only=True, units="s", precision=3,
        doc="Cell (simulated) time, s since the experiment's t=0",
    )
    scale = pvproperty(
        value=1.0, read_only=True, precision=3,
        doc="Time-scale factor: cell seconds per wall second",
    )
    wait = pvproperty(
        value=0.0, units="s", precision=3,
        doc="Put T with completion: completes when clock:time >= T",
    )
    hold = pvproperty(
        value=0, doc="1: cell time frozen; put 0 to start it, 1 to freeze it",
    )

    @cell_time.startup
    async def cell_time(self, instance, async_lib):
        await self.scale.write(self.simclock.scale)
        await self.hold.write(int(self.simclock.held))
        while True:
            now = self.simclock.now()
            if now != instance.value:  # no monitor traffic while held
                await instance.write(now)
            await async_lib.library.sleep(self.update_period)

    @cell_time.getter
    async def cell_time(self, instance):
        return self.simclock.now()

    @hold.putter
    async def hold(self, instance, value):
        if value:
            self.simclock.hold()
        else:
            self.simclock.release()
        await self.cell_time.write(self.simclock.now())
        return 1 if value else 0

    @wait.putter
    async def wait(self, instance, value):
        await self.simclock.sleep_until(value)
        await self.cell_time.write(self.simclock.now())
        return value
