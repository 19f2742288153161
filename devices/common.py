"""Devices shared by the stations: simulated clock, potentiostat, HDF5 area detector.

Every class talks Channel Access only. PV names are those of ``docs/xct-pvs.md``;
the potentiostat and the clock are the same on both stations.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from event_model import ComposeStreamResource
from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor, EpicsSignal, EpicsSignalRO, Kind
from ophyd.status import DeviceStatus, Status

from ..constants import FRAME_DATASET

TECHNIQUE_END_STATES = ("done", "limit", "aborted")

logger = logging.getLogger(__name__)

#: Extra wall seconds a put completion may take beyond its expected duration
#: (Channel Access, frame rendering and writing, a busy machine).
DEADLINE_MARGIN_S = 30.0
#: Extra cell seconds beyond the expected duration on virtual time.
CELL_MARGIN_S = 60.0
#: Virtual time: wall seconds after which a put completion counts as lost anyway
#: (cell time may stand still: nothing else pending).
VIRTUAL_WALL_LIMIT_S = 600.0
#: Virtual time: wall seconds a completion may still arrive in once the cell time
#: has passed its deadline. The IOC sends a completion after its own work (a
#: frame written), while a clock not gated by this client's waits may have run
#: on meanwhile: the cell time alone would fail a put that ended on time.
CELL_DEADLINE_GRACE_S = 30.0
#: wall s a resume waits for a frame the IOC is still finishing before it counts the file's
RECONCILE_WAIT_S = 10.0

#: PV prefixes whose loss of connection a RunEngine suspender handles
#: (``operando.suspenders.install_suspenders``): a put completion lost there
#: becomes a suspension, not an error.
SUSPENDER_GUARDED_PREFIXES: set[str] = set()


class CompletionLost(TimeoutError):
    """A put completion that did not come: the IOC went away or it overran its deadline."""


class FrameLost(CompletionLost):
    """An acquisition the IOC completed without a new frame in its file (taken
    again if an IOC outage explains it, as a lost completion is)."""


class GuardedStatus(Status):
    """The status a guarded put returns. ``abandoned``: it finished because a
    suspension or a pause dropped the wait, not because the hardware completed."""

    abandoned = False


class _Guard:
    """Ends a put-completion status that would otherwise never end.

    It fails the status with :class:`CompletionLost` (naming the PV and the
    expected duration) when the PV disconnects (unless a connection suspender
    guards its prefix) or when the deadline passes: ``expected`` cell seconds
    plus a margin, on the wall clock (``scale`` cell s per wall s) or, on
    virtual time, on the cell clock (``clock`` device).
    """

    live: weakref.WeakSet = weakref.WeakSet()

    @classmethod
    def around(cls, put, signal, *, expected: float, clock=None, what: str = "") -> Status:
        """``put()`` (it starts the put with completion and returns its status),
        guarded: on virtual time the cell time is read first (a read on the heels
        of a put waits ~20 ms behind it in the server). Returns the guard's status."""
        watch = _ClockWatch.of(clock)
        t0 = watch.now() if watch is not None and watch.scale == 0.0 else None
        return cls(put(), signal, expected=expected, clock=clock, what=what, t0=t0).status

    def __init__(self, inner, signal, *, expected: float, clock=None, what: str = "", t0=None):
        # The plan waits on a status of our own that follows the hardware's: a
        # wait a suspension or a pause abandoned can then never fail later (an
        # EpicsMotor's MoveStatus fails when the IOC comes back, for instance).
        self.inner = inner
        self.status = GuardedStatus(obj=getattr(inner, "obj", None) or signal)
        self.signal = signal
        self.expected = float(expected)
        self.what = what or f"put to {signal.pvname}"
        self._subs: list = []
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._done = False
        self._limit: float | None = None
        self._grace: threading.Timer | None = None
        self._watch: _ClockWatch | None = None
        _Guard.live.add(self)
        watch = _ClockWatch.of(clock)
        scale = watch.scale if watch is not None else None
        if scale == 0.0:  # virtual time: the deadline in cell time
            if t0 is None:
                t0 = watch.now()
            if t0 is not None:
                self._t0 = t0
                self._limit = t0 + self.expected + CELL_MARGIN_S
                watch.add(self)
            wall = VIRTUAL_WALL_LIMIT_S  # backstop: the clock may stand still
        else:
            wall = self.expected / (scale or 1.0) + DEADLINE_MARGIN_S
        if wall is not None:
            self._timer = threading.Timer(
                wall, self.fail, args=(f"no completion after {wall:.1f} s of wall time",)
            )
            self._timer.daemon = True
            self._timer.start()

        def on_meta(connected=None, **kwargs):
            if connected is False and not _guarded(signal):
                self.fail("the IOC disconnected")

        self._subs.append((signal, signal.subscribe(on_meta, event_type="meta", run=False)))
        inner.add_callback(self._inner_done)

    def _inner_done(self, inner) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._release()
        if inner.success:
            self.status.set_finished()
        else:
            try:
                exc = inner.exception(timeout=0)
            except Exception as e:
                exc = e
            self.status.set_exception(exc or RuntimeError(f"{self.what} failed"))

    def fail(self, why: str) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        exc = CompletionLost(
            f"{self.what} ({self.signal.pvname}) did not complete: {why}; it was expected "
            f"to take {self.expected:.1f} s of cell time"
        )
        logger.error("%s", exc)
        self._release()
        self.status.set_exception(exc)

    def cancel(self) -> None:
        """A suspension or a pause abandoned the wait: it ends quietly, now
        (``status.abandoned``: what follows the status must not take it for the
        hardware's completion)."""
        with self._lock:
            if self._done:
                return
            self._done = True
        self._release()
        self.status.abandoned = True
        self.status.set_finished()

    def on_cell_time(self, t: float) -> None:
        """The clock's watch: the cell time is now ``t``. Past the deadline, the
        completion has :data:`CELL_DEADLINE_GRACE_S` wall seconds left to come."""
        if self._limit is None or t <= self._limit:
            return
        why = (
            f"cell time reached {t:.1f} s, past its deadline {self._limit:.1f} s "
            f"(started at {self._t0:.1f} s)"
        )
        with self._lock:
            if self._done or self._grace is not None:
                return
            self._grace = threading.Timer(CELL_DEADLINE_GRACE_S, self.fail, args=(why,))
            self._grace.daemon = True
            self._grace.start()

    def _release(self) -> None:
        for timer in (self._timer, self._grace):
            if timer is not None:
                timer.cancel()
        if self._watch is not None:
            self._watch.discard(self)
        for sig, cid in self._subs:
            try:
                sig.unsubscribe(cid)
            except Exception:
                pass
        self._subs.clear()
        _Guard.live.discard(self)


