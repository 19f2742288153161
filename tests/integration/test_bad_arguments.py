"""Bad plan arguments against the real simulators on virtual time, and on the command line.

Every case of ``tests/plan_argument_cases.py`` goes to a real RunEngine
subscribed to a document collector, with the stations' devices connected to
the XCT and SAXS/WAXS IOCs: each must raise ``PlanArgumentError`` at the call,
no document may be emitted, and every motor, the potentiostat's technique, the
source, the shutter and the detectors must read the same from the IOCs after
all of them. The command line rejects bad options before it starts an IOC.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from operando.devices.saxs import make_saxs_station
from operando.devices.xct import make_xct_station
from operando.plans import saxs as saxs_plans
from operando.plans import xct as xct_plans
from operando.plans.validation import PlanArgumentError

from ..plan_argument_cases import BASE, CASES, XCT_PLANS, case_id
from . import ca_client
from .simulators import start_saxs_ioc, start_xct_ioc

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

#: what must not change, read from the IOCs: (PV suffix, reader)
XCT_STATE = [
    *((f"stage:{m}{f}", ca_client.get) for m in "th x y z".split() for f in (".RBV", ".VAL")),
    ("pstat:mode", ca_client.get_enum),
    ("pstat:state", ca_client.get_enum),
    ("pstat:current_sp", ca_client.get),
    ("pstat:duration", ca_client.get),
    ("pstat:e_max", ca_client.get),
    ("src:on_rbv", ca_client.get),
    ("src:kv", ca_client.get),
    ("src:filter", ca_client.get_enum),
    ("det:cam:AcquireTime", ca_client.get),
    ("det:cam:NumExposures", ca_client.get),
    ("det:cam:Objective", ca_client.get_enum),
    ("det:cam:ArrayCounter_RBV", ca_client.get),
    ("det:HDF1:Capture_RBV", ca_client.get),
    ("clock:time", ca_client.get),
]
SAXS_STATE = [
    *((f"stage:{m}{f}", ca_client.get) for m in "xy" for f in (".RBV", ".VAL")),
    ("pstat:mode", ca_client.get_enum),
    ("pstat:state", ca_client.get_enum),
    ("pstat:current_sp", ca_client.get),
    ("pstat:cycles", ca_client.get),
    ("shutter:open_rbv", ca_client.get),
    ("sample:select", ca_client.get_enum),
    ("saxs:cam:AcquireTime", ca_client.get),
    ("waxs:cam:AcquireTime", ca_client.get),
    ("saxs:cam:ArrayCounter_RBV", ca_client.get),
    ("waxs:cam:ArrayCounter_RBV", ca_client.get),
    ("clock:time", ca_client.get),
]


@pytest.fixture(scope="module")
def stations(tmp_path_factory):
    """Both stations on virtual time (nothing advances unless a plan waits)."""
    iocs, made = {}, {}
    try:
        iocs["xct"] = start_xct_ioc(tmp_path_factory.mktemp("xct"), time_scale="virtual")
        iocs["saxs"] = start_saxs_ioc(tmp_path_factory.mktemp("saxs"), time_scale="virtual")
        made["xct"] = make_xct_station(
            iocs["xct"].prefix, write_path=iocs["xct"].frames_dir, timeout=15
        )
        made["saxs"] = make_saxs_station(
            iocs["saxs"].prefix, write_path=iocs["saxs"].frames_dir, timeout=15
        )
        yield made, iocs
    finally:
        for station in made.values():
            for dev in station.devices().values():
                dev.destroy()
        for ioc in iocs.values():
            ioc.stop()


def _state(iocs) -> dict:
    out = {}
    for kind, pvs in (("xct", XCT_STATE), ("saxs", SAXS_STATE)):
        prefix = iocs[kind].prefix
        for suffix, read in pvs:
            out[f"{prefix}{suffix}"] = read(f"{prefix}{suffix}")
    return out


def test_every_bad_argument_rejected_before_a_run_opens(RE, stations):
    made, iocs = stations
    before = _state(iocs)
    assert before[f"{iocs['xct'].prefix}pstat:state"] == "idle"
    problems = []
    for case in CASES:
        plan, bad, words = case
        station = made["xct" if plan in XCT_PLANS else "saxs"]
        try:
            RE(PLANS[plan](station, **dict(BASE[plan], **bad)))
        except PlanArgumentError as err:
            missing = [w for w in words if w not in str(err)]
            if missing or "\n" in str(err):
                problems.append(f"{case_id(case)}: {missing} not in {err}")
        except Exception as err:  # anything else is a failure too
            problems.append(f"{case_id(case)}: {type(err).__name__}: {err}")
        else:
            problems.append(f"{case_id(case)}: accepted")
        if RE.state != "idle":
            problems.append(f"{case_id(case)}: RunEngine left {RE.state}")
    assert problems == []
    assert [name for name, _ in RE.docs] == []  # not a start, not anything
    after = _state(iocs)
    assert after == before


def test_device_limits_come_from_the_iocs(stations):
    """The checks read the IOCs' control limits and enum strings."""
    made, _ = stations
    xct, saxs = made["xct"], made["saxs"]
    assert tuple(xct.ct_det.cam.num_exposures.limits) == (1, 100)
    assert tuple(xct.pstat.current_sp.limits) == (-0.8, 0.8)
    assert "LE1" in xct.source.filter.enum_strs and "20X" in xct.ct_det.cam.objective.enum_strs
    assert tuple(saxs.waxs.cam.acquire_time.limits) == (1e-3, 3600.0)
    with pytest.raises(PlanArgumentError, match=r"'XYZ' is not one of 'None', 'LE1'"):
        xct_plans.scan3d(xct, filter="XYZ")


OPERANDO = str(Path(sys.executable).with_name("operando"))

CLI_CASES = [
    (["run", "saxs", "--c-rate", "0"], ["--c-rate", "0", "[0.001, 2] 1/h"]),
    (["run", "xct", "--time-scale", "nan"], ["--time-scale", "nan"]),
    (["run", "xct", "--exposure", "-1"], ["--exposure", "-1", "[0.001, 3600] s"]),
    (["run", "saxs", "--exposure", "-1"], ["--exposure", "-1"]),
    (["run", "saxs", "--grid", "0x0"], ["--grid", "0x0", "[1, 200]"]),
    (["rehearse", "xct", "--projections", "5000", "--exposure", "3"], ["does not fit in the OCV"]),
    (["run", "saxs", "--cycles", "100"], ["the cycling", "100 cycles", "60.0 d"]),
]


def test_cli_rejects_bad_options_before_any_ioc(tmp_path):
    procs = []
    for i, (args, words) in enumerate(CLI_CASES):
        data = tmp_path / f"data{i}"
        proc = subprocess.Popen(
            [OPERANDO, *args, "--data-dir", str(data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append((args, words, data, proc))
    for args, words, data, proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (args, err)
        assert "error:" in lines[0] and "Traceback" not in err
        for word in words:
            assert word in lines[0], (args, word, lines[0])
        assert out == ""
        assert not data.exists(), args  # no catalog, no IOC log: nothing started
