"""Every plan checks every argument when it is called, before a RunEngine sees it.

The stations here are the project's station dataclasses filled with ophyd's
simulated devices (``Signal``, ``EnumSignal``, ``SoftPositioner``) that publish
the limits the IOCs publish: nothing talks Channel Access.
"""

from __future__ import annotations

import math

import pytest
from bluesky.utils import is_plan
from ophyd import Component as Cpt
from ophyd import Device, Signal, SoftPositioner
from ophyd.sim import EnumSignal

from operando.devices.saxs import SaxsStation
from operando.devices.xct import XCTStation
from operando.plans import saxs as saxs_plans
from operando.plans import validation as check
from operando.plans import xct as xct_plans
from operando.plans.alignment import GridBounds
from operando.plans.validation import PlanArgumentError

from ..plan_argument_cases import BASE, CASES, SAXS_PLANS, XCT_PLANS, case_id


class LimitedSignal(Signal):
    """A soft signal with control limits, as an EPICS PV publishes them."""

    def __init__(self, *args, limits=(0, 0), **kwargs):
        super().__init__(*args, **kwargs)
        self._limits = tuple(limits)

    @property
    def limits(self):
        return self._limits


def _motor(limits, egu="mm"):
    return Cpt(SoftPositioner, limits=limits, egu=egu, init_pos=0.0)


class Clock(Device):
    time = Cpt(Signal, value=0.0)


class Pstat(Device):
    current_sp = Cpt(LimitedSignal, value=0.0, limits=(-0.8, 0.8))
    e_min = Cpt(LimitedSignal, value=-10.0, limits=(-10.0, 10.0))
    e_max = Cpt(LimitedSignal, value=10.0, limits=(-10.0, 10.0))
    duration = Cpt(LimitedSignal, value=1.0, limits=(1e-3, 1e8))
    state = Cpt(Signal, value="idle")


class CyclingPstat(Pstat):
    cycles = Cpt(LimitedSignal, value=1, limits=(1, 100))
    c_rate_current = Cpt(Signal, value=2.4e-3)


class Source(Device):
    kv = Cpt(LimitedSignal, value=70.0, limits=(0.0, 70.0))
    filter = Cpt(EnumSignal, value="LE1", enum_strings=check.FILTERS)
    on_rbv = Cpt(Signal, value=0)


class CTCam(Device):
    acquire_time = Cpt(LimitedSignal, value=1.5, limits=(1e-3, 3600.0))
    num_exposures = Cpt(LimitedSignal, value=3, limits=(1, 100))
    objective = Cpt(EnumSignal, value="4X", enum_strings=check.OBJECTIVES)


class CTDet(Device):
    cam = Cpt(CTCam)


class XCTStage(Device):
    th = _motor((-720.0, 720.0), "deg")
    x = _motor((-25.0, 25.0))


class SaxsCam(Device):
    acquire_time = Cpt(LimitedSignal, value=7.0, limits=(1e-3, 3600.0))


class SaxsDet(Device):
    cam = Cpt(SaxsCam)


class SaxsStage(Device):
    x = _motor((-5.0, 5.0))
    y = _motor((-2.0, 3.0))


class Beam(Device):
    config = Cpt(Signal, value="synchrotron")


def make_xct(**overrides) -> XCTStation:
    devices = dict(
        clock=Clock(name="clock"),
        pstat=Pstat(name="pstat"),
        force=Device(name="force"),
        source=Source(name="source"),
        ct_det=CTDet(name="ct_det"),
        stage=XCTStage(name="stage"),
    )
    devices.update(overrides)
    return XCTStation(**devices)


def make_saxs(**overrides) -> SaxsStation:
    devices = dict(
        clock=Clock(name="clock"),
        pstat=CyclingPstat(name="pstat"),
        stage=SaxsStage(name="stage"),
        sample=Device(name="sample"),
        shutter=Device(name="shutter"),
        diode=Device(name="diode"),
        beam=Beam(name="beam"),
        saxs=SaxsDet(name="saxs"),
        waxs=SaxsDet(name="waxs"),
        ring=Device(name="ring"),
    )
    devices.update(overrides)
    return SaxsStation(**devices)


PLANS = {
    "scan3d": xct_plans.scan3d,
    "radiogram": xct_plans.radiogram,
    "plating": xct_plans.plating,
    "postmortem": xct_plans.postmortem,
    "xct_operando": xct_plans.xct_operando,
    "align": saxs_plans.align,
    "background": saxs_plans.background,
    "raster": saxs_plans.raster,
    "saxs_waxs_operando": saxs_plans.saxs_waxs_operando,
}


@pytest.fixture(scope="module")
def stations():
    return {"xct": make_xct(), "saxs": make_saxs()}


