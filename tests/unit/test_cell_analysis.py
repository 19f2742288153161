"""Electrochemistry/mechanics helpers against the paper's numbers and a synthetic
cycling record made here (no simulator involved)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from operando.callbacks.xct.science import cell


def test_pressure_on_the_electrode():
    assert cell.pressure_mpa(22.0, 4.0) == pytest.approx(1.75, abs=0.01)
    assert cell.pressure_mpa(19.6, 4.0) == pytest.approx(1.56, abs=0.01)
    assert cell.pressure_mpa(19.9, 4.0) == pytest.approx(1.58, abs=0.01)
    assert cell.pressure_mpa(19.9, 5.0) <= 1.02  # "≤ 1 MPa" with the crept ø5 mm
    assert cell.pressure_mpa(500.0, 6.0) > 17.0
    np.testing.assert_allclose(
        cell.pressure_mpa(np.array([22.0, 44.0]), 4.0), [1.7507, 3.5014], rtol=1e-3
    )
    with pytest.raises(ValueError):
        cell.pressure_mpa(1.0, 0.0)


def test_faraday_thickness():
    assert cell.faraday_thickness_um(40.0, 6.0) == pytest.approx(1.16, rel=0.01)
    assert cell.faraday_thickness_um(160.0, 6.0) == pytest.approx(4.65, rel=0.01)
    # the same from a charge on an electrode: 40 µA/cm² on ø4 mm for 6 h
    area = cell.electrode_area_cm2(4.0)
    q = 40e-6 * area * 6 * 3600
    assert cell.plated_thickness_um(q, area) == pytest.approx(1.16, rel=0.01)
    # h = Q M / (z F rho A) exactly
    assert cell.plated_thickness_um(96485.33212, 1.0) == pytest.approx(6.94 / 0.534 * 1e4)


def test_plated_thickness_series_integrates_the_current():
    t = np.linspace(0, 6 * 3600, 361)
    area = cell.electrode_area_cm2(4.0)
    i = np.full_like(t, 40e-6 * area)
    h = cell.plated_thickness_series(t, i, area)
    assert h[0] == 0.0
    assert h[-1] == pytest.approx(cell.faraday_thickness_um(40.0, 6.0), rel=1e-9)


def test_spring_and_contact_area():
    assert cell.height_change_um(0.3) == pytest.approx(4.12, abs=0.01)
    assert cell.height_change_um(0.3, 72.78) == pytest.approx(0.3 / 72.78 * 1000)
    h = cell.height_change_um(0.3)
    plated = cell.faraday_thickness_um(40.0, 6.0)
    assert cell.contact_area_loss(h, plated) == pytest.approx(1 - plated / h)
    assert 0.70 < cell.contact_area_loss(h, plated) < 0.73
    assert cell.contact_area_loss(h, plated, whole_factor=True) == pytest.approx(0.75)
    assert cell.contact_area_loss(1.0, plated) == 0.0


def _record(rng, *, n_cycles=11, dt=60.0, short_at=None):
    """Force, potential and current of unidirectional plating cycles.

    9 h cycles: 3 h OCV then 6 h constant current. Current density 2, 20, then
    40 µA/cm². Potential: polarization rising then flattening, spikes every
    30 min (reference images), noise. Force: creep from 22 N towards 19.6 N,
    a bump during each plating, the last complete cycle's bump the highest.
    """
    t = np.arange(0.0, n_cycles * 9 * 3600.0, dt)
    area = cell.electrode_area_cm2(4.0)
    current = np.zeros_like(t)
    potential = 0.001 * rng.standard_normal(t.size)
    force = 19.6 + 2.4 * np.exp(-t / (20 * 3600.0)) + 0.005 * rng.standard_normal(t.size)
    windows = []
    for c in range(n_cycles):
        t0 = c * 9 * 3600.0 + 3 * 3600.0
        t1 = t0 + 6 * 3600.0
        on = (t >= t0) & (t < t1)
        j = 2.0 if c == 0 else (20.0 if c < 3 else 40.0)
        current[on] = j * 1e-6 * area
        tau = (t[on] - t0) / 3600.0
        amp = 0.02 + 0.004 * j + (0.05 if c == n_cycles - 2 else 0.0)
        potential[on] += amp * (1 - np.exp(-tau / 0.5)) + 0.01 * tau / 6
        bump = 0.2 + (0.15 if c == n_cycles - 2 else 0.0)
        force[on] += bump * (1 - np.exp(-tau / 1.0))
        after = (t >= t1) & (t < t1 + 3 * 3600.0)
        force[after] += bump * np.exp(-(t[after] - t1) / 3600.0)
        windows.append((float(t[on][0]), float(t[on][-1])))
    spikes = (np.mod(t, 1800.0) < dt) & (current != 0)
    potential[spikes] += 0.15
    if short_at is not None:
        shorted = (t >= short_at) & (current != 0)
        potential[shorted] = 0.002 + 0.0005 * rng.standard_normal(shorted.sum())
    return t, force, potential, current, windows


def test_plating_windows_from_current():
    rng = np.random.default_rng(0)
    t, force, potential, current, windows = _record(rng, n_cycles=4)
    found = cell.plating_windows(t, current)
    assert len(found) == 4
    np.testing.assert_allclose(found, windows)


def test_short_located_within_one_sample():
    rng = np.random.default_rng(1)
    dt = 60.0
    short_at = 10 * 9 * 3600.0 + 3 * 3600.0 + 2.5 * 3600.0 + 17.0  # in the 11th cycle
    t, force, potential, current, windows = _record(rng, dt=dt, short_at=short_at)
    found = cell.locate_short(t, potential, current)
    assert found is not None
    assert abs(found - short_at) <= dt
    # no short, no detection (the spikes and the rise from OCV are not shorts)
    t, force, potential, current, _ = _record(rng, dt=dt)
    assert cell.locate_short(t, potential, current) is None


def test_peaks_of_the_cycle_before_the_short():
    rng = np.random.default_rng(2)
    short_at = 10 * 9 * 3600.0 + 3 * 3600.0 + 2.0 * 3600.0
    t, force, potential, current, windows = _record(rng, short_at=short_at)
    peaks = cell.cycle_peaks(t, force, potential, windows)
    assert len(peaks) == 11
    # the spikes (+0.15 V, single samples) do not make the potential peaks
    assert all(p["potential_peak"] < 0.25 for p in peaks)
    rises = [p["force_rise"] for p in peaks]
    assert all(r > 0.1 for r in rises[6:10])  # once the creep has settled (~60 h)
    summary = cell.failure_summary(t, force, potential, current)
    assert summary["short_cycle"] == 10
    assert abs(summary["t_short"] - short_at) <= 60.0
    prev = summary["previous"]
    assert prev["cycle"] == 9
    assert summary["previous_force_rise_is_highest"] and summary["previous_potential_is_highest"]
    assert prev["force_rise"] == pytest.approx(max(p["force_rise"] for p in peaks[:10]))
    assert (
        math.isfinite(prev["force_peak_time"])
        and windows[9][0] <= prev["force_peak_time"] <= windows[9][1]
    )
