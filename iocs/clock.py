"""The simulated clock shared by the simulators, and its PV group.

Two kinds of clock, one interface (``now``, ``sleep_until``, ``sleep``, ``hold``):

* :class:`SimClock` runs ``scale`` times faster than the wall clock: the cell
  time is ``t_start + (monotonic() - wall0) * scale`` (scale 1 is a real station,
  300 a demo that still looks alive).
* :class:`VirtualClock` is a discrete-event clock: cell time advances only by
  what the station's operations take (an exposure, a motor move, a warm-up, a
  ``clock:wait``), jumping from one pending operation's end to the next, and
  through the cell's own events (a technique's end, a voltage limit, a short)
  at their own times. Channel Access, file writes, Tiled and the plan's logic
  take no cell time; with nothing pending the clock stands still. Whatever the
  machine's load, the same plan gives the same experiment.

Every duration in the IOCs is expressed in cell time and waited for with
``sleep_until``, so the same plan runs a real experiment, a scaled one, or a
whole virtual one as fast as the machine allows.

:class:`ClockGroup` serves either::

    {P}clock:time     float RO  cell time in s
    {P}clock:scale    float RO  time-scale factor (0: virtual time)
    {P}clock:virtual  int   RO  1: virtual (discrete-event) time
    {P}clock:wait     float RW  put T with completion: completes when clock:time >= T
    {P}clock:hold     int   RW  1: cell time frozen; put 0 to start it (again), 1 to freeze
    {P}clock:sync     int   RW  virtual time: 1 = advance only while clock:waiting is 1
    {P}clock:waiting  int   RW  virtual time: 1 while the client waits on its operations,
                                2 while it waits out a condition (a suspension)
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable

from caproto.server import PVGroup, pvproperty

__all__ = [
    "SimClock",
    "VirtualClock",
    "make_clock",
    "parse_time_scale",
    "ClockGroup",
    "find_clock",
    "VIRTUAL",
]

#: The spelling of virtual time wherever a time scale is given (``--time-scale virtual``).
VIRTUAL = "virtual"

logger = logging.getLogger(__name__)


def parse_time_scale(value) -> float | str:
    """A time scale from a command line or a call: a finite float > 0, or ``"virtual"``."""
    if isinstance(value, str) and value.strip().lower() in (VIRTUAL, "max"):
        return VIRTUAL
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"time scale must be a number > 0 or {VIRTUAL!r}, not {value!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"time scale must be a finite number > 0 or {VIRTUAL!r}, not {value!r}")
    return scale


def make_clock(time_scale=1.0, *, hold: bool = False) -> SimClock:
    """The clock for a time scale: :class:`VirtualClock` for ``"virtual"``."""
    scale = parse_time_scale(time_scale)
    if scale == VIRTUAL:
        return VirtualClock(hold=hold)
    return SimClock(scale, hold=hold)


def _waiting_mode(on) -> int:
    """``clock:waiting`` as a mode: 0 not waiting, 1 on its operations (True too),
    2 out a condition."""
    return min(max(int(on), 0), 2)


async def _first(awaitable: Awaitable, event: asyncio.Event) -> bool:
    """Await ``awaitable`` or ``event`` (whichever first); True if the event won."""
    if event.is_set():
        return True
    task = asyncio.ensure_future(awaitable)
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in (task, waiter):
            if not fut.done():
                fut.cancel()
    return waiter in done


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

    virtual = False

    #: Longest single wall sleep in :meth:`sleep_until`; the loop re-checks the
    #: clock after it, so a long wait never oversleeps by more than scheduling jitter.
    max_wall_sleep = 0.2

    def __init__(
        self,
        scale: float = 1.0,
        t_start: float = 0.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        hold: bool = False,
    ):
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"time scale must be a finite number > 0, got {scale!r}")
        self.scale = scale
        self.t_start = float(t_start)
        self._monotonic = monotonic
        self._wall0 = monotonic()
        self._held_at: float | None = self.t_start if hold else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale!r}, t={self.now():.3f})"

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

    async def sleep_until(self, t_cell: float, *, background: bool = False) -> float:
        """Wait (asyncio) until the cell time reaches ``t_cell``; return the time
        (``background``: an operation of the station itself, see :class:`VirtualClock`)."""
        while True:
            now = self.now()
            remaining = t_cell - now
            if remaining <= 0:
                return now
            await asyncio.sleep(min(self.wall_delay(remaining), self.max_wall_sleep))

    async def sleep(self, cell_seconds: float) -> float:
        """Wait ``cell_seconds`` of cell time; return the cell time reached."""
        return await self.sleep_until(self.now() + cell_seconds)

    async def sleep_until_or(self, t_cell: float, event: asyncio.Event) -> bool:
        """Wait until ``t_cell`` or until ``event`` is set; True if the event came first."""
        return await _first(self.sleep_until(t_cell), event)

    async def follow(self, publish: Callable[[float], Awaitable], period: float) -> None:
        """Run ``publish(t)`` as the cell time goes on: every ``period`` s of wall time
        (scaled time), or after every advance (virtual time: a step hook). Never returns
        on scaled time; use it as a PV's startup."""
        if self.virtual:
            self.add_step_hook(publish)
            await publish(self.now())
            return
        while True:
            await publish(self.now())
            await asyncio.sleep(period)

    # -- hooks used by virtual time (the scaled clock needs none) ------------------
    def add_step_hook(self, hook: Callable[[float], Awaitable]) -> None:
        """Virtual time: ``await hook(t)`` after every advance, before waiters wake."""

    def add_event_source(self, next_event: Callable[[], float]) -> None:
        """Virtual time: ``next_event()`` gives the cell time of a model's next
        intrinsic event (``inf``: none); the clock stops there on its way."""

    def set_sync(self, on: bool) -> None:
        """Virtual time: advance only while a client says it waits (:meth:`set_waiting`)."""

    def set_waiting(self, on: int) -> int:
        """Virtual time: the synchronized client waits on its operations (1), waits
        out a condition (2) or does not wait (0). Returns the mode taken."""
        return _waiting_mode(on)


