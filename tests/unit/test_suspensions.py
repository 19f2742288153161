"""The suspensions' pure logic (operando/suspenders.py), with stand-ins for the
RunEngine and the station: a suspension that goes on is reminded in the log
until it ends; a read that fails because the IOC has just died waits for the
suspension instead of failing the plan."""

from __future__ import annotations

import logging
import time

from operando.suspenders import Suspensions


class _Time:
    connected = True

    def get(self):
        return 3600.0


class _Clock:
    time = _Time()


class _Station:
    clock = _Clock()


class _Disconnected:
    disconnected = {"X:clock:time", "X:stage:th", "X:pstat:mode", "X:src:state"}


class _RE:
    _run_bundlers: dict = {}


def _reminders(caplog):
    return [r for r in caplog.records if r.getMessage().startswith("still suspended")]


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.01)
    return predicate()


def test_a_long_suspension_is_reminded_until_it_ends(caplog):
    caplog.set_level(logging.WARNING, logger="operando.suspenders")
    sus = Suspensions(RE=_RE(), station=_Station(), remind_every=0.05)
    sus.disconnected = _Disconnected()
    list(sus.begin("IOC disconnected"))
    assert _wait_for(lambda: len(_reminders(caplog)) >= 2)
    text = _reminders(caplog)[0].getMessage()
    assert "IOC disconnected" in text and "since cell time 3600.0 s" in text
    assert "away: X:clock:time, X:pstat:mode, X:src:state and 1 more" in text
    list(sus.end())
    assert sus.records[0].ended is not None
    n = len(_reminders(caplog))
    time.sleep(0.3)  # six intervals: none after the end (at most one already on its way)
    assert len(_reminders(caplog)) <= n + 1


def test_a_new_suspension_stops_the_reminders_of_the_last(caplog):
    caplog.set_level(logging.WARNING, logger="operando.suspenders")
    sus = Suspensions(RE=_RE(), station=_Station(), remind_every=0.05)
    list(sus.begin("beam dump"))
    list(sus.end())
    n = len(_reminders(caplog))  # any the beam dump had (one may be on its way)
    list(sus.begin("source fault"))
    assert _wait_for(lambda: len(_reminders(caplog)) >= n + 3)
    assert all("source fault" in r.getMessage() for r in _reminders(caplog)[n + 1 :])
    list(sus.end())


class _Registry:
    """The part of a RunEngine ``_outages_suspend`` wraps: its command registry."""

    def __init__(self, command):
        self._command_registry = {"read": command}

    def register_command(self, name, command):
        self._command_registry[name] = command

    def _add_status_to_group(self, obj, status_object, group, action):
        pass

    def _status_object_completed(self, ret, fut, pardon_failures):
        pass


class _Flag:
    """``StationDisconnected``, noticed ``after`` s after the error (0: never)."""

    def __init__(self, after):
        self.since = time.monotonic()
        self.after = after

    def get(self):
        return bool(self.after) and time.monotonic() - self.since > self.after


def _outcome(error, noticed_after):
    """What the wrapped ``read`` does within 1.5 s: raise (its error's name) or
    still wait for the suspension (``"waiting"``)."""
    import asyncio

    from operando.suspenders import _outages_suspend

    async def failing(msg):
        raise error

    async def main():
        registry = _Registry(failing)
        sus = Suspensions(RE=_RE(), station=_Station())
        sus.disconnected = _Flag(noticed_after)
        _outages_suspend(registry, sus, grace=30.0)
        try:
            await asyncio.wait_for(registry._command_registry["read"](None), 1.5)
        except TimeoutError:
            return "waiting"
        except Exception as err:  # noqa: BLE001
            return type(err).__name__

    return asyncio.run(main())


def test_a_broken_pipe_waits_for_the_disconnection_noticed_later():
    # the client notices the IOC's death 0.5 s after the read failed: the read
    # waits for the suspension (which replays it) instead of failing the plan
    assert _outcome(BrokenPipeError(32, "Broken pipe"), noticed_after=0.5) == "waiting"


def test_a_read_of_a_channel_still_reconnecting_is_tried_again():
    """The station is marked back (no suspension comes) but the channel read is
    among the last to reconnect: the read is tried again, not failed."""
    import asyncio

    from bluesky import Msg
    from ophyd.utils.errors import DisconnectedError

    from operando.suspenders import _outages_suspend

    tries = []

    async def reconnecting(msg):
        tries.append(msg.command)
        if len(tries) < 3:
            raise DisconnectedError("force_bridge is not connected")
        return {"force_bridge": {"value": 1.0}}

    async def main():
        registry = _Registry(reconnecting)
        sus = Suspensions(RE=_RE(), station=_Station())
        sus.disconnected = _Flag(0)  # never marked away
        _outages_suspend(registry, sus, grace=30.0)
        return await asyncio.wait_for(registry._command_registry["read"](Msg("read", None)), 10)

    assert asyncio.run(main()) == {"force_bridge": {"value": 1.0}}
    assert tries == ["read"] * 3


def test_another_error_of_a_connected_station_stands_at_once():
    assert _outcome(ValueError("bad value"), noticed_after=0) == "ValueError"


class _NoDevices:
    def devices(self):
        return {}


class _PV:
    def __init__(self, pvname):
        self.pvname = pvname