def abandon_pending_completions() -> int:
    """Suspension: the waits in progress are dropped (the RunEngine rewinds and
    asks again on resume); their statuses must not fail later. Returns how many."""
    guards = list(_Guard.live)
    for g in guards:
        g.cancel()
    return len(guards)


def _guarded(signal) -> bool:
    return any(signal.pvname.startswith(p) for p in SUSPENDER_GUARDED_PREFIXES)


class _ClockWatch:
    """What the guards of one station clock share: its scale, read once (a
    station does not change between virtual and scaled time), and one
    subscription to its cell time that checks the virtual-time deadlines of the
    guards in progress (no Channel Access subscription made and dropped per put)."""

    def __init__(self, clock, scale: float):
        self.clock = clock
        self.scale = scale
        self._guards: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()
        self._cid = None

    @classmethod
    def of(cls, clock) -> _ClockWatch | None:
        """The watch of ``clock`` (made at its first guarded put); None without a clock
        or while its scale cannot be read."""
        if clock is None:
            return None
        watch = getattr(clock, "_completion_watch", None)
        if watch is None:
            scale = _clock_scale(clock)
            if scale is None:
                return None
            watch = cls(clock, scale)
            clock._completion_watch = watch
        return watch

    def now(self) -> float | None:
        """The cell time, read (never the last monitor value: under load the
        monitor's callbacks run late, and a deadline from a stale time would
        fail a put that is on time)."""
        return _cell_now(self.clock)

    def add(self, guard: _Guard) -> None:
        with self._lock:
            self._guards.add(guard)
            guard._watch = self
            if self._cid is None:
                self._cid = self.clock.time.subscribe(self._on_time, run=False)

    def discard(self, guard: _Guard) -> None:
        with self._lock:
            self._guards.discard(guard)

    def _on_time(self, value=None, **kwargs) -> None:
        if value is None:
            return
        with self._lock:
            guards = list(self._guards)
        for g in guards:
            g.on_cell_time(float(value))


