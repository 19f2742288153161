"""Suspenders of the stations: the run waits out a fault and goes on by itself.

``install_suspenders(RE, station)`` installs bluesky suspenders on what the
station publishes:

* SAXS/WAXS: the storage ring current (``SuspendFloor``: a beam dump suspends,
  the refill resumes);
* XCT: the X-ray source's interlock (``SuspendBoolHigh`` on ``source.fault``:
  resumes once it is reset);
* both: the IOC itself (``SuspendBoolHigh`` on :class:`StationDisconnected`,
  True while any PV of the station is disconnected: an IOC killed and restarted
  suspends the run, which resumes when every channel is back).

On a suspension the RunEngine stops what moves (the potentiostat keeps
cycling the cell: it is in the IOC), rewinds to the last checkpoint and, on
resume, takes the interrupted frame or raster point again. For that to leave
neither a gap nor a duplicate in Tiled, the RunEngine's ``save`` checkpoints
as soon as an event is out (installed here), so a rewind never replays an event
already emitted, and the detectors
drop the asset documents of a frame in flight (``HDF5AreaDetector.pause``).
(:func:`checkpoint_after_save` does the same as a plan preprocessor, for a
RunEngine without the suspenders.)

Every suspension is recorded: in :attr:`Suspensions.records` (when, why, how
long, in wall and cell time) and, when a run is open, as one event of its
``suspensions`` stream, emitted at the resume.

On virtual time the simulator's clock advances only while the RunEngine waits;
while suspended the RunEngine waits too (``wait_for``), so the clock goes on to
what is pending: a beam refill arrives in cell time and the cell keeps cycling
meanwhile. A source fault has no end in cell time (an operator resets it):
cell time stands still until then. An IOC that is away has no clock; restarted
with autosave it continues from the cell time it saved.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import bluesky.plan_stubs as bps
from bluesky.preprocessors import plan_mutator
from bluesky.suspenders import SuspendBoolHigh, SuspenderBase, SuspendFloor
from bluesky.utils import Msg
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.signal import EpicsSignalBase

from .devices import common

__all__ = [
    "StationDisconnected",
    "Suspensions",
    "SuspensionRecord",
    "checkpoint_after_save",
    "install_suspenders",
]

logger = logging.getLogger(__name__)

SUSPENSIONS_STREAM = "suspensions"


class StationDisconnected(Signal):
    """True while any Channel Access PV of the station's devices is disconnected.

    ``disconnected`` names them (at most a few are listed in ``describe``).
    """

    def __init__(self, station, *, name: str = "station_disconnected", **kwargs):
        super().__init__(value=False, name=name, **kwargs)
        self._lock = threading.Lock()
        self.disconnected: set[str] = set()
        #: how many times the station went away, and when (monotonic s) it was
        #: last whole again: what tells a completion lost to an outage
        self.outages = 0
        self.reconnected_at: float | None = None
        self._signals = []
        for dev in station.devices().values():
            for sig in _epics_signals(dev):
                self._signals.append(sig)
                sig.subscribe(self._on_meta, event_type="meta", run=False)
                if not sig.connected:
                    self.disconnected.add(sig.pvname)
        self._away = bool(self.disconnected)
        self.put(self._away)

    def _on_meta(self, *, obj=None, connected=None, **kwargs):
        if obj is None or connected is None:
            return
        with self._lock:
            if connected:
                self.disconnected.discard(obj.pvname)
            else:
                self.disconnected.add(obj.pvname)
            value = bool(self.disconnected)
            if value != self._away:
                self._away = value
                if value:
                    self.outages += 1
                else:
                    self.reconnected_at = time.monotonic()
                self.put(value)  # under the lock: the suspender sees the changes in order

    def away_since(self, outages: int, *, within: float) -> bool:
        """Whether the station is away now, went away since it had gone away
        ``outages`` times, or came back less than ``within`` s ago."""
        if self.get() or self.outages > outages:
            return True
        back = self.reconnected_at
        return back is not None and time.monotonic() - back < within

    def destroy(self):
        for sig in self._signals:
            try:
                sig.clear_sub(self._on_meta, event_type="meta")
            except Exception:
                pass
        super().destroy()


def _epics_signals(dev):
    if isinstance(dev, EpicsSignalBase):
        yield dev
        return
    if isinstance(dev, Device):
        for walk in dev.walk_signals(include_lazy=False):
            if isinstance(walk.item, EpicsSignalBase):
                yield walk.item


@dataclass
class SuspensionRecord:
    """One suspension: why, and when it began and ended (wall and cell time)."""

    why: str
    started: float  # wall time (epoch s)
    cell_started: float | None
    ended: float | None = None
    cell_ended: float | None = None
    run: str | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    @property
    def cell_duration_s(self) -> float | None:
        if self.cell_ended is None or self.cell_started is None:
            return None
        return self.cell_ended - self.cell_started

    def as_dict(self) -> dict:
        return {
            "why": self.why,
            "started": self.started,
            "ended": self.ended,
            "duration_s": self.duration_s,
            "cell_started": self.cell_started,
            "cell_ended": self.cell_ended,
            "cell_duration_s": self.cell_duration_s,
            "run": self.run,
        }


class _Record(Device):
    """The soft signals one ``suspensions`` event is read from."""

    why = Cpt(Signal, value="")
    started = Cpt(Signal, value=0.0)
    duration_s = Cpt(Signal, value=0.0)
    cell_started = Cpt(Signal, value=0.0)
    cell_ended = Cpt(Signal, value=0.0)


#: wall seconds between the log's reminders that a suspension goes on
REMIND_EVERY_S = 600.0


@dataclass
class Suspensions:
    """What :func:`install_suspenders` installed, and every suspension so far.

    While a suspension lasts, a warning is logged every ``remind_every`` wall
    seconds (what it waits for, for how long, which PVs are away): an
    unattended run that waits out a fault says so in its log, hour after hour.
    """

    RE: object
    station: object
    suspenders: list = field(default_factory=list)
    records: list = field(default_factory=list)
    disconnected: StationDisconnected | None = None
    remind_every: float = REMIND_EVERY_S

    def __post_init__(self):
        self._device = _Record(name="suspension")
        self._ended = threading.Event()

    def _remind(self, rec: SuspensionRecord, ended: threading.Event) -> None:
        while not ended.wait(self.remind_every):
            away = ""
            if rec.why == "IOC disconnected" and self.disconnected is not None:
                pvs = sorted(self.disconnected.disconnected)
                if pvs:
                    more = f" and {len(pvs) - 3} more" if len(pvs) > 3 else ""
                    away = f"; away: {', '.join(pvs[:3])}{more}"
            logger.warning(
                "still suspended after %.0f min: %s (since cell time %s s)%s",
                (time.time() - rec.started) / 60.0,
                rec.why,
                rec.cell_started,
                away,
            )

    def _cell_time(self) -> float | None:
        clock = self.station.clock
        try:
            if clock.time.connected:
                return float(clock.time.get())
            last = getattr(clock.time, "_readback", None)  # the last value it published
            return None if last is None else float(last)
        except Exception:
            return None

    def begin(self, why: str):
        """A suspender's pre-plan: record the start; the waits in progress are dropped."""
        run = None
        bundlers = getattr(self.RE, "_run_bundlers", {})
        if bundlers:  # keyed by run key (None by default): the run's start uid
            run = getattr(next(iter(bundlers.values())), "_run_start_uid", None) or ""
        rec = SuspensionRecord(
            why=why, started=time.time(), cell_started=self._cell_time(), run=run
        )
        self.records.append(rec)
        common.abandon_pending_completions()
        logger.warning("suspended: %s (cell time %s s)", why, rec.cell_started)
        self._ended.set()  # the reminders of an earlier suspension, if any
        self._ended = ended = threading.Event()
        threading.Thread(
            target=self._remind, args=(rec, ended), name="suspension-reminder", daemon=True
        ).start()
        yield from bps.null()

    def end(self):
        """A suspender's post-plan: record the end, and an event in the open run."""
        rec = next((r for r in reversed(self.records) if r.ended is None), None)
        if rec is None:
            return
        self._ended.set()
        rec.ended = time.time()
        rec.cell_ended = self._cell_time()
        logger.warning(
            "resumed after %.1f s (%s); cell time %s -> %s s",
            rec.duration_s,
            rec.why,
            rec.cell_started,
            rec.cell_ended,
        )
        if rec.run is None or not getattr(self.RE, "_run_bundlers", None):
            return
        d = self._device
        d.why.put(rec.why)
        d.started.put(rec.started)
        d.duration_s.put(rec.duration_s)
        d.cell_started.put(rec.cell_started if rec.cell_started is not None else float("nan"))
        d.cell_ended.put(rec.cell_ended if rec.cell_ended is not None else float("nan"))
        yield from bps.create(name=SUSPENSIONS_STREAM)
        yield from bps.read(d)
        yield from bps.save()
        yield Msg("checkpoint")  # a later rewind must not replay this event


