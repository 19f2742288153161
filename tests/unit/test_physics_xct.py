"""Physics of the XCT simulator: cell model (mechanics, Faraday, potential, particles),
attenuation data and the analytic projector.  Pure numpy, no IOC; whole file < 30 s."""

from __future__ import annotations

from dataclasses import replace
from math import pi

import numpy as np
import pytest

from operando.iocs.physics import materials
from operando.iocs.physics.xct_cell import (
    FARADAY,
    CellGeometry,
    CellParams,
    XCTCell,
    electrode_area_cm2,
    paper_protocol,
)
from operando.iocs.physics.xct_phantom import OBJECTIVES, DetectorGeometry, Projector

H = 3600.0
AREA = electrode_area_cm2()  # ø4 mm, cm²
M_LI, RHO_LI = 6.94, 0.534


def current_for(j_ua_cm2: float) -> float:
    return j_ua_cm2 * 1e-6 * AREA


def cycle_times(k: int) -> tuple[float, float, float]:
    """(cycle start, plating start, plating end) of cycle k (1-based), in s."""
    t0 = 9 * (k - 1) * H
    return t0, t0 + 3 * H, t0 + 9 * H


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def protocol_run():
    """The paper's protocol over 11 cycles, sampled every 5 min (plus exact ends)."""
    cell = XCTCell(CellParams(), seed=0)
    rows = []
    rows.append((0.0, 0.0, cell.truth(), cell.potential_v(0.0), cell.particles()))
    for t_a, t_b, current in paper_protocol(11):
        for t in np.linspace(t_a, t_b, int(round((t_b - t_a) / 300.0)) + 1)[1:]:
            cell.advance(t, current)
            rows.append((t, current, cell.truth(), cell.potential_v(current), cell.particles()))
    times = np.array([r[0] for r in rows])

    def at(t):
        i = int(np.argmin(np.abs(times - t)))
        assert abs(times[i] - t) < 1.0
        return rows[i]

    return {"cell": cell, "rows": rows, "times": times, "at": at}


def series(run, key, t_lo, t_hi):
    sel = [(r[0], r[2][key]) for r in run["rows"] if t_lo <= r[0] <= t_hi]
    return np.array(sel)


# --------------------------------------------------------------------------- Faraday
def test_faraday_thickness_matches_paper():
    # h = j t M / (z F rho): the paper's 1.16 µm (6 h, 40 µA/cm²) and 4.65 µm (160 µA/cm²)
    for j, h_paper in ((40.0, 1.16), (160.0, 4.65)):
        h_formula = j * 1e-6 * 6 * H * M_LI / (FARADAY * RHO_LI) * 1e4
        assert h_formula == pytest.approx(h_paper, rel=0.02)
        cell = XCTCell()
        cell.advance(6 * H, current_for(j))
        assert cell.plated_thickness_um == pytest.approx(h_paper, rel=0.02)
        assert cell.plated_thickness_um == pytest.approx(h_formula, rel=1e-9)
        assert cell.charge_c == pytest.approx(current_for(j) * 6 * H, rel=1e-12)


def test_faraday_moves_li_from_top_to_bottom_and_back():
    cell = XCTCell()
    g0 = cell.geometry()
    cell.advance(6 * H, current_for(40.0))
    cell.advance(12 * H, 0.0)  # let the voids close
    tr = cell.truth()
    assert tr["ionic_transfer_um"] == pytest.approx(1.1638, rel=0.01)
    g1 = cell.geometry()
    creep_li = CellParams().li_creep_um * tr["creep_fraction"]
    assert g1.top_li_um == pytest.approx(g0.top_li_um - 1.1638 - creep_li, abs=0.05)
    assert g1.bottom_li_um == pytest.approx(g0.bottom_li_um + 1.1638 - creep_li, abs=0.05)
    # negative current strips the bottom electrode
    cell2 = XCTCell()
    cell2.advance(6 * H, -current_for(40.0))
    assert cell2.truth()["ionic_transfer_um"] == pytest.approx(-1.1638, rel=0.01)
    assert cell2.potential_v(-current_for(40.0)) < 0
    assert cell2.truth()["bottom_void_um"] > 1.0 and cell2.truth()["top_void_um"] == 0.0


