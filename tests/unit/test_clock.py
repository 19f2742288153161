"""The simulators' clocks as pure logic: scaled time's parsing, virtual time's scheduler."""

from __future__ import annotations

import asyncio
import math

import pytest

from operando.iocs.clock import VIRTUAL, SimClock, VirtualClock, make_clock, parse_time_scale
from operando.iocs.pvs import keyed_normal


def run(coro, timeout=5.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.mark.parametrize(
    "text, expected", [("virtual", VIRTUAL), ("MAX", VIRTUAL), ("300", 300.0), (1, 1.0)]
)
def test_parse_time_scale(text, expected):
    assert parse_time_scale(text) == expected


@pytest.mark.parametrize("bad", ["0", "-2", "nan", "inf", "fast", None])
def test_parse_time_scale_refuses(bad):
    with pytest.raises(ValueError, match="time scale"):
        parse_time_scale(bad)


def test_make_clock():
    assert isinstance(make_clock("virtual"), VirtualClock)
    clock = make_clock(20)
    assert type(clock) is SimClock and clock.scale == 20.0
    assert make_clock("virtual", hold=True).held


def test_virtual_clock_jumps_to_each_pending_end_in_order():
    async def main():
        clock = VirtualClock()
        ends = []

        async def op(t):
            ends.append((t, await clock.sleep_until(t)))

        await asyncio.gather(op(30.0), op(10.0), op(20.0))
        return clock, ends

    clock, ends = run(main())
    assert sorted(ends) == [(10.0, 10.0), (20.0, 20.0), (30.0, 30.0)]
    assert [t for t, _ in ends] == [10.0, 20.0, 30.0]  # woken in cell-time order
    assert clock.now() == 30.0


def test_virtual_clock_stands_still_with_nothing_pending():
    async def main():
        clock = VirtualClock()
        await clock.sleep(5.0)
        await asyncio.sleep(0.05)  # wall time passes; cell time does not
        return clock.now(), await clock.sleep_until(1.0)

    assert run(main()) == (5.0, 5.0)


def test_virtual_clock_stops_at_model_events_and_runs_hooks_there():
    async def main():
        clock = VirtualClock()
        events = [7.0, 12.0]
        seen = []

        async def hook(t):
            seen.append(t)
            while events and events[0] <= t:  # the model handles its due events
                events.pop(0)

        clock.add_event_source(lambda: events[0] if events else math.inf)
        clock.add_step_hook(hook)
        await clock.sleep_until(10.0)
        return seen, events

    seen, events = run(main())
    assert seen == [7.0, 10.0]  # the event inside the interval, at its own time
    assert events == [12.0]


def test_virtual_clock_hold_and_sync_gate_advances():
    async def main():
        clock = VirtualClock(hold=True)
        task = asyncio.ensure_future(clock.sleep_until(50.0))
        await asyncio.sleep(0.02)
        held_at = clock.now()
        clock.set_sync(True)
        clock.release()
        await asyncio.sleep(0.02)
        unsynced = clock.now()  # released, but the client does not wait yet
        clock.set_waiting(True)
        await task
        return held_at, unsynced, clock.now()

    assert run(main()) == (0.0, 0.0, 50.0)


def test_background_operation_never_drives_a_client_waiting_on_its_own():
    """The ring's refill (a background operation) is not a reason to advance
    while the client waits on its exposure: once the exposure has ended the
    clock stands still, however late the client says it no longer waits; it
    is woken on the way to a later client operation, and drives the clock
    itself only while the client waits out a condition (waiting 2)."""

    async def main():
        clock = VirtualClock()
        clock.set_sync(True)
        refill = asyncio.ensure_future(clock.sleep_until(600.0, background=True))
        clock.set_waiting(1)
        exposure = await clock.sleep_until(1.0)
        for _ in range(5 * clock.settle_turns):  # the client is slow to say it is done
            await asyncio.sleep(0)
        after_exposure = clock.now()
        refill_done_early = refill.done()
        long_wait = await clock.sleep_until(3600.0)  # passes the refill on its way
        refill_at = refill.result()
        refill2 = asyncio.ensure_future(clock.sleep_until(4200.0, background=True))
        for _ in range(5 * clock.settle_turns):
            await asyncio.sleep(0)
        still = clock.now()
        clock.set_waiting(2)  # suspended until the beam is back
        await refill2
        return exposure, after_exposure, refill_done_early, long_wait, refill_at, still, clock.now()

    assert run(main()) == (1.0, 1.0, False, 3600.0, 600.0, 3600.0, 4200.0)


def test_virtual_clock_drops_cancelled_waits():
    async def main():
        clock = VirtualClock()
        stop = asyncio.Event()

        async def stopper():
            await asyncio.sleep(0)
            stop.set()

        clock.hold()
        asyncio.ensure_future(stopper())
        stopped = await clock.sleep_until_or(1000.0, stop)
        clock.release()
        await asyncio.sleep(0.02)
        return stopped, clock.now(), clock.pending

    assert run(main()) == (True, 0.0, 0)


def test_virtual_clock_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        run(VirtualClock().sleep_until(float("nan")))


def test_keyed_noise_is_a_function_of_cell_time():
    a = [keyed_normal(0, 2, t, 1.0) for t in (0.0, 1.5, 3600.25)]
    assert a == [keyed_normal(0, 2, t, 1.0) for t in (0.0, 1.5, 3600.25)]
    assert len(set(a)) == 3
    assert keyed_normal(1, 2, 1.5, 1.0) != a[1]  # the seed matters
    draws = [keyed_normal(0, 2, 0.001 * k, 0.5) for k in range(4000)]
    mean = sum(draws) / len(draws)
    rms = math.sqrt(sum(d * d for d in draws) / len(draws))
    assert abs(mean) < 0.05 and rms == pytest.approx(0.5, rel=0.05)
