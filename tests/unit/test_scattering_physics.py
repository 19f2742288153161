"""Physics of the scanning SAXS/WAXS experiment: phase table, cell, beamline set-ups.

Numbers asserted against the lattices, Faraday's law and the paper's figures
(SPEC, Experiment 2), with tolerances that can fail.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from operando.iocs.physics import phases as ph
from operando.iocs.physics import scattering_frames as sf
from operando.iocs.physics.saxs_cell import LI_PER_MAH_UMOL, SaxsCell, SaxsCellParams


def q_of(phase, hkl):
    for h, q, _ in ph.reflections(phase, 40.0):
        if h == hkl:
            return q
    raise AssertionError(f"{phase} {hkl} not among the allowed reflections")


# ------------------------------------------------------------------------------ phases
@pytest.mark.parametrize(
    "phase, hkl, q_expected, tol",
    [
        ("Li2S", (1, 1, 1), 19.07, 0.02),  # SPEC's rounding; the lattice gives 19.059
        ("In", (0, 0, 2), 25.41, 0.02),
        ("In", (1, 1, 0), 27.32, 0.02),
        ("In", (1, 0, 1), 23.12, 0.02),
        ("LiIn", (2, 2, 0), 26.2, 0.02),
        ("Li", (1, 1, 0), 25.32, 0.02),
        ("Li6PS5Cl", (4, 0, 0), 25.52, 0.02),
    ],
)
def test_positions_computed_from_lattice(phase, hkl, q_expected, tol):
    q = q_of(phase, hkl)
    assert abs(q - q_expected) <= tol
    assert q == pytest.approx(ph.reflection_q(phase, hkl), abs=1e-9)


def test_li2s_111_exact_and_inside_paper_window():
    q = q_of("Li2S", (1, 1, 1))
    assert q == pytest.approx(2 * math.pi * math.sqrt(3) / 0.571, abs=1e-9)
    assert abs(q - 19.06) < 0.005
    assert 18.3 < q < 20.8  # inside the paper's integration window
    assert abs(q - 19.8) > 0.5  # ... but not at the quoted 19.8


def test_quoted_positions_disagree_where_spec_says():
    # the peak quoted as "In(110) 26.2" is LiIn(220); In(002) is not at 27.4
    assert abs(q_of("In", (1, 1, 0)) - 26.2) > 1.0
    assert abs(q_of("LiIn", (2, 2, 0)) - 26.2) < 0.02
    assert abs(q_of("In", (0, 0, 2)) - 27.4) > 1.5
    # Li(110) overlaps In(002) and Li6PS5Cl(400) within 0.2 nm⁻¹
    li = q_of("Li", (1, 1, 0))
    assert abs(li - q_of("In", (0, 0, 2))) < 0.1
    assert abs(li - q_of("Li6PS5Cl", (4, 0, 0))) < 0.25


def test_extinction_rules():
    allowed = {
        p: {h for h, _, _ in ph.reflections(p, 40.0)}
        for p in ("Li2S", "LiIn", "In", "Li6PS5Cl", "Li")
    }
    assert (1, 0, 0) not in allowed["Li2S"] and (1, 1, 0) not in allowed["Li2S"]
    assert (2, 0, 0) in allowed["Li2S"] and (1, 1, 1) in allowed["Li2S"]
    assert (2, 0, 0) not in allowed["LiIn"]  # Fd-3m: all even with h+k+l = 4n+2
    assert (1, 1, 1) in allowed["LiIn"] and (2, 2, 0) in allowed["LiIn"]
    assert (1, 0, 0) not in allowed["In"] and (0, 0, 1) not in allowed["In"]
    assert (1, 0, 0) not in allowed["Li"] and (1, 1, 0) in allowed["Li"]
    assert (1, 1, 0) not in allowed["Li6PS5Cl"] and (2, 2, 0) in allowed["Li6PS5Cl"]


def test_relative_intensities_and_multiplicities():
    li2s = {h: i for h, _, i in ph.reflections("Li2S", 35.0)}
    assert li2s[(1, 1, 1)] == pytest.approx(100.0)
    assert li2s[(2, 2, 0)] > li2s[(2, 0, 0)]  # F(220) = 4(f_S + 2f_Li) > F(200) = 4(f_S − 2f_Li)
    inn = {h: i for h, _, i in ph.reflections("In", 30.0)}
    assert inn[(1, 0, 1)] == pytest.approx(100.0)
    _, _, _, mult = ph._reflection_table("Li2S", 35.0)
    assert list(mult[:3]) == [8, 6, 12]


def test_densities_from_cells():
    assert ph.density("Li2S") == pytest.approx(1.64, abs=0.01)
    assert ph.density("Li6PS5Cl") == pytest.approx(1.865, abs=0.01)
    assert ph.density("In") == pytest.approx(7.29, abs=0.03)
    assert ph.density("Li") == pytest.approx(0.534, abs=0.003)


def _ring(q, phase, size, instrument_fwhm=0.0):
    """The Bragg part of a pattern: minus the smooth diffuse/Porod terms."""
    p = ph.pattern(q, phase, size, instrument_fwhm=instrument_fwhm)
    smooth = np.interp(q, [q[0], q[-1]], [p[0], p[-1]])  # diffuse + Porod: linear here
    return p - smooth


@pytest.mark.parametrize("size, instr", [(10.0, 0.0), (10.0, 0.3), (30.0, 0.15)])
def test_scherrer_width_of_simulated_peak(size, instr):
    q = np.arange(17.0, 21.0, 0.001)  # Li2S(111) alone (200 is at 22.0)
    ring = _ring(q, "Li2S", size, instr)
    half = q[ring > ring.max() / 2]
    expected = math.hypot(2 * math.pi * 0.9 / size, instr)
    assert half[-1] - half[0] == pytest.approx(expected, abs=0.004)
    assert q[np.argmax(ring)] == pytest.approx(19.059, abs=0.002)


def test_bragg_ring_absolute_scale():
    """∫ dΣ/dΩ dq over one ring equals 2π² r_e² m|F|² / (V_c² q²)."""
    q = np.arange(17.0, 21.0, 0.0005)
    area = np.trapezoid(_ring(q, "Li2S", 20.0), q)
    _, qh, mf2, _ = ph._reflection_table("Li2S", 25.0)
    v_c = (5.71e-8) ** 3  # cm³
    expected = (
        2 * math.pi**2 * ph.R_E_CM**2 * mf2[0] / (v_c**2 * (qh[0] * 1e7) ** 2) * 1e-7
    )  # cm⁻¹ sr⁻¹ nm⁻¹
    assert area == pytest.approx(expected, rel=0.01)
    # |F(111)|² = (4 f_S)² e^{-2Bs²} with m = 8
    s = qh[0] / (4 * math.pi * 10)
    import xraydb

    f_s = float(xraydb.f0("S", s)[0])
    assert mf2[0] == pytest.approx(8 * (4 * f_s) ** 2 * math.exp(-2 * 1.5 * s * s), rel=1e-6)


def test_pore_saxs_contrast_and_size():
    q = np.geomspace(0.05, 6.0, 400)
    pristine = ph.pore_saxs(q, 1.0)
    filled = ph.pore_saxs(q, 0.02)
    assert np.allclose(filled, 0.02 * pristine)
    # nearly monodisperse: the sphere form factor of a 2.7 nm pore, absolute scale
    mono = ph.pore_saxs(q, 1.0, polydispersity=0.02)
    r = 1.35
    x = q * r
    ff = (3 * (np.sin(x) - x * np.cos(x)) / x**3) ** 2
    v_cm3 = 4 / 3 * math.pi * r**3 * 1e-21
    expected = 0.67 * ph.sld("C") ** 2 * v_cm3 * ff
    low = q < 2.0
    assert np.allclose(mono[low], expected[low], rtol=0.05)
    # default polydispersity: Guinier plateau at low q, the knee between 0.5 and 2.5 nm⁻¹
    half = q[np.argmax(pristine < pristine[0] / 2)]
    assert pristine[np.searchsorted(q, 0.1)] / pristine[0] > 0.99
    assert 0.5 < half < 2.5


# ------------------------------------------------------------------------------ cell
@pytest.fixture
def cell():
    return SaxsCell(SaxsCellParams(), seed=0)


def discharge(cell, v=0.6):
    i = cell.c_rate_current()
    cell.advance(cell.time + cell.time_to_limit(i, v), i)
    return i


def charge(cell, v=2.4):
    i = cell.c_rate_current()
    cell.advance(cell.time + cell.time_to_limit(-i, v), -i)


def test_loading_and_c_rate(cell):
    assert cell.sulfur_mass_mg == pytest.approx(0.525)
    assert cell.theoretical_capacity_mah == pytest.approx(0.525e-3 * 1672)
    assert cell.c_rate_current(1 / 20) == pytest.approx(0.8778e-3 / 20, rel=1e-6)


def test_galvanostatic_cycle_recovers_37_percent(cell):
    i = cell.c_rate_current()
    assert 1.5 <= cell.voltage(i) <= 2.0
    t_dis = cell.time_to_limit(i, 0.6)
    assert 7 * 3600 < t_dis < 12 * 3600  # C/20 with ≈45 % utilisation
    cell.advance(t_dis / 2, i)
    assert 1.5 <= cell.voltage(i) <= 2.0  # plateau
    cell.advance(t_dis, i)
    assert cell.voltage(i) == pytest.approx(0.6, abs=1e-3)
    q_dis = cell.half_cycle_capacity_mah
    # Faraday: the capacity is current x time
    assert q_dis == pytest.approx(i * t_dis / 3.6)
    charge(cell)
    assert cell.voltage(-i) == pytest.approx(2.4, abs=1e-3)
    q_ch = cell.half_cycle_capacity_mah
    assert q_ch / q_dis == pytest.approx(0.37, abs=0.03)
    discharge(cell)
    q_dis2 = cell.half_cycle_capacity_mah
    assert q_dis2 == pytest.approx(q_ch, rel=0.05)  # "subsequent discharge matches the charge"
    t = cell.truth()
    assert t["discharge_capacities_mah"] == pytest.approx([q_dis, q_dis2])
    assert t["charge_capacities_mah"] == pytest.approx([q_ch])


def test_advance_is_exact_for_large_steps():
    a, b = SaxsCell(seed=1), SaxsCell(seed=1)
    i = a.c_rate_current()
    a.advance(20000.0, i)
    for t in np.linspace(0, 20000.0, 1001)[1:]:
        b.advance(t, i)
    assert a.capacity_mah == pytest.approx(b.capacity_mah, rel=1e-12)
    assert a.voltage(i) == pytest.approx(b.voltage(i), abs=1e-9)
    assert a.state_of_discharge == pytest.approx(b.state_of_discharge, rel=1e-12)
    with pytest.raises(ValueError):
        a.advance(10.0, i)


def test_anode_lithium_balance(cell):
    li0 = sum(v for k, v in cell.truth()["anode_umol"].items() if k != "In")
    discharge(cell)
    t = cell.truth()
    li1 = sum(v for k, v in t["anode_umol"].items() if k != "In")
    assert li0 - li1 == pytest.approx(cell.capacity_mah * LI_PER_MAH_UMOL, rel=1e-9)
    # the crystalline LiIn of the pellet (the 26.2 nm⁻¹ ring) is mostly consumed ...
    liin0 = SaxsCell().truth()["anode_umol"]["LiIn"]
    assert t["anode_umol"]["LiIn"] < 0.3 * liin0
    charge(cell)
    t2 = cell.truth()
    # ... and does not come back: Li returns as amorphous LiIn
    assert t2["anode_umol"]["LiIn"] == pytest.approx(t["anode_umol"]["LiIn"])
    assert t2["anode_umol"]["LiIn_am"] > 0


def test_li2s_heterogeneous_and_size_in_model(cell):
    sizes = []
    i = cell.c_rate_current()
    t_end = cell.time_to_limit(i, 0.6)
    for f in (0.25, 0.5, 1.0):
        cell.advance(f * t_end, i)
        sizes.append(cell.truth()["li2s_size_max_nm"])
    assert sizes[0] < sizes[1] < sizes[2] <= 1.75 + 1e-9
    assert sizes[2] == pytest.approx(1.75, abs=0.02)
    t = cell.truth(nx=25, ny=35)
    prof = t["li2s_conversion"].mean(axis=1)  # along y, CC (row 0) → separator
    centre = prof[len(prof) // 2]
    assert centre > 1.8 * prof[0] and centre > 1.8 * prof[-1]
    # total Li2S in the map equals the electrochemistry (mean weight 1)
    assert t["li2s_conversion"].mean() == pytest.approx(
        cell.params.utilization * cell.state_of_discharge, rel=0.01
    )


def test_footprint_volumes_and_transmission(cell):
    e = 16.0
    # fully inside the separator: 1 mm path of 0.85-packed Li6PS5Cl + 1 mm PEEK
    fp = cell.composition_at(0.0, 0.6, 1.0, 0.088, e)
    assert fp.volumes["Li6PS5Cl"] == pytest.approx(1.0 * 0.088 * 1.0 * 0.85)
    assert fp.volumes["PEEK"] == pytest.approx(1.0 * 0.088 * 1.0)
    mu = 0.85 * 20.17 / 10 + 1.09 / 10  # 1/mm (xraydb values at 16 keV)
    assert fp.transmission == pytest.approx(math.exp(-mu), rel=0.02)
    # half on the steel collector: half the cathode volume, transmission halved
    full = cell.composition_at(0.0, 0.1, 1.0, 0.088, e)
    half = cell.composition_at(0.0, 0.0, 1.0, 0.088, e)
    assert half.volumes["Li6PS5Cl"] == pytest.approx(full.volumes["Li6PS5Cl"] / 2)
    assert half.transmission == pytest.approx(full.transmission / 2, rel=0.01)
    # the anode composite is dim but not black; steel is black
    assert 1e-4 < cell.transmission_at(0.0, 1.0, 1.0, 0.088, e) < 1e-2
    assert cell.transmission_at(0.0, -0.5, 1.0, 0.088, e) < 1e-12
    # the empty cell: windows only
    assert cell.transmission_at(0.0, 0.6, 1.0, 0.088, e, empty=True) == pytest.approx(
        math.exp(-0.109), rel=0.01
    )


def test_saxs_stable_through_discharge(cell):
    bl = sf.SYNCHROTRON
    q = bl.q_grid("saxs")
    sel = (q >= 0.2) & (q <= 1.0)
    fp0 = cell.composition_at(0.0, 0.175, bl.beam_w_mm, bl.beam_h_mm, bl.energy_kev)
    discharge(cell)
    fp1 = cell.composition_at(0.0, 0.175, bl.beam_w_mm, bl.beam_h_mm, bl.energy_kev)
    i0 = np.trapezoid(sf.scattering_curve(q, fp0)[sel], q[sel])
    i1 = np.trapezoid(sf.scattering_curve(q, fp1)[sel], q[sel])
    assert abs(i1 / i0 - 1) < 0.04
    # the carbon pore part changes by 0.75x where Li2S formation peaks, less elsewhere
    assert 0.75 < fp1.pore_contrast / fp0.pore_contrast < 0.85
    t = cell.truth(nx=201, ny=35)
    iy, ix = np.unravel_index(np.argmax(t["li2s_conversion"]), t["li2s_conversion"].shape)
    x, y = t["grid_x_mm"][ix], t["grid_y_mm"][iy]
    small = cell.composition_at(x, y, 0.005, 0.002, bl.energy_kev)
    assert small.pore_contrast / fp0.pore_contrast == pytest.approx(0.75, abs=0.01)
    # the pristine carbon's pore hump is far above the composite's
    assert (
        ph.pore_saxs(np.array([0.5]), 1.0)[0]
        > 20 * ph.pore_saxs(np.array([0.5]), fp0.pore_contrast)[0]
    )


# ------------------------------------------------------------------------------ set-ups
def _q_span(bl, role):
    arr = sf.pixel_arrays(bl.integrator(role), bl.detector(role).beamstop_radius_m)
    ok = ~(arr["gap"] | arr["shadow"])
    return float(arr["q"][ok].min()), float(arr["q"][ok].max())


@pytest.mark.parametrize("role, lo, hi", [("saxs", 0.03, 6.71), ("waxs", 16.9, 34.7)])
def test_synchrotron_q_ranges(role, lo, hi):
    qmin, qmax = _q_span(sf.SYNCHROTRON, role)
    assert qmin == pytest.approx(lo, rel=0.05)
    assert qmax == pytest.approx(hi, rel=0.05)
    assert sf.SYNCHROTRON.integrator(role).dist == pytest.approx(1.80 if role == "saxs" else 0.114)


def test_lab_setup_covers_the_windows():
    bl = sf.get_beamline("lab")
    assert bl.wavelength_m == pytest.approx(1.5406e-10)
    assert bl.integrator("saxs").detector.shape == (1062, 1028)  # Eiger2 1M
    assert bl.integrator("waxs").detector.shape == (512, 1028)  # Eiger2 500k
    smin, smax = _q_span(bl, "saxs")
    wmin, wmax = _q_span(bl, "waxs")
    assert smin < 0.2 and smax > 1.0  # SAXS-map window
    assert wmin < 18.3 and wmax > 26.5  # Li2S window and LiIn(220)
    with pytest.raises(ValueError):
        sf.get_beamline("nowhere")


def test_poni_file_and_dict_roundtrip(tmp_path):
    import pyFAI

    bl = sf.SYNCHROTRON
    path = tmp_path / "waxs.poni"
    bl.write_poni("waxs", path)
    bl.write_poni("waxs", path)  # written twice: replaced, not appended
    assert open(path).read().count("Distance:") == 1
    geo = bl.geometry("waxs")
    json.dumps(geo)  # JSON-safe
    for src in (str(path), geo):
        ai = pyFAI.load(src)
        assert ai.dist == pytest.approx(0.114)
        assert ai.rot2 == pytest.approx(bl.waxs.rot2)
        assert ai.wavelength == pytest.approx(bl.wavelength_m)


def test_render_counts_gaps_and_beamstop():
    bl = sf.SYNCHROTRON
    ai = bl.integrator("saxs")
    q = np.array([0.0, 10.0])
    flat = np.array([1e-2, 1e-2])  # photons per incident photon per sr
    rng = np.random.default_rng(0)
    frame = sf.render(ai, q, flat, 1e12, rng, beamstop_radius_m=bl.saxs.beamstop_radius_m)
    arr = sf.pixel_arrays(ai, bl.saxs.beamstop_radius_m)
    assert frame.dtype == np.int32 and frame.shape == (1043, 981)
    assert np.all(frame[arr["gap"]] == -1)
    assert arr["gap"].sum() == ai.detector.mask.sum()
    assert np.all(frame[arr["shadow"]] == 0) and arr["shadow"].sum() > 20
    ok = ~(arr["gap"] | arr["shadow"])
    expected = 1e-2 * 1e12 * arr["omega"][ok]
    assert frame[ok].sum() == pytest.approx(expected.sum(), rel=1e-3)
    # absolute solid angle of the central pixel: pixel area / dist²
    assert arr["omega"].max() == pytest.approx((172e-6 / 1.8) ** 2, rel=1e-3)


def test_render_point_frames():
    cell = SaxsCell(seed=0)
    bl = sf.SYNCHROTRON
    fp = cell.composition_at(0.0, 0.175, bl.beam_w_mm, bl.beam_h_mm, bl.energy_kev)
    frames = sf.render_point(bl, fp, np.random.default_rng(1))
    assert frames["saxs"].shape == (1043, 981) and frames["waxs"].shape == (195, 487)
    assert frames["waxs"].max() > 1000  # a cathode pixel at synchrotron flux
    with pytest.raises(ValueError):
        sf.scattering_curve(bl.q_grid("waxs"), cell.composition_at(0, 0.1, 1, 0.088))