def _clock_scale(clock) -> float | None:
    try:
        if int(clock.virtual.get()):
            return 0.0
        return float(clock.scale.get()) or 1.0
    except Exception:
        return None


def _cell_now(clock) -> float | None:
    try:
        return float(clock.time.get())
    except Exception:
        return None


def guarded_set(signal, value, *, expected: float, clock=None, what: str = "") -> Status:
    """``signal.set(value)`` (a put with completion) that ends, whatever happens:
    see :class:`_Guard`."""
    return _Guard.around(
        lambda: signal.set(value), signal, expected=expected, clock=clock, what=what
    )


class CompletionSignal(EpicsSignal):
    """A command PV put with completion (``put_complete=True``) whose ``set()``
    always ends: guarded by :class:`_Guard` with the duration it should take
    (``expected``: cell seconds, or a callable of the parent device)."""

    def __init__(self, *args, expected=0.0, **kwargs):
        kwargs.setdefault("put_complete", True)
        super().__init__(*args, **kwargs)
        self._expected = expected

    def expected_duration(self) -> float:
        e = self._expected
        try:
            return float(e(self.parent) if callable(e) else e)
        except Exception:
            return 0.0

    def set(self, value, **kwargs) -> Status:
        return _Guard.around(
            lambda: super(CompletionSignal, self).set(value, **kwargs),
            self,
            expected=self.expected_duration(),
            clock=getattr(self.root, "station_clock", None),
        )


class CheckedSignal(EpicsSignal):
    """A setting: ``set()`` puts with completion, then reads back; a value the IOC
    clipped or refused is a clear error at once (never a wait on a readback that
    cannot come), and no set() stays in progress after a failure."""

    #: wall seconds for the put and the read back
    write_timeout_s = 10.0

    def _set_and_wait(self, value, timeout, **kwargs):
        timeout = self.write_timeout_s if timeout is None else timeout
        done = threading.Event()
        self.put(value, use_complete=True, callback=lambda **kw: done.set())
        if not done.wait(timeout):
            raise CompletionLost(f"{self.pvname}: no put completion within {timeout:.0f} s")
        readback = self.get(use_monitor=False, timeout=timeout)
        if isinstance(value, str) or isinstance(readback, str):
            ok = str(readback) == str(value)
        else:
            try:
                ok = math.isclose(float(readback), float(value), rel_tol=1e-9, abs_tol=1e-12)
            except (TypeError, ValueError):
                ok = readback == value
        if not ok:
            raise ValueError(
                f"{self.pvname}: the IOC holds {readback!r} after a put of {value!r} "
                f"(clipped to its limits or refused)"
            )

    def stop(self, *, success: bool = False) -> None:
        # A set() left in progress (its put completion lost) must not block the
        # next one: forget it, as its thread will end by its own timeout.
        self._set_thread = None
        stop = getattr(super(), "stop", None)
        if stop is not None:
            stop(success=success)


class _CharArrayDescription:
    """Describe a char-array string PV without its meaningless control limits.

    Channel Access reports the limits of a CHAR waveform as bytes, which are
    not JSON: they would break every document consumer that serializes JSON
    (TiledWriter's backup among them).
    """

    def describe(self):
        desc = super().describe()
        for entry in desc.values():
            for key in ("lower_ctrl_limit", "upper_ctrl_limit"):
                if isinstance(entry.get(key), (bytes, str)):
                    entry.pop(key)
        return desc


