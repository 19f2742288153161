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


def test_another_error_of_a_connected_station_stands_at_once():
    assert _outcome(ValueError("bad value"), noticed_after=0) == "ValueError"