class _Retrying:
    """A suspender that tries again when the RunEngine's loop was too busy to take
    its trip (bluesky gives it 0.1 s), instead of losing the suspension."""

    def __call__(self, value, **kwargs):
        try:
            super().__call__(value, **kwargs)
        except RuntimeError:
            threading.Timer(0.2, self._retry).start()

    def _retry(self):
        if self.RE is not None:
            self(self._sig.get())


class _Floor(_Retrying, SuspendFloor):
    pass


class _BoolHigh(_Retrying, SuspendBoolHigh):
    pass


def _checkpoint_with_every_save(RE) -> None:
    """The ``save`` command checkpoints as soon as the event is out, in the same
    step of the RunEngine (a suspension requested meanwhile cannot slip in
    between, as it could before a separate ``checkpoint`` message): a rewind
    never replays an event already emitted."""
    from bluesky.utils import IllegalMessageSequence

    save = RE._command_registry["save"]
    checkpoint = RE._command_registry["checkpoint"]
    if getattr(save, "checkpoints", False):
        return

    async def save_and_checkpoint(msg):
        ret = await save(msg)
        try:
            await checkpoint(Msg("checkpoint"))
        except IllegalMessageSequence:  # another run is bundling: no checkpoint now
            pass
        return ret

    save_and_checkpoint.checkpoints = True
    RE.register_command("save", save_and_checkpoint)


