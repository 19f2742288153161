"""Pure logic of operando.shutdown (ledger, summary, exit codes, signals taken by
other threads), of telling a vanished clock, and of iocs/access.py
(PV groups, rights per user and host); the real processes: tests/integration."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from caproto import AccessRights

from operando import shutdown
from operando.iocs import access


def test_exit_codes():
    assert shutdown.exit_code(signal.SIGINT) == 130
    assert shutdown.exit_code(signal.SIGTERM) == 143


def test_ledger_and_summary():
    ledger = shutdown.RunLedger()
    ledger("start", {"uid": "u1", "experiment_id": "xct-1", "step": "scan3d", "cycle": 1})
    ledger("stop", {"run_start": "u1", "exit_status": "success"})
    ledger("start", {"uid": "u2", "experiment_id": "xct-1", "step": "plating", "cycle": 1})
    ledger("stop", {"run_start": "u2", "exit_status": "abort", "reason": "SIGTERM received"})
    stop = shutdown.Interrupted(signal.SIGTERM, ledger=ledger, data_dir=Path("/d"))
    assert stop.exit_code == 143 and stop.experiment_id == "xct-1"
    text = shutdown.summary(stop, command="operando run xct")
    assert "SIGTERM" in text and "2 of 2" in text
    assert "u1 (scan3d, cycle 1: success)" in text and "u2 (plating, cycle 1: abort)" in text
    assert "operando run xct --resume xct-1" in text and "/d" in text


def test_summary_without_runs():
    text = shutdown.summary(shutdown.Interrupted(signal.SIGINT, experiment_id="e"))
    assert "nothing was recorded" in text and "--resume" not in text


def test_open_run_is_reported_open():
    ledger = shutdown.RunLedger()
    ledger("start", {"uid": "u1", "plan_name": "count"})
    text = shutdown.summary(shutdown.Interrupted(signal.SIGINT, ledger=ledger))
    assert "0 of 1" in text and "left open" in text


def _handled_before_the_wait_ended(during_task) -> bool:
    """SIGUSR1 taken by a helper thread while the main thread waits in ``block``;
    whether its Python handler ran before a timer ended the wait (3 s later)."""
    finished = threading.Event()
    seen = {}

    def handler(signum, frame):
        seen.setdefault("by_handler", not finished.is_set())
        finished.set()

    def take_it():  # the signal goes to this thread, not to the main one
        time.sleep(0.5)  # the main thread is in ``block`` by then
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(3.0, finished.set)
    try:
        timer.start()
        threading.Thread(target=take_it).start()
        during_task.block(finished)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    return seen.get("by_handler", False)


def test_a_signal_another_thread_took_is_handled_while_the_plan_runs():
    assert _handled_before_the_wait_ended(shutdown.PollingDuringTask())


def test_an_untimed_wait_would_handle_it_only_at_the_end():
    """Why PollingDuringTask: bluesky's default wait sleeps through the signal."""
    from bluesky.utils import DefaultDuringTask

    assert not _handled_before_the_wait_ended(DefaultDuringTask())


def test_pv_groups():
    assert access.classify("clock:hold") == access.SIMULATOR
    assert access.classify("clock:waiting") == access.SIMULATOR
    assert access.classify("fault:stall") == access.SIMULATOR
    assert access.classify("det:fault:drop") == access.SIMULATOR
    assert access.classify("clock:wait") == access.OPERATE
    assert access.classify("stage:th") == access.OPERATE
    assert access.classify("stage:th.HLM") == access.OPERATE  # clipped, not refused
    assert access.classify("stage:th.VMAX") == access.HARD


def test_rights():
    rw = AccessRights.READ | AccessRights.WRITE
    policy = access.AccessPolicy(owner="op", writers=frozenset({"alice"}))
    assert policy.rights(access.OPERATE, "h", "op") == rw
    assert policy.rights(access.OPERATE, "h", "alice") == rw
    assert policy.rights(access.OPERATE, "h", "mallory") == AccessRights.READ
    assert policy.rights(access.SIMULATOR, "h", "op") == rw
    assert policy.rights(access.SIMULATOR, "h", "alice") == AccessRights.READ
    assert policy.rights(access.HARD, "h", "op") == AccessRights.READ
    anyone = access.AccessPolicy(owner="op", writers=frozenset({"*"}))
    assert anyone.rights(access.OPERATE, "h", "mallory") == rw
    assert anyone.rights(access.SIMULATOR, "h", "mallory") == AccessRights.READ
    hosts = access.AccessPolicy(owner="op", hosts=frozenset({"ws1"}))
    assert hosts.rights(access.OPERATE, "ws1", "op") == rw
    assert hosts.rights(access.OPERATE, "ws2", "op") == AccessRights.READ


class _Waiting:
    """``clock.waiting`` of an IOC that has just been killed: still marked
    connected, its socket already closed."""

    connected = True

    def put(self, value, wait=False):
        raise BrokenPipeError(32, "Broken pipe")


class _Clock:
    waiting = _Waiting()


def test_telling_a_vanished_clock_does_not_fail_the_wait():
    from operando.session import tell_waiting

    tell_waiting(_Clock(), 1)  # no BrokenPipeError out of the RunEngine's wait