def test_the_station_flag_counts_outages_and_remembers_the_reconnection():
    from operando.suspenders import StationDisconnected

    flag = StationDisconnected(_NoDevices())
    pvs = [_PV("X:clock:time"), _PV("X:stage:th")]
    assert not flag.away_since(0, within=60.0)
    for pv in pvs:
        flag._on_meta(obj=pv, connected=False)
    assert flag.get() and flag.outages == 1
    flag._on_meta(obj=pvs[0], connected=True)
    assert flag.get() and flag.reconnected_at is None  # one PV still away
    flag._on_meta(obj=pvs[1], connected=True)
    assert not flag.get() and flag.outages == 1
    assert flag.away_since(1, within=60.0)  # came back a moment ago
    assert not flag.away_since(1, within=0.0)
    assert flag.away_since(0, within=0.0)  # went away since
    flag.destroy()


def _replayed_plan(outage: str | None, error: Exception, *, checkpoint: bool = True):
    """A real RunEngine with ``_outages_suspend`` runs a plan whose first set()
    fails with ``error``. ``outage``: None (the station stays connected),
    ``"in flight"`` (it went away and came back while the put was in flight, a
    moment; no suspender trips) or ``"suspended"`` (it goes away for 0.2 s, a
    connection suspender suspends and replays the set, which takes 1 s; the
    first set's failure comes 0.5 s after the station is back, during the
    replay). ``checkpoint``: the plan checkpoints before the set (False: it
    clears the checkpoint, and the RunEngine has nothing to replay from). Returns (the outcome, how many set()
    calls, the streams of the events, the suspensions recorded)."""
    import threading

    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp
    from bluesky import RunEngine
    from ophyd import Signal
    from ophyd.status import Status

    from operando.suspenders import StationDisconnected, _BoolHigh, _chain, _outages_suspend

    flag = StationDisconnected(_NoDevices())
    pv = _PV("X:det:cam1:NumImages")

    def later(delay, f):
        threading.Timer(delay, f).start()

    class Setting(Signal):
        calls = 0

        def set(self, value, **kwargs):
            Setting.calls += 1
            st = Status(obj=self)
            if Setting.calls > 1:
                self.put(value)
                later(1.0 if outage == "suspended" else 0.0, st.set_finished)
                return st
            fail_after = 0.05
            if outage == "in flight":
                flag._on_meta(obj=pv, connected=False)
                flag._on_meta(obj=pv, connected=True)
            elif outage == "suspended":
                flag._on_meta(obj=pv, connected=False)
                later(0.2, lambda: flag._on_meta(obj=pv, connected=True))
                fail_after = 0.7
            later(fail_after, lambda: st.set_exception(error))
            return st

    setting = Setting(name="num_images", value=0)
    RE = RunEngine({})
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    sus = Suspensions(RE=RE, station=_Station(), remind_every=600.0)
    sus.disconnected = flag

    def around(why):
        return dict(pre_plan=lambda: sus.begin(why), post_plan=lambda: _chain(sus.end()))

    if outage == "suspended":  # (a moment's outage in flight goes unnoticed)
        RE.install_suspender(_BoolHigh(flag, sleep=0.0, **around("IOC disconnected")))
    _outages_suspend(RE, sus, grace=5.0, replay=lambda: around("completion lost to an IOC outage"))

    @bpp.run_decorator()
    def plan():
        yield from (bps.checkpoint() if checkpoint else bps.clear_checkpoint())
        yield from bps.mv(setting, 5)
        yield from bps.trigger_and_read([setting])

    try:
        RE(plan())
        outcome = "completed"
    except Exception as err:  # noqa: BLE001
        outcome = type(err).__name__
    finally:
        flag.destroy()
    descriptors = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    streams = [descriptors[d["descriptor"]] for n, d in docs if n == "event"]
    return outcome, Setting.calls, streams, sus.records


def _lost():
    from operando.devices.common import CompletionLost

    return CompletionLost("X:det:cam1:NumImages: no put completion within 10 s")


def test_a_completion_lost_to_a_reconnection_is_replayed_from_the_checkpoint():
    outcome, calls, streams, records = _replayed_plan("in flight", _lost())
    assert outcome == "completed"
    assert calls == 2  # the set was replayed, once
    assert streams.count("primary") == 1
    assert streams.count("suspensions") == 1
    assert [r.why for r in records] == ["completion lost to an IOC outage"]
    assert records[0].ended is not None


def test_a_completion_lost_before_a_suspension_does_not_fail_the_replay():
    outcome, calls, streams, records = _replayed_plan("suspended", _lost())
    assert outcome == "completed"
    assert calls == 2
    assert streams.count("primary") == 1
    assert [r.why for r in records] == ["IOC disconnected"]


def test_a_lost_completion_without_an_outage_stands():
    outcome, calls, _, records = _replayed_plan(None, _lost())
    assert outcome == "FailedStatus" and calls == 1 and not records


def test_a_refusal_after_an_outage_stands():
    outcome, calls, _, records = _replayed_plan("in flight", ValueError("clipped"))
    assert outcome == "FailedStatus" and calls == 1 and not records


def test_a_lost_completion_with_nothing_to_replay_from_stands():
    outcome, calls, _, records = _replayed_plan("in flight", _lost(), checkpoint=False)
    assert outcome == "FailedStatus" and calls == 1 and not records