def checkpoint_after_save(plan):
    """A checkpoint after every saved event: a rewind (pause, suspension) then
    never replays an event already emitted, so nothing is duplicated."""

    def after_save(msg):
        if msg.command != "save":
            return None, None

        def saved():
            ret = yield msg
            yield Msg("checkpoint")
            return ret

        return saved(), None

    return (yield from plan_mutator(plan, after_save))


def _virtual(station) -> bool:
    try:
        return bool(int(station.clock.virtual.get()))
    except Exception:
        return False


def _let_clock_run_while_suspended(RE, clock) -> None:
    """Virtual time: the RunEngine waiting out a suspension (``wait_for``) waits
    out a condition (``clock:waiting`` 2): the clock may advance meanwhile, to
    the station's own operations too (a refill arrives)."""
    from .session import tell_waiting

    wait_for = RE._command_registry["wait_for"]

    async def wait_for_on_hardware(msg):
        tell_waiting(clock, 2)
        try:
            return await wait_for(msg)
        finally:
            tell_waiting(clock, 0)

    RE.register_command("wait_for", wait_for_on_hardware)


def _looks_like_an_outage(err: BaseException) -> bool:
    """Whether ``err`` is how a lost Channel Access connection shows in a read or
    a put (a closed socket, a timeout, ophyd's disconnection)."""
    from ophyd.utils.errors import DisconnectedError

    return isinstance(err, (ConnectionError, TimeoutError, DisconnectedError))


