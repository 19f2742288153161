"""Pure logic of pauses and resumes: charge left, superseded runs, incomplete runs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from operando.callbacks.core import run_problems
from operando.callbacks.xct.offline import superseded_runs
from operando.plans.resume import remaining_duration
from operando.plans.stubs import PauseRecord


def test_remaining_duration_is_the_charge_left_at_the_same_current():
    assert remaining_duration(6 * 3600, 1e-6, 0.0) == 6 * 3600
    assert remaining_duration(6 * 3600, 1e-6, 1e-6 * 3600) == pytest.approx(5 * 3600)
    assert remaining_duration(6 * 3600, -1e-6, -1e-6 * 3600) == pytest.approx(5 * 3600)
    assert remaining_duration(3600, 1e-6, 1.0) == 0.0
    assert remaining_duration(3600, 1e-6, math.nan) == 3600


def _run(uid, step, cycle, t, status=None):
    md = {"start": {"uid": uid, "step": step, "cycle": cycle, "time": t}}
    if status is not None:
        md["stop"] = {"exit_status": status, "reason": "r"}
    return uid, SimpleNamespace(metadata=md)


def test_superseded_runs_are_the_cut_steps_taken_again():
    runs = [
        _run("a", "scan3d", 1, 1.0, "success"),
        _run("b", "scan3d", 2, 2.0),  # dangling
        _run("c", "scan3d", 2, 3.0, "success"),
        _run("d", "plating", 2, 4.0, "abort"),  # never taken again
    ]
    assert superseded_runs(runs) == {"b": "c"}
    assert run_problems(runs[1][1].metadata)[0].startswith("no stop document")
    assert run_problems(runs[3][1].metadata) == ["exit_status 'abort': r"]
    assert run_problems(runs[0][1].metadata) == []


def test_pause_record_notes_only_while_a_run_is_open():
    clock = SimpleNamespace(time=SimpleNamespace(get=lambda **kw: 100.0))
    rec = PauseRecord(clock)
    rec.pause()
    assert rec.pauses == []
    rec.active = True
    rec.pause()
    rec.resume()
    (p,) = rec.pauses
    assert p["cell_start"] == p["cell_end"] == 100.0 and p["end"] >= p["start"]
    assert rec.summary().startswith("paused 1 time(s): 0.000 h of cell time")
