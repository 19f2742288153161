"""Autosave/restore of the station simulators (in-process: nothing served)."""

from __future__ import annotations

import pickle

from operando.iocs.autosave import default_autosave_path, read_state
from operando.iocs.saxs import SaxsStation
from operando.iocs.xct import XCTStation


def test_xct_state_round_trip(tmp_path):
    path = default_autosave_path(tmp_path, "T1:")
    assert path.name == "autosave-T1.pkl"
    a = XCTStation(prefix="T1:", time_scale="virtual", data_dir=tmp_path, autosave=path)
    a.simclock.restart(1234.5)
    a.cell.advance(1234.5, 2.5e-6)
    a.pstat.technique = {"mode": "CC", "current": 2.5e-6, "t0": 1000.0, "t_end": 4600.0}
    a.stage.th.defaults["position"] = 0.0
    a.stage.th._target = 0.0
    a.src._wanted = True
    a.autosave.save()
    assert path.is_file() and not path.with_name(path.name + ".tmp").exists()
    b = XCTStation(
        prefix="T1:", time_scale="virtual", data_dir=tmp_path, autosave=path, restore=True
    )
    assert b.restored is not None
    assert b.simclock.now() == 1234.5
    assert b.cell.t == a.cell.t and b.cell.force_n == a.cell.force_n
    assert b.pstat.technique["t_end"] == 4600.0 and not b.pstat._ended.is_set()
    assert b.src._wanted
    fresh = XCTStation(prefix="T1:", time_scale="virtual", data_dir=tmp_path, autosave=path)
    assert fresh.restored is None and fresh.simclock.now() == 0.0


def test_saxs_ring_and_cell_round_trip(tmp_path):
    path = tmp_path / "auto.pkl"
    a = SaxsStation(
        prefix="S1:",
        time_scale="virtual",
        data_dir=tmp_path,
        autosave=path,
        beam_dumps=(100.0, 200.0),
    )
    a.simclock.restart(150.0)
    a.cell.advance(150.0, 1e-4)  # discharging
    a.ring.beam_on = False
    a.ring.refill_at = 750.0
    a.beam_dumps.pop(0)
    a.sample.slot = "empty_cell"
    a.autosave.save()
    b = SaxsStation(
        prefix="S1:",
        time_scale="virtual",
        data_dir=tmp_path,
        autosave=path,
        restore=True,
        beam_dumps=(100.0, 200.0),
    )
    assert b.simclock.now() == 150.0
    assert not b.ring.beam_on and b.ring.refill_at == 750.0
    assert b.beam_dumps == [200.0]
    assert b.sample.slot == "empty_cell"
    assert b.cell.time == a.cell.time == 150.0
    assert b.cell.capacity_mah == a.cell.capacity_mah > 0


def test_unreadable_or_foreign_file_starts_fresh(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    assert read_state(bad) is None
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"version": -1}))
    assert read_state(other) is None
    assert read_state(tmp_path / "missing.pkl") is None