#: wall seconds after the station came back during which a wait that fails
#: with a connection's error is taken for a completion lost to the outage
OUTAGE_AFTERMATH_S = 60.0


def _lost_to_an_outage(err: BaseException) -> bool:
    """Whether ``err`` or what caused it (a failed status carries its cause)
    looks like a lost connection or a lost completion."""
    seen = set()
    while err is not None and id(err) not in seen:
        if _looks_like_an_outage(err):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


#: messages that move nothing: tried again while a connection error may pass
RETRIED_COMMANDS = ("read", "describe", "read_configuration", "describe_configuration")
#: wall s between two tries of such a message
READ_RETRY_S = 0.5


def _outages_suspend(
    RE, sus, *, grace: float = 30.0, aftermath: float = OUTAGE_AFTERMATH_S, replay=None
) -> None:
    """A message that fails because the IOC went away (a read, a put, a trigger)
    waits for the suspension the connection suspender is about to request,
    instead of failing the plan: the RunEngine then rewinds and replays it once
    the IOC is back. Without a suspension within ``grace`` s, the error stands.

    A status the plan waits on that fails with a connection's error after the
    station went away, or less than ``aftermath`` s after it came back, is an
    outage's, not the plan's: dropped if a suspension rewound the plan since
    (the thread of a setting whose completion the restart lost ends later), or,
    when nothing else would suspend (the client dropped a put completion in the
    reconnection), it requests a suspension that ends at once (``replay()``
    gives its pre- and post-plan): the RunEngine rewinds to the last checkpoint
    and replays what the outage broke. bluesky pardons a failed status only once
    the plan has ended, so without this such a late failure fails the replay.
    """
    import asyncio

    def wrap(command):
        async def outage_aware(msg):
            try:
                return await command(msg)
            except Exception as first:  # noqa: BLE001 - decided below
                err = first
            # An error of the connection itself (a broken pipe, a timeout)
            # may come well before the client notices the disconnection on a
            # loaded machine: wait the whole grace for it. Another error
            # stands at once unless the station is already marked away. A
            # read (nothing moves) is tried again meanwhile: a channel may be
            # the last to reconnect after the station is marked back.
            outage = _looks_like_an_outage(err)
            again = outage and getattr(msg, "command", None) in RETRIED_COMMANDS
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if sus.disconnected is not None and sus.disconnected.get():
                    # the suspension cancels this task: the message is replayed
                    await asyncio.sleep(0.1)
                    continue
                await asyncio.sleep(READ_RETRY_S if again else 0.1)
                if again:
                    try:
                        return await command(msg)
                    except Exception as later:
                        if not _looks_like_an_outage(later):
                            raise
                        err = later
                    continue
                if not outage and (sus.disconnected is None or not sus.disconnected.get()):
                    break
            raise err

        return outage_aware

    began = {}  # id(status) -> (outages, suspensions) when the plan began to wait on it
    add_status = RE._add_status_to_group
    completed = RE._status_object_completed

    def add_status_to_group(obj, status_object, group, action):
        flag = sus.disconnected
        began[id(status_object)] = (getattr(flag, "outages", 0), len(sus.records))
        return add_status(obj, status_object, group, action)

    def status_object_completed(ret, fut, pardon_failures):
        flag = sus.disconnected
        # a status not seen at its start: counted from now (only the aftermath applies)
        outages, suspensions = began.pop(id(ret), (getattr(flag, "outages", 0), len(sus.records)))
        if ret.success or pardon_failures.is_set() or flag is None:
            return completed(ret, fut, pardon_failures)
        try:
            err = ret.exception(timeout=0)
        except Exception as e:  # noqa: BLE001
            err = e
        if not _lost_to_an_outage(err) or not flag.away_since(outages, within=aftermath):
            return completed(ret, fut, pardon_failures)
        # Lost to an outage: the RunEngine replays it from the last checkpoint.
        if len(sus.records) > suspensions:
            logger.info("dropped, replayed since: %s", err)  # a rewind already did
            return None
        if not flag.get():  # the station is back: no suspender will trip for it
            if not RE.resumable:  # no checkpoint to replay from: the error stands
                return completed(ret, fut, pardon_failures)
            logger.warning("%s, after an IOC outage: replaying from the last checkpoint", err)

            async def at_once():
                return None

            RE.request_suspend(
                at_once,
                justification="a completion lost to an IOC outage",
                **(replay() if replay is not None else {}),
            )

        def unless_replayed():
            if len(sus.records) == suspensions:  # no suspension came: the error stands
                completed(ret, fut, pardon_failures)

        RE.loop.call_later(grace, unless_replayed)
        return None

    RE._add_status_to_group = add_status_to_group
    RE._status_object_completed = status_object_completed

    for name in ("read", "locate", "set", "trigger"):
        command = RE._command_registry.get(name)
        if command is not None:
            RE.register_command(name, wrap(command))