class VirtualClock(SimClock):
    """Discrete-event cell time: it advances only to let pending operations end.

    An operation of the station (an exposure, a move, a warm-up, a ``clock:wait``)
    calls :meth:`sleep_until`; while at least one is pending, the clock jumps to
    the earliest end among them and the models' events (:meth:`add_event_source`),
    runs the step hooks (the models catch up and publish), then wakes the
    operations that are due. Nothing else moves it: with nothing pending it
    stands still.

    With :meth:`set_sync` on, it also waits for its client to say it is waiting
    (:meth:`set_waiting`): a plan that starts two exposures and then waits on
    both has them start at the same cell time, however the two requests were
    spaced on the wire.

    A *background* operation (``sleep_until(t, background=True)``: the ring's
    refill after a beam dump) is something the station does by itself, not
    something a client asked for and waits on. It never makes a synchronized
    clock advance while the client waits on its own operations (waiting 1):
    the clock stops there on its way to a client operation's end, like a
    model event. Only a client waiting out a condition (waiting 2: the
    RunEngine suspended until the beam is back) lets it drive the clock.
    Otherwise the moment between an exposure's end and the client saying it
    no longer waits, a span of wall time the machine's load decides, would be
    enough for the clock to run on to the refill.
    """

    virtual = True
    #: event-loop turns given to requests in flight before each advance, so every
    #: operation started together is registered before the clock moves
    settle_turns = 50
    #: advances in a row at one cell time before the models' events are ignored
    max_stalled_steps = 1000

    def __init__(self, t_start: float = 0.0, *, hold: bool = False):
        self.scale = 0.0
        self._t = float(t_start)
        self._held = bool(hold)
        self._pending: list = []  # heap of (t, seq, future, background)
        self._seq = itertools.count()
        self._hooks: list = []
        self._sources: list = []
        self._sync = False
        self._waiting = 0  # 0 no, 1 on its operations, 2 out a condition
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None
        #: number of advances so far (for benchmarks and tests)
        self.steps = 0

    def __repr__(self) -> str:
        return f"VirtualClock(t={self._t:.3f}, pending={len(self._pending)})"

    # -- SimClock interface ----------------------------------------------------------
    def restart(self, t_start: float = 0.0) -> None:
        self._t = float(t_start)

    @property
    def held(self) -> bool:
        return self._held

    def hold(self) -> float:
        self._held = True
        return self._t

    def release(self) -> float:
        self._held = False
        self._kick()
        return self._t

    def now(self) -> float:
        return self._t

    def wall_delay(self, cell_seconds: float) -> float:
        return math.inf  # no fixed relation to the wall clock

    async def sleep_until(self, t_cell: float, *, background: bool = False) -> float:
        """Wait until ``t_cell`` (an operation the clock advances to); with
        ``background``, an operation of the station itself (see the class)."""
        t_cell = float(t_cell)
        if math.isnan(t_cell):
            raise ValueError("cannot wait until NaN")
        if t_cell <= self._t:
            return self._t
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._pending, (t_cell, next(self._seq), fut, bool(background)))
        self._kick()
        return await fut  # cancelled: dropped from the heap at the next advance

    def add_step_hook(self, hook) -> None:
        self._hooks.append(hook)

    def add_event_source(self, next_event) -> None:
        self._sources.append(next_event)

    def set_sync(self, on: bool) -> None:
        self._sync = bool(on)
        self._kick()

    def set_waiting(self, on: int) -> int:
        self._waiting = _waiting_mode(on)
        self._kick()
        return self._waiting

    @property
    def pending(self) -> int:
        """Operations waiting on the clock."""
        return sum(1 for _, _, fut, _ in self._pending if not fut.done())

    # -- the scheduler ---------------------------------------------------------------
    def _kick(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not serving yet: the runner starts with the first wait
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run(), name="virtual-clock")
        self._wake.set()

    def _target(self) -> float | None:
        """The cell time the clock may advance to now (None: it stands still)."""
        self._pending = [item for item in self._pending if not item[2].done()]
        heapq.heapify(self._pending)
        if not self._pending or self._held:
            return None
        if not self._sync or self._waiting == 2:
            return self._pending[0][0]
        if not self._waiting:
            return None
        ends = [t for t, _, _, background in self._pending if not background]
        return min(ends) if ends else None

    def _next_model_event(self) -> float:
        return min((float(f()) for f in self._sources), default=math.inf)

    async def _run(self) -> None:
        stalled = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                for _ in range(self.settle_turns):
                    await asyncio.sleep(0)
                target = self._target()
                if target is None:
                    break
                # background operations due on the way are woken there
                event = min(self._next_model_event(), self._pending[0][0])
                if event <= self._t:
                    stalled += 1
                    if stalled > self.max_stalled_steps:
                        event = math.inf  # a model that never consumes its event
                else:
                    stalled = 0
                # A model event due now (or late) is handled at the present time.
                self._t = max(self._t, min(target, event))
                self.steps += 1
                for hook in self._hooks:
                    try:
                        await hook(self._t)
                    except Exception:  # a model's failure must not stop time
                        logger.exception(
                            "virtual clock: step hook %r failed at t=%.3f", hook, self._t
                        )
                while self._pending and self._pending[0][0] <= self._t:
                    _, _, fut, _ = heapq.heappop(self._pending)
                    if not fut.done():
                        fut.set_result(self._t)


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
    time (float, RO, s): cell time since the experiment's t = 0; refreshed on
        every read (scaled time: published at 20 Hz wall; virtual time: at every
        advance).
    scale (float, RO): cell seconds per wall second (0: virtual time).
    virtual (int, RO): 1 when the clock is virtual (discrete-event) time.
    wait (float, RW, s): put T with completion; the put completes once
        ``time >= T`` (returns at once if T is in the past; NaN is refused).
    hold (int, RW): 1 while the cell time is frozen (an IOC started held waits
        for a put of 0, so a plan's t = 0 is the moment it is released); put 1
        to freeze it.
    sync (int, RW): virtual time only: 1 = advance only while ``waiting`` is
        not 0 (a RunEngine session sets it, see ``operando.session``).
    waiting (int, RW): virtual time only: 1 while the synchronized client waits
        on its operations (the clock advances to their ends), 2 while it waits
        out a condition such as a suspension (the station's own background
        operations, a refill, may then drive the clock too); 0 otherwise.
    """

    update_period = 0.05  # wall s between clock:time updates (20 Hz), scaled time

    def __init__(self, *args, simclock: SimClock | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.simclock = simclock or find_clock(self.parent) or SimClock()

    cell_time = pvproperty(
        name="time",
        value=0.0,
        read_only=True,
        units="s",
        precision=3,
        doc="Cell (simulated) time, s since the experiment's t=0",
    )
    scale = pvproperty(
        value=1.0,
        read_only=True,
        precision=3,
        doc="Time-scale factor: cell seconds per wall second (0: virtual time)",
    )
    virtual = pvproperty(
        value=0,
        read_only=True,
        doc="1: virtual (discrete-event) cell time",
    )
    wait = pvproperty(
        value=0.0,
        units="s",
        precision=3,
        doc="Put T with completion: completes when clock:time >= T",
    )
    hold = pvproperty(
        value=0,
        doc="1: cell time frozen; put 0 to start it, 1 to freeze it",
    )
    sync = pvproperty(
        value=0,
        doc="Virtual time: 1 = advance only while clock:waiting is 1",
    )
    waiting = pvproperty(
        value=0,
        doc="Virtual time: 1 while the synchronized client waits on its operations, "
        "2 while it waits out a condition, 0 otherwise",
    )

    async def _publish(self, t: float) -> None:
        if t != self.cell_time.value:
            await self.cell_time.write(t)

    @cell_time.startup
    async def cell_time(self, instance, async_lib):
        clock = self.simclock
        await self.scale.write(clock.scale)
        await self.virtual.write(int(clock.virtual))
        await self.hold.write(int(clock.held))
        await clock.follow(self._publish, self.update_period)  # no traffic while held

    @cell_time.getter
    async def cell_time(self, instance):
        # None: serve the value already published (virtual time publishes at every
        # advance). A new value is written first, which also posts it to every
        # monitor: with a client subscribed, that made each read ~10x slower.
        t = self.simclock.now()
        return None if t == instance.value else t

    @hold.putter
    async def hold(self, instance, value):
        if value:
            self.simclock.hold()
        else:
            self.simclock.release()
        await self.cell_time.write(self.simclock.now())
        return 1 if value else 0

    @sync.putter
    async def sync(self, instance, value):
        self.simclock.set_sync(bool(value))
        return 1 if value else 0

    @waiting.putter
    async def waiting(self, instance, value):
        return self.simclock.set_waiting(value)

    @wait.putter
    async def wait(self, instance, value):
        if math.isnan(value):
            raise ValueError("clock:wait: NaN is not a cell time")
        await self.simclock.sleep_until(value)
        await self.cell_time.write(self.simclock.now())
        return value
