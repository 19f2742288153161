"""The arrays only the figures read are kept on disk, exact, by a live reduction."""

from __future__ import annotations

import gc
import math
import stat
import weakref

import numpy as np
import pytest

from operando.callbacks.core.arrays import ArraysOnDisk
from operando.callbacks.xct.experiment import ExperimentState
from operando.callbacks.xct.model import PlatingResult, ScanResult


def _sections(rng):
    return {
        "xz": rng.random((40, 64), dtype=np.float32),
        "xz_mip": rng.random((40, 64), dtype=np.float32),
        "ncol": 64,
        "xy_hse_row": 17,
    }


def test_arrays_round_trip_exactly_and_other_values_stay(tmp_path):
    rng = np.random.default_rng(1)
    values = {**_sections(rng), "t": np.array([1.0, 2.5, math.nan])}
    kept = ArraysOnDisk(values, tmp_path / "arrays", "run/1: sections")
    assert list(kept) == list(values) and len(kept) == len(values)
    for key, value in values.items():
        got = kept[key]
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value)  # NaN included, bit for bit
        else:
            assert got == value
    assert kept.get("xy_lip") is None and "xy_lip" not in kept
    with pytest.raises(KeyError):
        kept["xy_lip"]
    assert kept.nbytes_in_memory() == 0
    files = sorted(p.name for p in (tmp_path / "arrays").iterdir())
    assert files == [
        "run_1__sections.t.npy",
        "run_1__sections.xz.npy",
        "run_1__sections.xz_mip.npy",
    ]
    assert stat.S_IMODE((tmp_path / "arrays").stat().st_mode) == 0o700
    kept.remove()
    assert not list((tmp_path / "arrays").iterdir())


def _cell(t0):
    t = t0 + np.array([0.0, 1800.0, 3600.0])
    return {
        "t": t,
        "force": np.full(3, 90.0),
        "ewe": np.full(3, 0.01),
        "current": np.full(3, 1e-5),
        "charge": np.array([0.0, 0.018, 0.036]),
        "elapsed": t - t0,
    }


def _scan(uid, sections):
    return ScanResult(
        uid=uid,
        experiment_id="e",
        step="scan3d",
        cycle=1,
        start={},
        stop={},
        detector={},
        pixel_um=10.0,
        n_projections=5,
        t_start=0.0,
        t_end=10.0,
        t_mid=5.0,
        sections=sections,
        cell=_cell(0.0),
    )


def _plating(uid, thumbnails):
    return PlatingResult(
        uid=uid,
        experiment_id="e",
        cycle=1,
        start={},
        stop={},
        detector={},
        pixel_um=10.0,
        current_density_uA_cm2=20.0,
        current_a=1e-5,
        electrode_diameter_mm=3.0,
        duration_s=3600.0,
        thumbnails=thumbnails,
        cell=_cell(20.0),
        t_technique_start=20.0,
        t_technique_end=3620.0,
    )


@pytest.mark.parametrize("on_disk", [False, True])
def test_experiment_state_lets_go_of_the_figure_arrays_it_keeps_on_disk(tmp_path, on_disk):
    rng = np.random.default_rng(2)
    sections = _sections(rng)
    thumbs = {
        "t": np.array([30.0, 1830.0]),
        "images": rng.random((2, 20, 32), dtype=np.float32),
        "factor": 4,
    }
    expected = {"xz": sections["xz"].copy(), "images": thumbs["images"].copy()}
    held = [weakref.ref(sections["xz"]), weakref.ref(thumbs["images"])]
    state = ExperimentState("e", arrays_dir=tmp_path / "a" if on_disk else None)
    state.add(_scan("s1", sections))
    state.add(_plating("p1", thumbs))
    del sections, thumbs
    gc.collect()
    # in memory only when not kept on disk
    assert [ref() is not None for ref in held] == [not on_disk, not on_disk]
    data = state.figure_data()
    (scan,) = data["scans"]
    np.testing.assert_array_equal(scan["sections"]["xz"], expected["xz"])
    assert scan["sections"]["ncol"] == 64 and scan["sections"]["xy_hse_row"] == 17
    (plating,) = data["platings"]
    np.testing.assert_array_equal(plating["thumbnails"]["images"], expected["images"])
    assert plating["thumbnails"]["factor"] == 4
    assert state.scans[0].axis_voxel == 32
    # a result of the same uid replaces the earlier one, on disk too
    state.add(_scan("s1", {"xz": np.zeros((2, 2), np.float32), "ncol": 2}))
    np.testing.assert_array_equal(state.figure_data()["scans"][0]["sections"]["xz"], 0)
