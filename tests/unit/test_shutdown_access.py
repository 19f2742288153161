"""Pure logic of operando.shutdown (ledger, summary, exit codes) and iocs/access.py
(PV groups, rights per user and host); the real processes: tests/integration."""

from __future__ import annotations

import signal
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