def _station(stations, plan):
    return stations["xct" if plan in XCT_PLANS else "saxs"]


def test_the_cases_cover_every_plan_and_more_than_96_kinds():
    assert len(CASES) >= 96
    assert {plan for plan, _, _ in CASES} == set(XCT_PLANS + SAXS_PLANS)
    assert len({case_id(c) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_every_plan_is_a_plan_and_valid_arguments_pass(stations, plan):
    """bluesky (and the queue server) know them as plans; valid arguments give a plan."""
    assert is_plan(PLANS[plan])
    made = PLANS[plan](_station(stations, plan), **BASE[plan])
    assert hasattr(made, "__next__") or hasattr(made, "__iter__")
    close = getattr(made, "close", None)
    if close is not None:
        close()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_argument_rejected_at_the_call(RE, stations, case):
    plan, bad, words = case
    station = _station(stations, plan)
    motors = [station.stage.x, station.stage.th if plan in XCT_PLANS else station.stage.y]
    before = [m.position for m in motors]
    kwargs = dict(BASE[plan], **bad)
    with pytest.raises(PlanArgumentError) as info:
        RE(PLANS[plan](station, **kwargs))  # raises at the call: RE never runs
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert message.startswith(f"{plan}: "), message
    assert "\n" not in message
    assert RE.docs == []
    assert [m.position for m in motors] == before


def test_limits_are_read_from_the_devices():
    """A station whose PVs publish other limits and enum strings gets other checks."""
    cam = CTDet(name="ct_det")
    cam.cam.acquire_time._limits = (1e-3, 10.0)
    cam.cam.objective._metadata["enum_strs"] = ("4X", "50X")
    pstat = Pstat(name="pstat")
    pstat.current_sp._limits = (-1e-5, 1e-5)
    station = make_xct(ct_det=cam, pstat=pstat)
    with pytest.raises(PlanArgumentError, match=r"exposure = 20 s is outside .*\[0\.001, 10\] s"):
        xct_plans.scan3d(station, **dict(BASE["scan3d"], exposure=20.0))
    xct_plans.scan3d(station, **dict(BASE["scan3d"], objective="50X")).close()
    with pytest.raises(PlanArgumentError, match="'20X' is not one of '4X', '50X'"):
        xct_plans.scan3d(station, **dict(BASE["scan3d"], objective="20X"))
    # 100 µA/cm² over ø4 mm is 12.6 µA: more than this potentiostat's 10 µA
    with pytest.raises(
        PlanArgumentError, match=r"plating current = 1\.25664e-05 A .*\[-1e-05, 1e-05\] A"
    ):
        xct_plans.plating(station, current_density=100.0, duration=600.0)


def test_unpublished_limits_fall_back_to_the_documented_ranges():
    cam = CTDet(name="ct_det")
    cam.cam.acquire_time._limits = (0, 0)  # an EPICS PV without control limits
    station = make_xct(ct_det=cam)
    with pytest.raises(PlanArgumentError, match=r"\[0\.001, 3600\] s"):
        xct_plans.scan3d(station, **dict(BASE["scan3d"], exposure=5000.0))


def test_cycling_needs_the_cells_1c_current():
    pstat = CyclingPstat(name="pstat")
    pstat.c_rate_current.put(0.0)
    with pytest.raises(PlanArgumentError, match="1C"):
        saxs_plans.saxs_waxs_operando(make_saxs(pstat=pstat), **BASE["saxs_waxs_operando"])
    pstat.c_rate_current.put(1.0)  # 1 A for 1C: C/1 would be more than the 0.8 A range
    with pytest.raises(PlanArgumentError, match=r"cycling current = 1 A .*\[-0\.8, 0\.8\] A"):
        saxs_plans.saxs_waxs_operando(
            make_saxs(pstat=pstat), **dict(BASE["saxs_waxs_operando"], c_rate=1.0)
        )


def test_the_protocol_check_runs_without_a_station():
    """The command line checks the whole protocol before any IOC exists."""
    kwargs = dict(
        cycles=20,
        current_densities=xct_plans.PAPER_CURRENT_DENSITIES,
        ocv_duration=3 * 3600.0,
        plating_duration=6 * 3600.0,
        radiogram_every=1800.0,
        sample_every=60.0,
        num_projections=1601,
        exposure=1.5,
        images_per_projection=3,
        postmortem_projections=None,
        do_postmortem=True,
        experiment_id=None,
        cell="cell",
        md=None,
    )
    cycles, densities = xct_plans.check_xct_operando(None, **kwargs)
    assert cycles == 20 and densities == [2.0, 20.0, 40.0]
    with pytest.raises(PlanArgumentError, match="does not fit in the OCV step"):
        xct_plans.check_xct_operando(None, **dict(kwargs, num_projections=3000))


def test_grid_bounds_reject_bad_shapes():
    bounds = GridBounds(x=(-2.0, 2.0), y=(0.0, 0.4))
    assert bounds.grid((4, 5))["x_range"] == pytest.approx((-1.6, 1.6))
    for shape in [(2.5, 3), (0, 3), (3,), "3x3"]:
        with pytest.raises(PlanArgumentError, match="shape"):
            bounds.grid(shape)


@pytest.mark.parametrize(
    "bound, value, expected",
    [
        (
            check.Bound(0.1, 1000.0, "µA/cm²"),
            1e6,
            "x = 1e+06 µA/cm² is outside the allowed range [0.1, 1000] µA/cm²",
        ),
        (
            check.Bound(0.0, None, "s", low_open=True),
            0.0,
            "x = 0 s is outside the allowed range (0, inf) s",
        ),
        (
            check.Bound(1, 100, integer=True),
            2.5,
            "x = 2.5 is not an integer; allowed: [1, 100] (integer)",
        ),
        (
            check.Bound(1, 100, integer=True),
            True,
            "x must be an integer in [1, 100] (integer), not True (bool)",
        ),
        (check.Bound(unit="V"), math.nan, "x = nan is not finite; allowed: (-inf, inf) V"),
    ],
)
def test_bound_messages(bound, value, expected):
    with pytest.raises(PlanArgumentError) as info:
        bound.check("x", value)
    assert str(info.value) == expected


def test_bound_intersection_keeps_the_tighter_limits():
    b = check.Bound(0.0, 70.0, "kV").intersect(check.KV)
    assert (b.low, b.high, b.unit) == (1.0, 70.0, "kV")
    b = check.Bound(-10.0, 10.0, "V").intersect(check.Bound(1e-3, None, low_open=True))
    assert str(b) == "(0.001, 10] V"
    assert check.Bound(1, 5, integer=True).check("n", 5.0) == 5


def test_ipython_shows_a_rejected_plan_as_one_line(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        check.install_argument_error_handler(shell)
        shell.user_ns["make_plan"] = lambda: xct_plans.plating(make_xct(), current_density=1e6)
        shell.run_cell("make_plan()")
        out = capsys.readouterr()
        text = (out.out + out.err).strip()
        assert text.splitlines() == [
            "PlanArgumentError: plating: current_density = 1e+06 µA/cm² (a plating current "
            "of 0.126 A) is outside the allowed range [0.1, 1000] µA/cm²"
        ]
        assert "Traceback" not in text
        shell.run_cell("1/0")  # other errors keep their traceback
        out = capsys.readouterr()
        assert "ZeroDivisionError" in out.out + out.err
        assert "Traceback" in out.out + out.err
    finally:
        InteractiveShell.clear_instance()


@pytest.mark.parametrize(
    "argv, words",
    [
        ("run saxs --c-rate 0", ["--c-rate", "0 1/h", "[0.001, 2] 1/h"]),
        ("run saxs --c-rate nan", ["--c-rate", "nan", "not finite"]),
        ("run xct --exposure -1", ["--exposure", "-1 s", "[0.001, 3600] s"]),
        ("run xct --images 1000", ["--images", "1000", "[1, 100] (integer)"]),
        ("run xct --projections 2.5", ["--projections", "'2.5' is not an integer"]),
        ("run xct --cycles 0", ["--cycles", "0"]),
        ("run xct --sample-every inf", ["--sample-every", "inf"]),
        ("run saxs --grid 0x0", ["--grid", "0x0", "[1, 200]"]),
        ("run saxs --grid 100x100", ["--grid", "10000 points"]),
        ("run saxs --raster-every 0", ["--raster-every", "0 s"]),
        ("run xct --time-scale nan", ["--time-scale", "nan"]),
        ("rehearse xct --projections 5000 --exposure 3", ["does not fit in the OCV step"]),
        ("run xct --postmortem-projections 1", ["--postmortem-projections", "1"]),
        ("run saxs --cycles 50", ["the cycling would take", "50 cycles at C/20"]),
        ("run saxs --beamline lab --grid 50x40", ["each raster would take", "80 s"]),
    ],
)
def test_cli_rejects_bad_options_in_one_line(capsys, argv, words):
    from operando.cli import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv.split())
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)


def test_cli_accepts_the_documented_runs():
    from operando.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        "rehearse xct --cycles 2 --projections 61 --postmortem-projections 61".split()
    )
    assert (args.cycles, args.projections, args.exposure, args.images) == (2, 61, 1.5, 3)
    args = parser.parse_args("rehearse saxs --cycles 1 --grid 5x4 --raster-every 3600".split())
    assert args.grid == (4, 5) and args.raster_every == 3600.0
    assert parser.parse_args(["run", "xct"]).cycles == 20
