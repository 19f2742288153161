"""Stack location from transmission profiles (pure functions of plans.alignment)."""

import numpy as np
import pytest

from operando.plans.alignment import GridBounds, cathode_layer, segment_profile, window_extent


def _stack_profile(y):
    """steel | cathode 0..0.35 (T 0.35) | separator ..0.85 (0.16) | anode ..1.15 (1e-3) | steel."""
    t = np.zeros_like(y)
    t[(y >= 0) & (y < 0.35)] = 0.35
    t[(y >= 0.35) & (y < 0.85)] = 0.16
    t[(y >= 0.85) & (y < 1.15)] = 1e-3
    return t


def test_segments_and_cathode_found_within_one_step():
    y = np.linspace(-0.5, 1.5, 41)  # 0.05 mm steps
    rng = np.random.default_rng(1)
    t = _stack_profile(y) + rng.normal(0, 0.005, y.size)
    layers = segment_profile(y, t)
    levels = [round(s.level, 2) for s in layers]
    assert levels == [0.0, 0.35, 0.16, 0.0, 0.0] or levels == [0.0, 0.35, 0.16, 0.0]
    cathode = cathode_layer(layers)
    assert cathode.lo == pytest.approx(0.0, abs=0.05)
    assert cathode.hi == pytest.approx(0.35, abs=0.05)


def test_window_extent_of_the_cell_body():
    x = np.linspace(-4, 4, 33)  # 0.25 mm steps
    t = np.where(np.abs(x) <= 2.5, 0.3, 0.02)
    lo, hi = window_extent(x, t)
    assert lo == pytest.approx(-2.5, abs=0.25) and hi == pytest.approx(2.5, abs=0.25)


def test_grid_inset_half_a_step():
    b = GridBounds(x=(-2.5, 2.5), y=(0.0, 0.4))
    g = b.grid((4, 5))
    assert g["x_range"] == pytest.approx((-2.0, 2.0))
    assert g["y_range"] == pytest.approx((0.05, 0.35))
    # 5 points at 1 mm and 4 at 0.1 mm: the paper's grid.
    assert np.diff(np.linspace(*g["x_range"], 5)) == pytest.approx(1.0)
    assert np.diff(np.linspace(*g["y_range"], 4)) == pytest.approx(0.1)


def test_bad_profiles_are_rejected():
    with pytest.raises(ValueError):
        segment_profile([0, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        cathode_layer(segment_profile(np.arange(5.0), np.zeros(5)))