# --------------------------------------------------------------------------- force
def test_initial_force_and_pressure():
    cell = XCTCell()
    assert cell.t == 0.0
    assert cell.force_n == pytest.approx(22.0, rel=0.05)
    p_mpa = cell.force_n / (pi * 2.0**2)  # N / mm² on ø4 mm
    assert p_mpa == pytest.approx(1.75, rel=0.05)
    tr = cell.truth()
    assert tr["cu_to_cu_um"] == pytest.approx(305.0, abs=1e-9)
    assert tr["top_li_um"] == pytest.approx(138.0, abs=1e-9)
    assert tr["li_diameter_um"] == pytest.approx(4000.0)


def test_force_equilibrates_near_19p6_by_60h(protocol_run):
    at = protocol_run["at"]
    tr60 = at(60 * H)[2]
    assert tr60["force_baseline_n"] == pytest.approx(19.6, abs=0.1)
    # 60 h is mid-plating of cycle 7: baseline + the void contribution (< 0.4 N)
    assert 19.5 < tr60["force_n"] < 20.0
    # on average decreasing before: the force at every plating start falls until cycle 7
    starts = [at(cycle_times(k)[1])[2]["force_n"] for k in range(1, 8)]
    assert all(a > b for a, b in zip(starts, starts[1:]))
    assert starts[0] - starts[-1] > 1.5


def test_force_alternates_in_cycles_7_to_9(protocol_run):
    at = protocol_run["at"]
    k_n_per_um = 72.78e-3
    for k in (7, 8, 9):
        _, ps, pe = cycle_times(k)
        f_start = at(ps)[2]["force_n"]
        f_end = at(pe)[2]["force_n"]
        assert f_start == pytest.approx(19.6, abs=0.1), k
        assert f_end == pytest.approx(19.9, abs=0.1), k
        # 0.3 N <-> 4.12 µm with the spring: the void height seen by the force
        dv = at(pe)[2]["top_void_um"] - at(ps)[2]["top_void_um"]
        assert (f_end - f_start) == pytest.approx(k_n_per_um * dv, rel=0.05)
        assert dv == pytest.approx(4.12, abs=1.5)


def test_force_rises_during_plating_and_falls_after(protocol_run):
    at = protocol_run["at"]
    for k in range(3, 11):
        _, ps, pe = cycle_times(k)
        assert at(ps + 1 * H)[2]["force_n"] > at(ps)[2]["force_n"] + 0.1, k
        assert at(pe + 2 * H)[2]["force_n"] < at(pe)[2]["force_n"] - 0.1, k


def _plating_stats(run, key_fn):
    out = {}
    for k in range(1, 12):
        _, ps, pe = cycle_times(k)
        vals = np.array([key_fn(r) for r in run["rows"] if ps <= r[0] <= pe])
        out[k] = (vals[0], vals.max())
    return out


def test_cycle_10_peak_is_the_highest(protocol_run):
    st = _plating_stats(protocol_run, lambda r: r[2]["force_n"])
    rise = {k: peak - start for k, (start, peak) in st.items()}
    assert rise[10] > max(rise[k] for k in range(1, 10)) + 0.1
    assert rise[10] > rise[11]  # the cell shorts early in cycle 11
    assert st[10][1] > max(st[k][1] for k in range(4, 10))
    # the potential peak, likewise
    ep = _plating_stats(protocol_run, lambda r: r[3])
    assert ep[10][1] > max(ep[k][1] for k in range(1, 10))