def _resynchronize(station):
    """After the IOC came back: on virtual time, tell it again that it is synchronized."""
    clock = station.clock
    if _virtual(station):
        yield from bps.mv(clock.sync, 1)
    else:
        yield from bps.null()


def _restore_states(station):
    """Before the rewound plan goes on: the source and the shutter back in the state
    the plan last asked for (the RunEngine stopped them when it suspended)."""
    args = []
    for dev in station.devices().values():
        if isinstance(dev, common.TwoStateDevice) and dev.requested is not None:
            args += [dev, dev.requested]
    if args:
        yield from bps.mv(*args)
    else:
        yield from bps.null()


def install_suspenders(
    RE,
    station,
    *,
    connection_sleep: float = 1.0,
    beam_sleep: float = 0.0,
    remind_every: float = REMIND_EVERY_S,
) -> Suspensions:
    """Install the station's suspenders on ``RE`` (see the module docstring).

    ``station`` is an ``XCTStation`` or a ``SaxsStation``. Returns the
    :class:`Suspensions` (its ``records`` list every suspension; a warning is
    logged every ``remind_every`` wall s while one lasts). Also adds the
    :func:`checkpoint_after_save` preprocessor.
    """
    sus = Suspensions(RE=RE, station=station, remind_every=remind_every)

    def around(why):
        return dict(
            pre_plan=lambda: sus.begin(why),
            post_plan=lambda: _chain(_restore_states(station), sus.end()),
        )

    installed: list[SuspenderBase] = []
    ring = getattr(station, "ring", None)
    if ring is not None:
        nominal = float(getattr(ring, "nominal_ma", 310.0))
        installed.append(
            _Floor(
                ring.current,
                0.5 * nominal,
                resume_thresh=0.9 * nominal,
                sleep=beam_sleep,
                tripped_message="beam dump: ring current below half its nominal value",
                **around("beam dump"),
            )
        )
    source = getattr(station, "source", None)
    if source is not None and hasattr(source, "fault"):
        installed.append(
            _BoolHigh(
                source.fault,
                tripped_message="X-ray source interlock tripped (reset it to resume)",
                **around("source fault"),
            )
        )

    def after_outage(why):  # the IOC is back: resynchronized, states restored
        return dict(
            pre_plan=lambda: sus.begin(why),
            post_plan=lambda: _chain(_resynchronize(station), _restore_states(station), sus.end()),
        )

    sus.disconnected = StationDisconnected(station)
    conn = _BoolHigh(
        sus.disconnected,
        sleep=connection_sleep,
        tripped_message="station IOC disconnected",
        **after_outage("IOC disconnected"),
    )
    installed.append(conn)
    for s in installed:
        RE.install_suspender(s)
    sus.suspenders = installed
    prefix = station.clock.prefix[: -len("clock:")]
    common.SUSPENDER_GUARDED_PREFIXES.add(prefix)
    _checkpoint_with_every_save(RE)
    if _virtual(station):
        _let_clock_run_while_suspended(RE, station.clock)
    _outages_suspend(RE, sus, replay=lambda: after_outage("completion lost to an IOC outage"))
    return sus


def _chain(*plans):
    for p in plans:
        yield from p
