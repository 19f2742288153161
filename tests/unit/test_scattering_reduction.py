"""The SAXS/WAXS reduction (``operando.callbacks.saxs.science``) recovers the
simulated truth from rendered frames alone.

The simulators are imported here only to make frames and to compare with the
truth; the reduction module itself never imports them (checked below).
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf

from operando.callbacks.saxs import science as sc
from operando.iocs.physics import phases as ph
from operando.iocs.physics import scattering_frames as sf
from operando.iocs.physics.saxs_cell import Footprint, SaxsCell

BL = sf.SYNCHROTRON
WAXS_FWHM = BL.waxs.instrument_fwhm_nm


def test_callbacks_do_not_import_the_simulators():
    src = Path(sc.__file__).read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        assert not any("iocs" in n for n in names), names


# ------------------------------------------------------------------------------ pure maths
def test_window_sum_exact_on_analytic_curves():
    q = np.linspace(10.0, 30.0, 1001)
    line = 3.0 + 0.5 * q
    exact = 3.0 * (20.8 - 18.3) + 0.25 * (20.8**2 - 18.3**2)
    assert sc.window_sum(q, line, 18.3, 20.8) == pytest.approx(exact, rel=1e-12)
    # a Gaussian on a fine grid: the trapezoid converges to the erf integral
    qq = np.linspace(10.0, 30.0, 200001)
    s, c, a = 1.2, 19.06, 7.0
    g = a * np.exp(-0.5 * ((qq - c) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    exact = a / 2 * (erf((20.8 - c) / (s * math.sqrt(2))) - erf((18.3 - c) / (s * math.sqrt(2))))
    assert sc.window_sum(qq, g, 18.3, 20.8) == pytest.approx(exact, rel=1e-8)
    with pytest.raises(ValueError):
        sc.window_sum(q, line, 5.0, 12.0)


@pytest.mark.parametrize("shape", ["gauss", "pvoigt"])
def test_fit_peak_on_analytic_peak(shape):
    q = np.linspace(17.0, 22.0, 800)
    fwhm, c, area = 0.4, 19.06, 5.0
    eta = 0.3 if shape == "pvoigt" else 0.0
    y = (
        2.0
        - 0.1 * (q - 19.5)
        + area * ph.peak_profile(q, c, fwhm, "pvoigt" if eta else "gauss", eta)
    )
    fit = sc.fit_peak(q, y, (17.5, 21.0), shape=shape)
    assert fit.success
    assert fit.center == pytest.approx(c, abs=1e-4)
    assert fit.fwhm == pytest.approx(fwhm, rel=1e-3)
    assert fit.area == pytest.approx(area, rel=1e-2)
    assert sc.peak_position(q, y, (17.5, 21.0), shape=shape) == pytest.approx(c, abs=1e-4)


def test_scherrer_size_removes_instrument_width():
    q = np.linspace(14.0, 24.0, 2000)
    for size, instr in ((1.75, 0.0), (1.75, 0.8), (20.0, 0.15)):
        width = math.hypot(2 * math.pi * 0.9 / size, instr)
        y = 1.0 + 3.0 * ph.peak_profile(q, 19.06, width)
        window = (19.06 - 3 * width, 19.06 + 3 * width)
        assert sc.scherrer_size(q, y, window, instrument_fwhm=instr) == pytest.approx(
            size, rel=1e-3
        )
    y = 1.0 + ph.peak_profile(q, 19.06, 0.2)
    assert sc.scherrer_size(q, y, (18.0, 20.0), instrument_fwhm=0.3) == math.inf


def test_helpers_background_normalization_maps():
    a = np.array([[2.0, 4.0, 6.0], [1.0, 1.0, 0.0]])
    assert np.allclose(sc.subtract_background(a, [1.0, 1.0, 1.0], scale=0.5), a - 0.5)
    ref = sc.reference_average(a)
    assert np.allclose(ref, [1.5, 2.5, 3.0])
    norm = sc.normalize_to_reference(a, np.array([1.0, 2.0, 0.0]))
    assert np.allclose(norm[0, :2], [2.0, 2.0]) and np.isnan(norm[0, 2])
    m = sc.raster_to_map(np.arange(6), (2, 3), snake=True)
    assert m.tolist() == [[0, 1, 2], [5, 4, 3]]
    q = np.linspace(0.0, 2.0, 201)
    curves = np.array([np.full_like(q, 2.0), np.full_like(q, 1.0)])
    refs = np.array([np.full_like(q, 1.0), np.full_like(q, 1.0)])
    assert np.allclose(sc.saxs_map(q, curves, (1, 2)), [[1.6, 0.8]])
    assert np.allclose(sc.saxs_map(q, curves, (1, 2), reference=refs), [[1.0, 0.0]])


# ------------------------------------------------------------------------------ frames
def _integrate_waxs(frame):
    return sc.integrate(frame, BL.geometry("waxs"))


def test_integrate_accepts_poni_file_and_dict(tmp_path):
    rng = np.random.default_rng(0)
    q = BL.q_grid("waxs")
    intensity = np.full_like(q, 1e-3)
    frame = sf.render(BL.integrator("waxs"), q, intensity, 1e12, rng)
    path = BL.write_poni("waxs", tmp_path / "waxs.poni")
    q1, i1, s1 = sc.integrate(frame, path)
    q2, i2, s2 = sc.integrate(frame, BL.geometry("waxs"))
    assert np.allclose(q1, q2) and np.allclose(i1, i2)
    assert q1[0] == pytest.approx(16.9, abs=0.1) and q1[-1] == pytest.approx(34.7, abs=0.1)
    assert len(q1) == 1000 and np.all(s1 > 0)
    # a flat I(q) stays flat after the solid-angle correction
    good = np.isfinite(i1) & (i1 > 0)
    assert np.std(i1[good]) / np.mean(i1[good]) < 0.01
    assert sc.integrator(BL.geometry("waxs")) is sc.integrator(BL.geometry("waxs"))


def test_round_trip_recovers_lattice_positions():
    """Render sharp reflections of every phase on the WAXS detector, integrate,
    fit: positions within 0.05 nm⁻¹ of the lattice values."""
    rng = np.random.default_rng(1)
    q = BL.q_grid("waxs")
    geo = BL.geometry("waxs")
    cases = [
        (
            {"Li2S": 0.004},
            {"Li2S": 20.0},
            [("Li2S", (1, 1, 1)), ("Li2S", (2, 0, 0)), ("Li2S", (2, 2, 0))],
        ),
        (
            {"Li6PS5Cl": 0.004},
            {"Li6PS5Cl": 50.0},
            [
                ("Li6PS5Cl", (2, 2, 0)),
                ("Li6PS5Cl", (3, 1, 1)),
                ("Li6PS5Cl", (2, 2, 2)),
                ("Li6PS5Cl", (4, 2, 2)),
            ],
        ),
        (
            {"In": 0.003, "LiIn": 0.003},
            {"In": 40.0, "LiIn": 30.0},
            [("In", (1, 0, 1)), ("In", (0, 0, 2)), ("LiIn", (2, 2, 0)), ("In", (1, 1, 0))],
        ),
        ({"Li": 0.02}, {"Li": 50.0}, [("Li", (1, 1, 0))]),
    ]
    for vols, sizes, peaks in cases:
        fp = Footprint(0, 0, 1.0, 0.088, vols, dict(vols), 1.0, math.nan, 0.02, sizes)
        frame = sf.render(
            BL.integrator("waxs"),
            q,
            sf.scattering_curve(q, fp, instrument_fwhm=WAXS_FWHM),
            BL.counts_scale(),
            rng,
        )
        qq, ii, ss = sc.integrate(frame, geo)
        for phase, hkl in peaks:
            q0 = ph.reflection_q(phase, hkl)
            found = sc.peak_position(qq, ii, (q0 - 0.3, q0 + 0.3), sigma=ss)
            assert found == pytest.approx(q0, abs=0.05), (phase, hkl, found)


@pytest.mark.parametrize("size", [1.0, 1.75])
def test_scherrer_size_from_rendered_frames(size):
    """Li2S nanocrystals in a cathode-like mixture: the size comes back within 10 %
    from the difference to the Li2S-free (OCV) frame, instrument width removed."""
    rng = np.random.default_rng(2)
    q = BL.q_grid("waxs")
    ai = BL.integrator("waxs")

    def frame(li2s, s_vol):
        vols = {"PEEK": 0.03, "Li6PS5Cl": 0.0082, "S": s_vol, "C": 0.003, "Li2S": li2s}
        att = {k: v * 0.35 for k, v in vols.items() if v > 0}
        fp = Footprint(
            0, 0.17, 1.0, 0.088, vols, att, 0.35, size, 0.02, {"Li6PS5Cl": 50.0, "Li2S": size}
        )
        return sc.integrate(
            sf.render(
                ai, q, sf.scattering_curve(q, fp, instrument_fwhm=WAXS_FWHM), BL.counts_scale(), rng
            ),
            BL.geometry("waxs"),
        )

    q0, i0, s0 = frame(0.0, 0.0045)  # OCV: sulfur, no Li2S
    q1, i1, s1 = frame(0.005, 0.0017)  # discharged: part of the sulfur is Li2S
    found = sc.li2s_scherrer_size(q1, i1 - i0, WAXS_FWHM, sigma=np.hypot(s0, s1))
    assert found == pytest.approx(size, rel=0.10)


@pytest.fixture(scope="module")
def discharged_scan():
    """WAXS raster over the cathode (5 x 7 points) at OCV and after the first
    discharge at C/20, rendered and integrated."""
    cell = SaxsCell(seed=0)
    rng = np.random.default_rng(3)
    xs = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    ys = np.round(np.arange(-0.044, 0.5, 0.088), 3)
    geo = BL.geometry("waxs")

    def scan():
        out = []
        for y in ys:
            for x in xs:
                fp = cell.composition_at(x, y, BL.beam_w_mm, BL.beam_h_mm, BL.energy_kev)
                frame = sf.render_point(BL, fp, rng, roles=("waxs",))["waxs"]
                out.append(sc.integrate(frame, geo))
        q = out[0][0]
        return q, np.array([o[1] for o in out]), np.array([o[2] for o in out])

    q, ocv, ocv_s = scan()
    i = cell.c_rate_current()
    cell.advance(cell.time_to_limit(i, 0.6), i)
    q, dis, dis_s = scan()
    return {
        "cell": cell,
        "xs": xs,
        "ys": ys,
        "q": q,
        "ocv": ocv,
        "dis": dis,
        "ocv_s": ocv_s,
        "dis_s": dis_s,
    }


def test_li2s_map_recovers_heterogeneity(discharged_scan):
    d = discharged_scan
    shape = (len(d["ys"]), len(d["xs"]))
    m = sc.li2s_map(d["q"], d["dis"], d["ocv"], shape)
    ys = d["ys"]
    # the row on the steel collector has no reference signal
    assert np.all(np.isnan(m[ys < 0]))
    cath = (ys > 0) & (ys < d["cell"].params.cathode_mm)
    rows = np.full(len(ys), np.nan)
    rows[ys > 0] = m[ys > 0].mean(axis=1)
    inner = rows[cath]
    assert len(inner) == 4
    # centre > edges (collector side and separator side), clearly
    assert min(inner[1], inner[2]) > 1.5 * max(inner[0], inner[3])
    # the separator shows no Li2S
    assert np.all(np.abs(rows[ys > 0.37]) < 0.02)
    # the recovered map follows the model's own footprint-averaged Li2S volumes
    truth = np.array(
        [
            [
                d["cell"].composition_at(x, y, BL.beam_w_mm, BL.beam_h_mm).volumes.get("Li2S", 0.0)
                for x in d["xs"]
            ]
            for y in ys
        ]
    )
    ok = np.isfinite(m) & (truth > 0)
    assert np.corrcoef(m[ok], truth[ok])[0, 1] > 0.95


def test_li2s_size_from_scan_within_10_percent(discharged_scan):
    d = discharged_scan
    cell = d["cell"]
    k = 2 * len(d["xs"]) + 2  # x = 0, second cathode row (cathode centre)
    y = d["ys"][2]
    diff = d["dis"][k] - d["ocv"][k]
    found = sc.li2s_scherrer_size(
        d["q"], diff, WAXS_FWHM, sigma=np.hypot(d["ocv_s"][k], d["dis_s"][k])
    )
    truth = cell.composition_at(0.0, y, BL.beam_w_mm, BL.beam_h_mm, BL.energy_kev).li2s_size_nm
    assert truth <= 1.75
    assert found == pytest.approx(truth, rel=0.10)


def test_anode_liin_220_vanishes_indium_persists():
    cell = SaxsCell(seed=0)
    rng = np.random.default_rng(4)
    geo = BL.geometry("waxs")

    def anode():
        fp = cell.composition_at(0.0, 1.0, BL.beam_w_mm, BL.beam_h_mm, BL.energy_kev)
        return sc.integrate(sf.render_point(BL, fp, rng, roles=("waxs",))["waxs"], geo)

    def area(curve, q0):
        q, i, s = curve
        return sc.fit_peak(q, i, (q0 - 0.3, q0 + 0.3), sigma=s).area

    q_liin = ph.reflection_q("LiIn", (2, 2, 0))
    q_in = ph.reflection_q("In", (1, 0, 1))
    q_lpsc = ph.reflection_q("Li6PS5Cl", (3, 1, 1))
    before = anode()
    i = cell.c_rate_current()
    cell.advance(cell.time_to_limit(i, 0.6), i)
    after = anode()
    cell.advance(cell.time + cell.time_to_limit(-i, 2.4), -i)
    charged = anode()
    assert area(after, q_liin) < 0.3 * area(before, q_liin)
    assert area(charged, q_liin) < 0.3 * area(before, q_liin)  # does not come back
    assert area(before, q_in) > 0 and area(after, q_in) > area(before, q_in) > 0
    assert (
        area(after, q_in) > area(charged, q_in) > area(before, q_in)
    )  # varies with (de)lithiation
    # the electrolyte in the anode composite stays within 10 %
    assert area(charged, q_lpsc) == pytest.approx(area(before, q_lpsc), rel=0.10)


def test_saxs_frames_stable_through_discharge():
    """Render and integrate SAXS frames of a cathode-centre pixel at OCV and after
    the discharge: the 0.2–1 nm⁻¹ window changes by a few per cent only."""
    cell = SaxsCell(seed=0)
    rng = np.random.default_rng(5)
    geo = BL.geometry("saxs")

    def saxs():
        fp = cell.composition_at(0.0, 0.175, BL.beam_w_mm, BL.beam_h_mm, BL.energy_kev)
        frame = sf.render_point(BL, fp, rng, roles=("saxs",))["saxs"]
        return sc.integrate(frame, geo, mask=mask)

    mask = sc.beamstop_mask(geo, BL.saxs.beamstop_radius_m)
    assert mask.sum() > 20 and mask is sc.beamstop_mask(geo, BL.saxs.beamstop_radius_m)
    q, i0, _ = saxs()
    assert q[0] == pytest.approx(0.03, rel=0.05) and q[-1] == pytest.approx(6.71, rel=0.05)
    assert np.all(i0 > 0)  # nothing shadowed left in the curve
    i = cell.c_rate_current()
    cell.advance(cell.time_to_limit(i, 0.6), i)
    q, i1, _ = saxs()
    m = sc.saxs_map(q, [i1], (1, 1), reference=[i0])
    assert abs(m[0, 0]) < 0.04