# --------------------------------------------------------------------------- stack
def test_stack_after_nine_plating_cycles(protocol_run):
    tr = protocol_run["at"](81 * H)[2]
    assert tr["cu_to_cu_um"] == pytest.approx(282.0, abs=1.0)
    assert tr["top_li_um"] == pytest.approx(125.0, abs=1.0)
    # HSE + bottom Li change ≈ overall change − top Li change (paper: ≈10 µm)
    assert (305.0 - 138.0) - (tr["hse_um"] + tr["bottom_li_um"]) == pytest.approx(10.0, abs=1.0)
    g = protocol_run["cell"].geometry()
    assert g.bottom_cu_z == 0.0
    assert g.cu_to_cu_um == pytest.approx(g.bottom_li_um + g.hse_um + g.top_li_um)


def test_li_diameter_creeps_to_5mm(protocol_run):
    cell = protocol_run["cell"]
    assert cell.truth()["li_diameter_um"] == pytest.approx(5000.0, abs=100.0)
    d = series(protocol_run, "li_diameter_um", 0, 99 * H)[:, 1]
    assert np.all(np.diff(d) >= 0)
    # the rim holds the volume the core lost by creep (volume conservation)
    tr = cell.truth()
    lost = CellParams().li_creep_um * tr["creep_fraction"] * pi * 2000.0**2
    rim = tr["li_rim_um"] * pi * ((tr["li_diameter_um"] / 2) ** 2 - 2000.0**2)
    assert rim == pytest.approx(lost, rel=1e-9)


# --------------------------------------------------------------------------- failure, potential
def test_short_circuit_in_cycle_11(protocol_run):
    cell = protocol_run["cell"]
    assert cell.shorted
    _, ps, pe = cycle_times(11)
    assert ps < cell.short_time < pe
    assert not protocol_run["at"](ps)[2]["shorted"]
    i = current_for(40.0)
    assert abs(cell.potential_v(i)) < 1e-3  # I·R_short, µV
    assert cell.potential_v(i) == pytest.approx(i * CellParams().r_short_ohm)
    # stays shorted, and no more Li moves
    moved = cell.truth()["ionic_transfer_um"]
    cell2 = XCTCell()
    for _t_a, t_b, current in paper_protocol(11):
        cell2.advance(t_b, current)
    cell2.advance(cell2.t + 6 * H, i)
    assert cell2.shorted and cell2.truth()["ionic_transfer_um"] == pytest.approx(moved)
    assert cell2.truth()["plated_thickness_um"] > moved + 1.0  # the charge still counts


def test_potential_shape_and_magnitudes(protocol_run):
    at = protocol_run["at"]
    assert at(0.0)[3] == 0.0
    ends = {k: at(cycle_times(k)[2])[3] for k in range(1, 11)}
    assert 0.005 < ends[1] < 0.02  # ≈10 mV at 2 µA/cm²
    assert 0.1 < ends[3] < 0.6  # a few hundred mV at 40 µA/cm²
    assert all(ends[k + 1] > ends[k] for k in range(3, 10))  # rising with cycles
    for k in (3, 8):
        _, ps, pe = cycle_times(k)
        e0 = at(ps + 300)[3]
        e1, e5, e6 = at(ps + H)[3], at(ps + 5 * H)[3], at(pe)[3]
        assert e0 > 0.25 * e6  # steep (ohmic) rise
        assert (e1 - e0) > 3 * (e6 - e5)  # then a flattening slope
        # OCV relaxes towards 0 V
        assert abs(at(pe + 3 * H)[3]) < 0.1 * e6


# --------------------------------------------------------------------------- integrator
def test_advance_is_split_invariant_and_deterministic():
    rng = np.random.default_rng(123)
    a, b = XCTCell(seed=0), XCTCell(seed=0)
    for t_a, t_b, current in paper_protocol(11):
        a.advance(t_b, current)
        cuts = np.sort(rng.uniform(t_a, t_b, rng.integers(1, 40)))
        for t in cuts:
            b.advance(t, current)
        b.advance(t_b, current)
        ta, tb = a.truth(), b.truth()
        for key, va in ta.items():
            if isinstance(va, float):
                assert tb[key] == pytest.approx(va, rel=1e-9, abs=1e-9), key
            else:
                assert tb[key] == va, key
        assert a.potential_v(current) == pytest.approx(b.potential_v(current), rel=1e-9, abs=1e-12)
        np.testing.assert_allclose(a.particles(), b.particles(), rtol=1e-10, atol=1e-8)
    assert a.short_time == pytest.approx(b.short_time, rel=1e-12)
    with pytest.raises(ValueError):
        a.advance(a.t - 1.0, 0.0)
    # other seeds: other particles and threshold
    c = XCTCell(seed=1)
    assert c.short_threshold_um != XCTCell(seed=0).short_threshold_um
    assert not np.allclose(c.particles()[:5], XCTCell(seed=0).particles()[:5])