class CharArraySignal(_CharArrayDescription, EpicsSignal):
    """A writable string held in a CHAR waveform (paths, names)."""

    def __init__(self, read_pv, **kwargs):
        kwargs.setdefault("string", True)
        super().__init__(read_pv, **kwargs)


class CharArraySignalRO(_CharArrayDescription, EpicsSignalRO):
    """A read-only string held in a CHAR waveform (paths, JSON)."""

    def __init__(self, read_pv, **kwargs):
        kwargs.setdefault("string", True)
        super().__init__(read_pv, **kwargs)


class Station:
    """Base of a station's dataclass of devices (one field per device, named as
    the variable a user types)."""

    def devices(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def wait_for_connection(self, timeout: float = 10.0) -> None:
        for dev in self.devices().values():
            dev.wait_for_connection(timeout=timeout)

    def attach_clock(self) -> None:
        """Give every device the station clock (``station_clock``): the deadlines
        of their put completions are in its cell time."""
        for dev in self.devices().values():
            dev.station_clock = self.clock


class TwoStateDevice(Device):
    """A device with two named states driven by one put-with-completion PV.

    Subclasses name that component in ``command_name`` and map state names to
    values in ``states``; ``set(name)`` returns a status that finishes when the
    hardware has reached the state, and ``stop()`` puts ``safe_state``.
    """

    command_name: str = ""
    states: dict = {}
    safe_state = None

    #: the state last asked for (a suspension's end puts it back: the RunEngine
    #: stopped the device when it suspended)
    requested = None

    def set(self, value) -> Status:
        if value not in self.states:
            names = sorted(k for k in self.states if isinstance(k, str))
            raise ValueError(f"{self.name}: state must be one of {names}, not {value!r}")
        self.requested = value
        return getattr(self, self.command_name).set(self.states[value])

    def stop(self, *, success: bool = False) -> None:
        """Put the safe state (source off, shutter closed), also when a RunEngine
        pauses or suspends (``stop(success=True)``): no beam while nobody
        measures. The rewound plan switches it back before its next frame
        (``plans.stubs.checkpointed_read``), and a suspension's end puts back
        ``requested``."""
        command = getattr(self, self.command_name)
        if self.safe_state is not None and command.connected:
            command.put(self.states[self.safe_state])
        super().stop(success=success)


class Motor(EpicsMotor):
    """``EpicsMotor`` whose moves always end (a lost completion is an error after
    the travel time plus a margin, or at once when the IOC goes away) and whose
    ``stop()`` does not wait on an IOC that is away."""

    def set(self, position, **kwargs):
        status = super().set(position, **kwargs)
        try:
            velocity = abs(float(self.velocity.get())) or 1.0
            accel = abs(float(self.acceleration.get()))
            expected = abs(float(position) - float(self.position)) / velocity + 2 * accel
        except Exception:
            expected = 0.0
        clock = getattr(self.root, "station_clock", None)
        guard = _Guard(
            status, self.user_setpoint, expected=expected, clock=clock, what=f"move {self.name}"
        )
        return guard.status

    def stop(self, *, success: bool = False) -> None:
        if not self.motor_stop.connected:
            return
        super().stop(success=success)


class SimClock(Device):
    """The station clock: cell time in seconds, and a wait on a cell time.

    ``clock.set(t)`` returns a status that finishes when the clock reaches ``t``
    (a put with completion on ``clock:wait``), so plans wait on the hardware's
    time, never on the wall clock. On a real station the same PVs are served by a
    soft IOC at scale 1. ``virtual`` is 1 when the simulators run on virtual
    time (see :func:`operando.session.synchronize_clock`).
    """

    time = Cpt(EpicsSignalRO, "time", kind=Kind.hinted)
    scale = Cpt(EpicsSignalRO, "scale", kind=Kind.config)
    virtual = Cpt(EpicsSignalRO, "virtual", kind=Kind.config)
    wait = Cpt(EpicsSignal, "wait", put_complete=True, kind=Kind.omitted)
    sync = Cpt(EpicsSignal, "sync", kind=Kind.omitted)
    waiting = Cpt(EpicsSignal, "waiting", kind=Kind.omitted)

    def set(self, value: float) -> Status:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{self.name}: cannot wait until cell time {value!r}")
        now = _cell_now(self)
        expected = max(value - now, 0.0) if now is not None else 0.0
        return guarded_set(
            self.wait,
            value,
            expected=expected,
            clock=self,
            what=f"wait until cell time {value:g} s",
        )

    def now(self) -> float:
        """Cell time from the last monitor update (no CA round trip)."""
        return float(self.time.get())

    def pause(self) -> None:
        """A pause or suspension: the waits in progress are dropped (the RunEngine
        rewinds and asks again on resume), so their deadlines must not fail later."""
        abandon_pending_completions()
        super().pause()


@dataclass(frozen=True)
class Technique:
    """A potentiostat technique: ``OCV`` or ``CC`` (constant current).

    current in A (positive: Li stripped from the top electrode, plated on the
    bottom one), duration in cell-time seconds, e_min/e_max in V stop the CC
    technique when Ewe leaves the window.
    """

    mode: str
    duration: float
    current: float = 0.0
    e_min: float = -10.0
    e_max: float = 10.0
    cycles: int = 1

    @classmethod
    def ocv(cls, duration: float) -> Technique:
        return cls("OCV", duration)

    @classmethod
    def cycling(
        cls, current: float, *, e_min: float, e_max: float, cycles: int = 1, duration: float = 1e9
    ) -> Technique:
        """Galvanostatic cycling (GCPL): discharge first at |current|, turning at
        ``e_min``/``e_max``, for ``cycles`` full cycles or ``duration`` s."""
        return cls("GCPL", duration, abs(current), e_min, e_max, cycles)

    @classmethod
    def constant_current(
        cls, current: float, duration: float, *, e_min: float = -10.0, e_max: float = 10.0
    ) -> Technique:
        return cls("CC", duration, current, e_min, e_max)


class Potentiostat(Device):
    """SP-150e-like potentiostat: OCV and constant-current techniques.

    ``set(Technique(...))`` configures and starts a technique and returns a status
    that finishes when the technique ends (duration reached, or a potential
    limit: ``state`` is then ``done`` or ``limit``): ``bps.mv(pstat, technique)``
    runs a whole technique. To run one in the background while the plan does
    other things, as a flyer: ``bps.prepare(pstat, technique, wait=True)``,
    ``bps.kickoff(pstat, wait=True)`` (finishes once it runs), then later
    ``bps.complete(pstat, wait=True)`` (finishes when it has ended).
    ``stop()`` aborts and leaves the cell at open circuit.

    The end of a technique is waited for with a put-with-completion on
    ``pstat:wait``, an operation of the station: on virtual time the clock
    advances to the technique's end only while someone waits for it.
    """

    mode = Cpt(CheckedSignal, "mode", string=True, kind=Kind.config)
    current_sp = Cpt(CheckedSignal, "current_sp", kind=Kind.config)
    duration = Cpt(CheckedSignal, "duration", kind=Kind.config)
    e_min = Cpt(CheckedSignal, "e_min", kind=Kind.config)
    e_max = Cpt(CheckedSignal, "e_max", kind=Kind.config)
    start_cmd = Cpt(CompletionSignal, "start", kind=Kind.omitted)
    wait_cmd = Cpt(
        CompletionSignal, "wait", expected=lambda pstat: pstat.remaining(), kind=Kind.omitted
    )
    abort_cmd = Cpt(EpicsSignal, "stop", kind=Kind.omitted)
    state = Cpt(EpicsSignalRO, "state", string=True, kind=Kind.normal)
    ewe = Cpt(EpicsSignalRO, "ewe", kind=Kind.hinted)
    current = Cpt(EpicsSignalRO, "i", kind=Kind.hinted)
    charge = Cpt(EpicsSignalRO, "charge", kind=Kind.normal)
    elapsed = Cpt(EpicsSignalRO, "elapsed", kind=Kind.normal)

    def current_limits(self) -> tuple[float, float]:
        """The largest current the instrument delivers (from the PV's control limits)."""
        return tuple(self.current_sp.limits)

    def prepare(self, technique: Technique) -> Status:
        """Configure ``technique`` (mode, current, duration, limits); nothing starts."""
        if not isinstance(technique, Technique):
            raise TypeError(f"{self.name} takes a Technique, not {technique!r}")
        settings = [
            (self.mode, technique.mode),
            (self.duration, technique.duration),
            (self.current_sp, technique.current),
            (self.e_min, technique.e_min),
            (self.e_max, technique.e_max),
        ]
        if technique.mode == "GCPL":
            if not hasattr(self, "cycles"):
                raise ValueError(f"{self.name} has no galvanostatic cycling (GCPL)")
            settings.append((self.cycles, technique.cycles))
        for sig, value in settings:
            sig.put(value, wait=True)
        status = Status(obj=self)
        status.set_finished()
        return status

    def kickoff(self) -> Status:
        """Start the prepared technique; finishes once it runs."""
        return self.start_cmd.set(1)

    def complete(self) -> Status:
        """Finishes when the running technique has ended (at once if none runs)."""
        return self.wait_cmd.set(1)

    def remaining(self) -> float:
        """Cell seconds the running technique may still take (its duration left)."""
        try:
            duration = float(self.duration.get())
            elapsed = float(self.elapsed.get())
        except Exception:
            return 0.0
        return max(duration - elapsed, 0.0)

    def set(self, technique: Technique) -> Status:
        self.prepare(technique)
        self.kickoff().wait(timeout=10.0)
        return self.complete()

    def is_running(self) -> bool:
        """A fresh read of the technique state (not a monitor's cached value)."""
        return self.state.get(use_monitor=False) == "running"

    def stop(self, *, success: bool = False) -> None:
        """Abort the technique (the cell to open circuit). A RunEngine pausing,
        suspending or closing a run calls ``stop(success=True)``: the technique
        goes on (the cell keeps cycling); a plan's ``bps.stop(pstat)`` aborts it."""
        if not success and self.abort_cmd.connected:
            self.abort_cmd.put(1, wait=True)
        super().stop(success=success)

    def pause(self) -> None:
        abandon_pending_completions()
        super().pause()


@dataclass
class _AssetQueue:
    """Documents a detector hands to bluesky at the next ``collect_asset_docs``."""

    docs: deque = field(default_factory=deque)

    def push(self, name: str, doc: dict) -> None:
        self.docs.append((name, doc))

    def clear(self) -> None:
        self.docs.clear()

    def drop(self, name: str) -> int:
        """Forget queued documents called ``name``; return how many."""
        kept = deque(item for item in self.docs if item[0] != name)
        dropped = len(self.docs) - len(kept)
        self.docs = kept
        return dropped

    def drain(self):
        while self.docs:
            yield self.docs.popleft()


class HDF5Cam(Device):
    acquire_time = Cpt(CheckedSignal, "AcquireTime", kind=Kind.config)
    num_exposures = Cpt(CheckedSignal, "NumExposures", kind=Kind.config)
    acquire = Cpt(
        CompletionSignal,
        "Acquire",
        expected=lambda cam: float(cam.acquire_time.get()) * int(cam.num_exposures.get()),
        kind=Kind.omitted,
    )
    acquiring = Cpt(EpicsSignalRO, "Acquire_RBV", kind=Kind.omitted)
    array_counter = Cpt(EpicsSignalRO, "ArrayCounter_RBV", kind=Kind.omitted)
    size_x = Cpt(EpicsSignalRO, "SizeX_RBV", kind=Kind.config)
    size_y = Cpt(EpicsSignalRO, "SizeY_RBV", kind=Kind.config)


class HDF5Plugin(Device):
    file_path = Cpt(CharArraySignal, "FilePath", kind=Kind.config)
    file_name = Cpt(CharArraySignal, "FileName", kind=Kind.config)
    file_number = Cpt(EpicsSignal, "FileNumber", kind=Kind.omitted)
    full_file_name = Cpt(CharArraySignalRO, "FullFileName_RBV", kind=Kind.omitted)
    capture = Cpt(EpicsSignal, "Capture", kind=Kind.omitted)
    capture_rbv = Cpt(EpicsSignalRO, "Capture_RBV", kind=Kind.omitted)
    num_captured = Cpt(EpicsSignalRO, "NumCaptured_RBV", kind=Kind.omitted)
    truncate = Cpt(EpicsSignal, "Truncate", kind=Kind.omitted)


class HDF5AreaDetector(Device):
    """An area detector whose frames go to HDF5 files, handed to bluesky as assets.

    Staging opens a new file (``FilePath/FileName_NNNNNN.h5``, dataset
    ``/entry/data/data``) and queues a ``stream_resource``; each trigger acquires
    one frame and queues a ``stream_datum`` for its index; unstaging closes the
    file. Frames never travel through Channel Access. Stage once per stream (dark,
    flat, projections) so that each stream has its own file.

    Subclasses set ``cam_cls`` and ``image_dtype``.
    """

    image_dtype = "<u2"
    cam = Cpt(HDF5Cam, "cam:")
    hdf1 = Cpt(HDF5Plugin, "HDF1:")

    def __init__(
        self, prefix="", *, write_path: str | Path = "", file_stem: str | None = None, **kwargs
    ):
        super().__init__(prefix, **kwargs)
        self.write_path = str(write_path)
        self.file_stem = file_stem or self.name
        self._assets = _AssetQueue()
        self._bundle = None
        self._first_frame = 0
        self._next_index = 0
        self._generation = 0
        self._index_lock = threading.Lock()

    @property
    def image_key(self) -> str:
        return f"{self.name}_image"

    def frame_shape(self) -> tuple[int, int]:
        return int(self.cam.size_y.get()), int(self.cam.size_x.get())

    def stage(self):
        if not self.write_path:
            raise ValueError(f"{self.name}: no write_path set for the HDF5 files")
        # Whatever an aborted run left queued or exposing belongs to no run now.
        self._assets.clear()
        self._generation += 1
        self._abort_frame()
        self.hdf1.file_path.put(self.write_path, wait=True)
        self.hdf1.file_name.put(self.file_stem, wait=True)
        self.hdf1.capture.put(1, wait=True)
        self._new_resource()
        return super().stage()

    def _new_resource(self) -> None:
        """A stream_resource for the file the IOC has open now."""
        path = self.hdf1.full_file_name.get(use_monitor=False)
        self._first_frame = int(self.hdf1.num_captured.get(use_monitor=False))
        rows, cols = self.frame_shape()
        self._path = path
        self._bundle = ComposeStreamResource()(
            mimetype="application/x-hdf5",
            uri=f"file://localhost{Path(path).resolve()}",
            data_key=self.image_key,
            parameters={"dataset": FRAME_DATASET, "chunk_shape": [1, rows, cols]},
        )
        self._assets.push("stream_resource", self._bundle.stream_resource_doc)
        with self._index_lock:
            self._next_index = self._first_frame

    def _abort_frame(self) -> None:
        """Acquire 0: a frame being exposed is dropped by the IOC (not written)."""
        if self.cam.acquire.connected:
            try:
                self.cam.acquire.put(0, use_complete=False)
            except Exception:
                logger.exception("%s: could not abort the frame in flight", self.name)

    def unstage(self):
        self._generation += 1
        self._abort_frame()
        try:
            self.hdf1.capture.put(0, wait=True)
        finally:
            self._bundle = None
            # An aborted or failed run leaves nothing behind for the next one.
            self._assets.clear()
            self._generation += 1
        return super().unstage()

    def pause(self) -> None:
        """A pause or suspension: a frame in flight belongs to no event any more
        (the RunEngine rewinds and triggers again on resume)."""
        self._generation += 1
        self._assets.drop("stream_datum")
        if self._bundle is not None:
            self._abort_frame()
        super().pause()

    def resume(self) -> None:
        """After a pause or suspension: the IOC may have restarted (autosave brought
        its file back, or a new one is open): follow its frame count."""
        if self._bundle is not None:
            try:
                capturing = int(self.hdf1.capture_rbv.get(use_monitor=False))
                path = self.hdf1.full_file_name.get(use_monitor=False)
                if not capturing:
                    self.hdf1.file_path.put(self.write_path, wait=True)
                    self.hdf1.file_name.put(self.file_stem, wait=True)
                    self.hdf1.capture.put(1, wait=True)
                    self._new_resource()
                elif path != self._path:
                    self._new_resource()
                else:
                    self._reconcile()
            except Exception:
                logger.exception("%s: could not check the IOC's file on resume", self.name)
        super().resume()

    def _reconcile(self) -> None:
        """The file holds exactly one frame per event: frames written after the
        last event (a frame whose completion a suspension or a crash lost) go.
        A frame the IOC is still finishing (aborted by the pause) is waited for
        first, so that the count read is the file's last."""
        deadline = time.monotonic() + RECONCILE_WAIT_S
        while int(self.cam.acquiring.get(use_monitor=False)) and time.monotonic() < deadline:
            time.sleep(0.05)
        n = int(self.hdf1.num_captured.get(use_monitor=False))
        with self._index_lock:
            expected = self._next_index
        if n > expected:
            logger.warning("%s: dropping %d frame(s) no event refers to", self.name, n - expected)
            self.hdf1.truncate.put(expected, wait=True)
        elif n < expected:
            logger.error("%s: the file has %d frames, %d expected", self.name, n, expected)

    def trigger(self) -> Status:
        if self._bundle is None:
            raise RuntimeError(f"{self.name} must be staged before it is triggered")
        # A datum still queued is stale: its event was never read (a rewind).
        self._assets.drop("stream_datum")
        status = DeviceStatus(self)
        generation = self._generation
        bundle = self._bundle
        acquire = self.cam.acquire.set(1)

        def frame_written(st):
            abandoned = getattr(st, "abandoned", False)  # a suspension dropped the wait
            if abandoned or generation != self._generation or bundle is not self._bundle:
                # A frame of before a pause, suspension or unstage: the IOC dropped
                # it; its event is taken again (or never). Nothing to report.
                status.set_finished()
                return
            if not st.success:
                status.set_exception(st.exception() or RuntimeError("acquisition failed"))
                return
            # The frame's index is the IOC's: the frames its file holds once the
            # acquisition ended (its last), never a count kept here, which a
            # completion without a frame would shift for every event after it.
            try:
                held = int(self.hdf1.num_captured.get(use_monitor=False))
            except Exception as err:  # noqa: BLE001 - the status says why
                status.set_exception(err)
                return
            with self._index_lock:
                if generation != self._generation:  # a pause came meanwhile
                    status.set_finished()
                    return
                if held <= self._next_index:
                    status.set_exception(
                        FrameLost(
                            f"{self.name}: the acquisition ended but {self._path} holds "
                            f"{held} frames, as before it"
                        )
                    )
                    return
                index = held - 1
                self._next_index = held
            self._assets.push(
                "stream_datum",
                bundle.compose_stream_datum(indices={"start": index, "stop": index + 1}),
            )
            status.set_finished()

        acquire.add_callback(frame_written)
        return status

    def describe(self):
        desc = super().describe()
        rows, cols = self.frame_shape()
        desc[self.image_key] = {
            "source": self.hdf1.full_file_name.pvname,
            "shape": [rows, cols],
            "dtype": "array",
            "dtype_numpy": self.image_dtype,
            "external": "STREAM:",
        }
        return desc

    def collect_asset_docs(self):
        yield from self._assets.drain()
