"""The guard that ends every put completion: its deadline on virtual time (pure logic,
the clock and the signal replaced by soft ophyd signals)."""

from __future__ import annotations

import threading

import pytest
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import Status

from operando.devices import common
from operando.devices.common import CompletionLost


class FakeClock(Device):
    time = Cpt(Signal, value=0.0)
    virtual = Cpt(Signal, value=1)
    scale = Cpt(Signal, value=0.0)


class Command(Signal):
    pvname = "TEST:acquire"


@pytest.fixture
def clock():
    return FakeClock(name="clock")


def _guard(clock, expected=120.0):
    inner = Status()
    status = common._Guard.around(
        lambda: inner, Command(name="acquire"), expected=expected, clock=clock
    )
    (guard,) = [g for g in common._Guard.live if g.status is status]
    return inner, guard


def test_the_clock_is_watched_by_one_subscription_whatever_the_puts(clock):
    _guard(clock)
    _guard(clock)
    watch = clock._completion_watch
    assert watch.scale == 0.0
    assert len(clock.time._callbacks["value"]) == 1


def test_a_completion_late_on_the_wall_but_on_time_in_the_cell_is_not_lost(clock, monkeypatch):
    """The clock ran on past the deadline (a client whose waits do not gate it)
    before the completion of an exposure that ended on time came in."""
    monkeypatch.setattr(common, "CELL_DEADLINE_GRACE_S", 5.0)
    inner, guard = _guard(clock)  # started at 0, deadline 120 + 60
    clock.time.put(242.0)
    assert not guard.status.done
    inner.set_finished()
    guard.status.wait(1.0)
    assert guard.status.success


def test_a_completion_that_never_comes_fails_once_the_grace_is_over(clock, monkeypatch):
    monkeypatch.setattr(common, "CELL_DEADLINE_GRACE_S", 0.2)
    clock.time.put(10.0)
    inner, guard = _guard(clock, expected=30.0)
    clock.time.put(99.0)  # before its deadline (10 + 30 + 60): nothing happens
    assert guard._grace is None
    clock.time.put(101.0)
    done = threading.Event()
    guard.status.add_callback(lambda st: done.set())
    assert done.wait(5.0)
    with pytest.raises(CompletionLost, match=r"reached 101\.0 s, past its deadline 100\.0 s"):
        guard.status.wait(0)
    assert not clock._completion_watch._guards  # released
