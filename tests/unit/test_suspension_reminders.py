"""A suspension that goes on is reminded in the log (operando/suspenders.py),
until it ends; the pure logic, with stand-ins for the RunEngine and the station."""

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