# --------------------------------------------------------------------------- particles
def test_particles_layout(protocol_run):
    p0 = protocol_run["rows"][0][4]
    assert 60 <= len(p0) <= 120
    assert np.all((p0[:, 3] >= 15) & (p0[:, 3] <= 35))
    assert np.all(np.hypot(p0[:, 0], p0[:, 1]) + p0[:, 3] <= 2600 + 1e-9)
    assert np.sum(np.abs(p0[:, 0]) < 1700) > 30  # many in the 3.4 mm field
    for r in protocol_run["rows"][::12]:
        p, tr = r[4], r[2]
        hse_bottom = tr["bottom_li_um"]
        hse_top = hse_bottom + tr["hse_um"]
        assert np.all(p[:, 2] - p[:, 3] >= hse_bottom - 1e-9)
        assert np.all(p[:, 2] + p[:, 3] <= hse_top + 1e-9)
        d = np.sqrt(((p[:, None, :3] - p[None, :, :3]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        assert np.all(d > p[:, None, 3] + p[None, :, 3])  # no overlap


def test_particles_move_mostly_outward(protocol_run):
    at = protocol_run["at"]
    p0 = protocol_run["rows"][0][4]
    p_end = protocol_run["rows"][-1][4]
    dr = np.hypot(p_end[:, 0], p_end[:, 1]) - np.hypot(p0[:, 0], p0[:, 1])
    assert dr.mean() > 0
    assert np.mean(dr > 0) > 0.7
    # mostly radial, with a random component: angle between displacement and radius
    d = p_end[:, :2] - p0[:, :2]
    cosang = (d * p0[:, :2]).sum(1) / (np.hypot(*d.T) * np.hypot(*p0[:, :2].T))
    ang = np.degrees(np.arccos(np.clip(cosang, -1, 1)))
    assert 2.0 < np.median(ang) < 30.0
    assert np.mean(ang > 10.0) > 0.1
    # per cycle (scan to scan, mid-OCV): 5–20 µm, far below the particle spacing
    d = np.sqrt(((p0[:, None, :2] - p0[None, :, :2]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    spacing = d.min(axis=1).min()
    for k in range(1, 11):
        a = at(cycle_times(k)[0] + 1.5 * H)[4]
        b = at(cycle_times(k + 1)[0] + 1.5 * H)[4]
        disp = np.hypot(*(b[:, :2] - a[:, :2]).T)
        assert 4.0 < np.median(disp) < 20.0, k
        assert disp.max() < spacing / 3, k


# --------------------------------------------------------------------------- materials
def test_materials_and_tube():
    assert materials.effective_energy_kev(70, "LE1") == pytest.approx(30.0, abs=0.5)
    assert materials.effective_energy_kev(70, "None") < materials.effective_energy_kev(70, "LE1")
    assert materials.i0_rate(70, 143, "LE1") * 1.5 == pytest.approx(12000, rel=0.01)
    assert (
        materials.i0_rate(70, 143, "LE3")
        < materials.i0_rate(70, 143, "LE1")
        < materials.i0_rate(70, 143, "None")
    )
    e = materials.effective_energy_kev(70, "LE1")
    mu = materials.mu_table(e)
    # Cu coating: 1/µm scale ~ 1e-2, Li ~ 1e-5
    assert 0.008 < mu["Cu"] < 0.012 and 5e-6 < mu["Li"] < 1.2e-5
    # HSE: volume mix
    phi = materials.HSE_CERAMIC_FRACTION
    assert mu["HSE"] == pytest.approx(phi * mu["LLZTO"] + (1 - phi) * mu["PEO"])
    # a few % through the ø6 mm HSE plus the two PEEK walls, on the axis
    t = np.exp(-mu["HSE"] * 6000 - mu["PEEK"] * (2 * 1000 + 2 * 800))
    assert 0.01 < t < 0.10
    with pytest.raises(ValueError):
        materials.i0_rate(70, 100, "XX")


# --------------------------------------------------------------------------- projector
@pytest.fixture(scope="module")
def geom_t0():
    return XCTCell().geometry()


def no_particles(g: CellGeometry) -> CellGeometry:
    return replace(g, particles=np.zeros((0, 4)))


def row_centres(det: DetectorGeometry) -> np.ndarray:
    """Cell height (µm, stage_z = 0) at the centre of each (binned) row."""
    p = det.pixel_um
    z_top = 152.5 + det.n_rows_full * det.pixel_um_full / 2
    return z_top - (np.arange(det.n_rows) + 0.5) * p


def col_u(det: DetectorGeometry, axis_offset_px: float) -> np.ndarray:
    """Lateral offset from the rotation axis (µm) of each (binned) column centre."""
    b, p = det.binning, det.pixel_um_full
    return ((np.arange(det.n_cols) + 0.5) * b - det.n_cols_full / 2 - axis_offset_px) * p


def chord(r, x):
    return 2 * np.sqrt(np.maximum(r * r - x * x, 0.0))


def test_detector_formats():
    det = DetectorGeometry.for_objective("4X", binning=4)
    assert (det.n_rows, det.n_cols, det.pixel_um) == (242, 250, 13.6)
    assert OBJECTIVES["4X-wide"][0] == 5.44
    d2 = DetectorGeometry.for_objective("4X-wide", 1)
    assert d2.n_cols * d2.pixel_um == pytest.approx(5400, abs=10)
    assert d2.n_rows * d2.pixel_um == pytest.approx(5500, abs=10)
    assert DetectorGeometry.for_objective("20X").pixel_um == 0.68


@pytest.mark.parametrize("objective,binning", [("4X", 4), ("4X", 1), ("4X-wide", 2), ("20X", 2)])
def test_open_beam_out_of_field(geom_t0, objective, binning):
    proj = Projector(DetectorGeometry.for_objective(objective, binning), energy_kev=30.1)
    for sx in (8.0, -8.0, 12.0):
        T = proj.transmission(geom_t0, 17.0, stage_x_mm=sx)
        assert T.shape == proj.det.shape and T.dtype == np.float64
        np.testing.assert_allclose(T, 1.0, atol=1e-12)
    T = proj.transmission(geom_t0, 17.0)
    assert np.all(T > 0) and np.all(T <= 1.0) and T.min() < 0.2


def test_beer_lambert_single_column(geom_t0):
    e = 30.1
    mu = materials.mu_table(e)
    offset = 3.7
    for binning in (1, 4):
        det = DetectorGeometry.for_objective("4X", binning)
        proj = Projector(det, energy_kev=e, axis_offset_px=offset)
        g = no_particles(geom_t0)
        T = proj.transmission(g, 0.0)
        zc = row_centres(det)
        u = col_u(det, offset)
        j = int(np.argmin(np.abs(u - 300.0)))
        # full size: the column centre; binned: the documented column sampling
        # (4 points per full-size column, averaged), i.e. transmission averaged over the pixel
        n_sub = 4 * binning
        x = (
            u[j] + ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * det.pixel_um
            if binning > 1
            else np.array([u[j]])
        )
        walls = mu["PEEK"] * (chord(4000, x) - chord(3000, x)) + mu["PEEK"] * (
            chord(5000, x) - chord(4200, x)
        )
        walls += mu["Ar"] * (chord(4200, x) - chord(4000, x))
        # a row entirely inside the HSE disc (ø6 mm)
        half = det.pixel_um / 2
        i = int(np.argmin(np.abs(zc - (g.hse_bottom_z + g.li_top_bottom_z) / 2)))
        assert g.hse_bottom_z < zc[i] - half and zc[i] + half < g.li_top_bottom_z
        expected = np.exp(-mu["HSE"] * chord(3000, x) - walls).mean()
        assert T[i, j] == pytest.approx(expected, rel=1e-6)
        # a row inside the bottom PEEK spacer (a ø6 mm PEEK cylinder)
        i2 = int(np.argmin(np.abs(zc - (-500.0))))
        expected2 = np.exp(-mu["PEEK"] * chord(3000, x) - walls).mean()
        assert T[i2, j] == pytest.approx(expected2, rel=1e-6)
        # the top Li core (ø4 mm Li disc in argon)
        i3 = int(np.argmin(np.abs(zc - (g.li_top_bottom_z + 60.0))))
        expected3 = np.exp(
            -mu["Li"] * chord(2000, x) - mu["Ar"] * (chord(3000, x) - chord(2000, x)) - walls
        ).mean()
        assert T[i3, j] == pytest.approx(expected3, rel=1e-6)
        # the pixel average and the centre value differ only at second order here
        assert T[i, j] == pytest.approx(
            np.exp(-mu["HSE"] * chord(3000, u[j]) - walls.mean()), rel=1e-4
        )


def test_cu_coating_partial_volume(geom_t0):
    e = 30.1
    det = DetectorGeometry.for_objective("4X", 1)
    p = det.pixel_um
    g = no_particles(geom_t0)
    c = g.cu_coating_um
    zc = row_centres(det)
    i = int(np.argmin(np.abs(zc - g.top_cu_z)))
    # put the top coating [top_cu_z, top_cu_z + c] at the centre of row i
    stage_z_mm = (zc[i] - (g.top_cu_z + c / 2)) / 1000.0
    proj = Projector(det, energy_kev=e)
    T = proj.transmission(g, 0.0, stage_z_mm=stage_z_mm)
    col = T[:, 500]
    t_peek, t_cu, t_li = col[i - 1], col[i], col[i + 1]
    assert t_cu < t_peek and t_cu < t_li
    # exact band average: half a pixel-minus-coating of PEEK and of Li, the coating ~opaque
    mu = materials.mu_table(e)
    x = col_u(det, 3.7)[500]
    t_cu_band = np.exp(-mu["Cu"] * chord(3000, x)) * t_peek / np.exp(-mu["PEEK"] * chord(3000, x))
    expected = ((p - c) / 2 * (t_peek + t_li) + c * t_cu_band) / p
    assert t_cu == pytest.approx(expected, rel=1e-6)
    # binned 4x4: the coating still darkens its row by ≈ c/p of the neighbours' mix
    det4 = DetectorGeometry.for_objective("4X", 4)
    proj4 = Projector(det4, energy_kev=e)
    T4 = proj4.transmission(g, 0.0, stage_z_mm=stage_z_mm)
    T4_nocu = proj4.transmission(replace(g, cu_coating_um=1e-3), 0.0, stage_z_mm=stage_z_mm)
    k = i // 4
    drop = T4_nocu[k, 125] - T4[k, 125]
    assert drop > 0.01
    # only the two rows holding the top and the bottom coating change
    zc4 = row_centres(det4) - stage_z_mm * 1000.0
    k_bot = int(np.argmin(np.abs(zc4 - (g.bottom_cu_z - c / 2))))
    changed = np.flatnonzero(np.abs(T4_nocu - T4).max(axis=1) > 1e-9)
    assert set(changed) == {k, k_bot}
    # the lost transmission is the coating's share of the row: (c/p)·(T_PEEK − T_Cu)
    assert drop == pytest.approx(
        (c - 1e-3) / det4.pixel_um * T4[k - 2, 125] * (1 - t_cu_band / t_peek), rel=0.02
    )


def test_binned_equals_block_mean_of_full(geom_t0):
    e = 30.1
    full = Projector(DetectorGeometry.for_objective("4X", 1), energy_kev=e, axis_offset_px=3.7)
    binned = Projector(DetectorGeometry.for_objective("4X", 4), energy_kev=e, axis_offset_px=3.7)
    for theta, sz in ((0.0, 0.0), (63.0, 0.0123)):
        tf = full.transmission(geom_t0, theta, stage_z_mm=sz)
        tb = binned.transmission(geom_t0, theta, stage_z_mm=sz)
        block = tf[: 242 * 4, :1000].reshape(242, 4, 250, 4).mean(axis=(1, 3))
        np.testing.assert_allclose(block, tb, atol=1e-3)
        assert np.abs(block - tb).max() < 1e-9  # exactly, in fact


def test_particle_shadow_follows_rotation(geom_t0):
    det = DetectorGeometry.for_objective("4X", 1)
    offset = 3.7
    proj = Projector(det, energy_kev=30.1, axis_offset_px=offset)
    g0 = no_particles(geom_t0)
    xp, yp, rp = 800.0, -500.0, 30.0
    zp = (g0.hse_bottom_z + g0.li_top_bottom_z) / 2
    g1 = replace(g0, particles=np.array([[xp, yp, zp, rp]]))
    base = proj.transmission(g0, 0.0)
    u = col_u(det, offset)
    zc = row_centres(det)
    for theta in (0.0, 37.0, 90.0, 200.0, 311.5):
        th = np.radians(theta)
        shadow = 1.0 - proj.transmission(g1, theta) / base
        assert shadow.max() > 0.1
        w = shadow.sum()
        u_c = (shadow.sum(axis=0) * u).sum() / w
        z_c = (shadow.sum(axis=1) * zc).sum() / w
        assert u_c == pytest.approx(xp * np.cos(th) - yp * np.sin(th), abs=0.2 * det.pixel_um)
        assert z_c == pytest.approx(zp, abs=0.2 * det.pixel_um)
    # stage_x moves the shadow sideways by the same amount
    shadow = 1.0 - proj.transmission(g1, 0.0, stage_x_mm=0.5) / proj.transmission(
        g0, 0.0, stage_x_mm=0.5
    )
    u_c = (shadow.sum(axis=0) * u).sum() / shadow.sum()
    assert u_c == pytest.approx(xp + 500.0, abs=0.2 * det.pixel_um)


def test_frame_statistics():
    rng = np.random.default_rng(5)
    for binning, n in ((1, 3), (4, 2)):
        det = DetectorGeometry.for_objective("4X", binning)
        proj = Projector(det, energy_kev=30.1, seed=3)
        m = n * binning**2
        i0 = 12000.0
        for tval in (1.0, 0.05, 0.002):  # the last one: exact-Poisson regime (< 1000 counts)
            T = np.full(det.shape, tval)
            img = proj.frame(T, i0, n, rng).astype(float)
            assert img.dtype == float and img.shape == det.shape
            lam = i0 * T * proj.flat
            resid = img - proj.dark - lam
            # mean ≈ I0·T (after flat/dark correction), variance ≈ mean/n (+ read noise)
            assert ((img - proj.dark) / proj.flat).mean() == pytest.approx(i0 * tval, rel=2e-3)
            z = resid / np.sqrt(lam / m + 9.0 / m + 1.0 / 12.0)
            assert abs(z.mean()) < 0.02
            assert z.var() == pytest.approx(1.0, abs=0.05)
        # flat pattern: smooth ±10 % profile times ±2 % gain
        assert 0.8 < proj.flat.min() and proj.flat.max() < 1.2 and proj.flat.std() > 0.01
        dark = proj.frame(np.ones(det.shape), i0, n, rng, source_on=False).astype(float)
        assert dark.mean() == pytest.approx(100.0, abs=1.0)
        assert (dark - proj.dark).std() == pytest.approx(np.sqrt(9.0 / m + 1 / 12), rel=0.1)
    img = proj.frame(np.ones(det.shape), 1e6, 1, rng)
    assert img.dtype == np.uint16 and img.max() == 65535  # clipped
