"""Electrochemistry and mechanics of the pressurized cell: pure helpers.

Units are in the names: forces in N, lengths in mm or µm, current densities in
µA/cm², charges in C, times in the units of the series given (seconds for the
recorded streams), potentials in V. The spring and contact-area argument they
serve (Weckelmann et al. 2025, doi:10.1515/mim-2025-0010), with its numbers:
``docs/reduction-xct.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from operando.constants import FARADAY, HOUR, M_LI, RHO_LI, SPRING_K_N_PER_MM

__all__ = [
    "FARADAY",
    "M_LI",
    "RHO_LI",
    "SPRING_K_N_PER_MM",
    "electrode_area_cm2",
    "pressure_mpa",
    "plated_thickness_um",
    "faraday_thickness_um",
    "plated_thickness_series",
    "height_change_um",
    "contact_area_loss",
    "plating_windows",
    "locate_short",
    "cycle_peaks",
    "failure_summary",
]


def electrode_area_cm2(diameter_mm: float) -> float:
    """Area of a disc electrode of ``diameter_mm`` in cm²."""
    return math.pi * (0.1 * diameter_mm) ** 2 / 4.0


def pressure_mpa(force_n: Any, diameter_mm: float) -> Any:
    """Uniaxial pressure (MPa = N/mm²) of ``force_n`` on a disc of ``diameter_mm``.

    22 N on the ø4 mm electrode is 1.75 MPa; 19.9 N on the crept ø5 mm one ~1 MPa.
    """
    if diameter_mm <= 0:
        raise ValueError("diameter must be positive")
    out = np.asarray(force_n, dtype=float) / (math.pi * diameter_mm**2 / 4.0)
    return out if out.ndim else float(out)


def plated_thickness_um(
    charge_c: Any, area_cm2: float, *, molar_mass: float = M_LI, density: float = RHO_LI, z: int = 1
) -> Any:
    """Homogeneous Li thickness moved by ``charge_c``: h = Q·M / (z·F·ρ·A), in µm."""
    if area_cm2 <= 0:
        raise ValueError("area must be positive")
    h_um = np.asarray(charge_c, dtype=float) * molar_mass / (z * FARADAY * density * area_cm2) * 1e4
    return h_um if h_um.ndim else float(h_um)


def faraday_thickness_um(j_uA_cm2: Any, hours: Any, **kwargs: Any) -> Any:
    """Li thickness after ``hours`` at ``j_uA_cm2``: 40 µA/cm², 6 h → 1.16 µm."""
    charge_per_cm2 = (
        np.asarray(j_uA_cm2, dtype=float) * 1e-6 * np.asarray(hours, dtype=float) * HOUR
    )
    return plated_thickness_um(charge_per_cm2, 1.0, **kwargs)


def plated_thickness_series(
    times_s: Any, current_a: Any, area_cm2: float, **kwargs: Any
) -> np.ndarray:
    """Cumulative homogeneous plated thickness (µm) from a current series.

    The charge is the trapezoidal integral of ``current_a`` over ``times_s``
    (signed: the sign tells the plating direction).
    """
    t = np.asarray(times_s, dtype=float)
    i = np.asarray(current_a, dtype=float)
    q = np.concatenate([[0.0], np.cumsum(0.5 * (i[1:] + i[:-1]) * np.diff(t))])
    return plated_thickness_um(q, area_cm2, **kwargs)


def height_change_um(delta_force_n: Any, k_n_per_mm: float = SPRING_K_N_PER_MM) -> Any:
    """Stack height change that a spring force change means: 0.3 N → 4.12 µm."""
    out = np.asarray(delta_force_n, dtype=float) / k_n_per_mm * 1e3
    return out if np.ndim(out) else float(out)


def contact_area_loss(height_um: float, plated_um: float, *, whole_factor: bool = False) -> float:
    """Fraction of contact area lost if a height change comes from local plating.

    Plating only on a fraction ``a`` of the area raises the local current
    density by ``1/a`` and the local thickness to ``plated_um / a``; matching
    ``height_um`` gives ``a = plated_um / height_um`` and a loss ``1 - a``
    (4.12 µm vs 1.16 µm: 72 %). ``whole_factor=True`` follows the source paper, which
    rounds the current-density factor up to a whole number (4x → 75 %).
    Zero when the height change is within what homogeneous plating explains.
    """
    if plated_um <= 0:
        raise ValueError("plated thickness must be positive")
    factor = height_um / plated_um
    if factor <= 1.0:
        return 0.0
    if whole_factor:
        factor = math.ceil(factor - 1e-9)
    return 1.0 - 1.0 / factor


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the True runs of ``mask`` (stop exclusive)."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def _current_threshold(current: np.ndarray, threshold: float | None) -> float:
    if threshold is not None:
        return float(threshold)
    peak = float(np.nanmax(np.abs(current))) if current.size else 0.0
    return 0.01 * peak if peak > 0 else math.inf


def plating_windows(
    times: Any, current: Any, *, threshold: float | None = None, min_samples: int = 2
) -> list[tuple[float, float]]:
    """``(t_start, t_end)`` of each period with current on (|I| > ``threshold``).

    Default threshold: 1 % of the largest |I| (the protocol's current density
    steps 20x between cycle 1 and the last cycles).
    """
    t = np.asarray(times, dtype=float)
    i = np.asarray(current, dtype=float)
    on = np.abs(i) > _current_threshold(i, threshold)
    return [(float(t[a]), float(t[b - 1])) for a, b in _runs(on) if b - a >= min_samples]


def locate_short(
    times: Any,
    potential: Any,
    current: Any,
    *,
    drop_fraction: float = 0.25,
    reference_samples: int = 10,
    settle_samples: int = 3,
    persist_samples: int = 3,
    current_threshold: float | None = None,
) -> float | None:
    """Time of the short circuit: the potential collapses while current flows.

    Under constant current a symmetric Li cell holds a polarization of tens
    to hundreds of mV; a Li filament shorting the electrolyte drops it to
    the ohmic few mV. A sample is the short when, with current on, ``|E|``
    falls below ``drop_fraction`` of the median ``|E|`` of the
    ``reference_samples`` before it and stays there for ``persist_samples``
    samples (or to the end of the current step). Single-sample spikes (the
    reference-image moves) never qualify; the first ``settle_samples`` of
    each current step (the potential still rising from OCV) are skipped.

    Returns the time of the first low sample, or None.
    """
    t = np.asarray(times, dtype=float)
    e = np.abs(np.asarray(potential, dtype=float))
    i = np.asarray(current, dtype=float)
    if not (t.size == e.size == i.size):
        raise ValueError("times, potential and current differ in length")
    on = np.abs(i) > _current_threshold(i, current_threshold)
    for a, b in _runs(on):
        for k in range(a + max(settle_samples, 1), b):
            ref_lo = max(a + settle_samples, k - reference_samples)
            if k - ref_lo < 2:
                continue
            ref = float(np.median(e[ref_lo:k]))
            limit = drop_fraction * ref
            if e[k] >= limit:
                continue
            end = min(b, k + persist_samples)
            if np.all(e[k:end] < limit):
                return float(t[k])
    return None


def cycle_peaks(
    times: Any,
    force: Any,
    potential: Any,
    plating_windows: Sequence[tuple[float, float]],
    *,
    despike: int = 3,
) -> list[dict[str, float]]:
    """Force and potential peaks of each plating window.

    For each ``(t_start, t_end)``: the force at the start, its maximum in the
    window and when, the rise (max − start), and the maximum ``|E|`` and when.
    ``despike`` (samples) median-filters both series first, so that the
    potential spikes of the reference-image moves are not taken for peaks
    (1 disables).
    """
    t = np.asarray(times, dtype=float)
    f = np.asarray(force, dtype=float)
    e = np.abs(np.asarray(potential, dtype=float))
    if despike and despike > 1:
        f = ndi.median_filter(f, size=despike, mode="nearest")
        e = ndi.median_filter(e, size=despike, mode="nearest")
    out = []
    for n, (t0, t1) in enumerate(plating_windows):
        sel = np.flatnonzero((t >= t0) & (t <= t1))
        if sel.size == 0:
            out.append(
                {
                    "cycle": n,
                    "t_start": t0,
                    "t_end": t1,
                    "force_start": math.nan,
                    "force_peak": math.nan,
                    "force_peak_time": math.nan,
                    "force_rise": math.nan,
                    "potential_peak": math.nan,
                    "potential_peak_time": math.nan,
                }
            )
            continue
        kf = sel[np.argmax(f[sel])]
        ke = sel[np.argmax(e[sel])]
        out.append(
            {
                "cycle": n,
                "t_start": float(t0),
                "t_end": float(t1),
                "force_start": float(f[sel[0]]),
                "force_peak": float(f[kf]),
                "force_peak_time": float(t[kf]),
                "force_rise": float(f[kf] - f[sel[0]]),
                "potential_peak": float(e[ke]),
                "potential_peak_time": float(t[ke]),
            }
        )
    return out


def failure_summary(
    times: Any,
    force: Any,
    potential: Any,
    current: Any,
    *,
    windows: Sequence[tuple[float, float]] | None = None,
    **short_kwargs: Any,
) -> dict[str, Any]:
    """The short circuit and the peaks of the plating cycle before it.

    Returns ``t_short`` (None if no short), ``short_cycle`` (index of the
    plating window holding it), ``previous`` (:func:`cycle_peaks` entry of the
    window before), whether that cycle's force rise (peak minus the force at
    the start of plating: the absolute force of the first cycles is higher
    only because Li still creeps) and its potential peak are the highest of
    all cycles before the short, and ``cycles`` (all :func:`cycle_peaks`).
    """
    t = np.asarray(times, dtype=float)
    if windows is None:
        windows = plating_windows(t, current)
    t_short = locate_short(t, potential, current, **short_kwargs)
    peaks = cycle_peaks(t, force, potential, windows)
    result: dict[str, Any] = {
        "t_short": t_short,
        "short_cycle": None,
        "previous": None,
        "previous_force_rise_is_highest": None,
        "previous_potential_is_highest": None,
        "cycles": peaks,
    }
    if t_short is None:
        return result
    idx = next((n for n, (t0, t1) in enumerate(windows) if t0 <= t_short <= t1), None)
    if idx is None:  # between windows: the last one that started before
        idx = sum(1 for t0, _ in windows if t0 <= t_short)
    result["short_cycle"] = idx
    if idx >= 1:
        prev = peaks[idx - 1]
        before = peaks[:idx]
        result["previous"] = prev
        result["previous_force_rise_is_highest"] = bool(
            prev["force_rise"] >= max(p["force_rise"] for p in before)
        )
        result["previous_potential_is_highest"] = bool(
            prev["potential_peak"] >= max(p["potential_peak"] for p in before)
        )
    return result
