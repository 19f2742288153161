"""The IPython profile: user sessions on both stations (virtual time) into Tiled.

The sessions are real ``ipython --profile-dir=profile_collection`` subprocesses;
the simulators (XCT and SAXS/WAXS, on virtual time) and the Tiled server are
subprocesses too. Checked: runs and their metadata in Tiled, ``scan_id``
counting on in a second session (``RE.md`` persisted), the session's
experiment id, the progress bar, the live plots' PNGs, the magics and the
station overview.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiled.client import from_uri

from operando.ioc_process import random_prefix

from .simulators import start_saxs_ioc, start_xct_ioc

ROOT = Path(__file__).resolve().parents[2]
RASTER = "x_range=(-2.0, 2.0), y_range=(0.05, 0.35), exposure=1.0"


@pytest.fixture(scope="module")
def stations(tiled_server):
    """Both simulators on virtual time, writing where the Tiled server reads."""
    base = tiled_server.layout.frames / f"profile-{random_prefix('p')[:-1]}"
    xct = start_xct_ioc(base / "xct", time_scale="virtual")
    try:
        saxs = start_saxs_ioc(base / "saxs", time_scale="virtual")
    except Exception:
        xct.stop()
        raise
    yield {"xct": xct, "saxs": saxs, "base": base}
    saxs.stop()
    xct.stop()


def _ipython(code: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    ipython = Path(sys.executable).with_name("ipython")
    proc = subprocess.run(
        [
            str(ipython),
            "--profile-dir",
            str(ROOT / "profile_collection"),
            "--no-banner",
            "--colors=NoColor",
            "--HistoryManager.hist_file=:memory:",
            "-c",
            code,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "LIVE_VIEW_ERRORS []" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _env(stations, tiled_server, data_dir: Path, tmp_path: Path, **extra) -> dict:
    env = dict(os.environ)
    env.pop("OPERANDO_EXPERIMENT_ID", None)
    env.update(
        {
            "OPERANDO_XCT_PREFIX": stations["xct"].prefix,
            "OPERANDO_SAXS_PREFIX": stations["saxs"].prefix,
            "OPERANDO_TILED_URI": tiled_server.uri,
            "TILED_API_KEY": tiled_server.api_key,
            "OPERANDO_DATA_DIR": str(data_dir),
            "MPLBACKEND": "Agg",
            "IPYTHONDIR": str(tmp_path / "ipython"),
            **extra,
        }
    )
    return env


def _tagged(proc, tag: str) -> list[str]:
    return [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith(tag + " ")]


def _summary(plots: Path, plan: str, view: str, uid: str) -> dict:
    matches = list(plots.glob(f"*-{plan}-{view}-{uid[:8]}.json"))
    assert len(matches) == 1, sorted(p.name for p in plots.iterdir())
    png = matches[0].with_suffix(".png")
    assert png.stat().st_size > 5000
    return json.loads(matches[0].read_text())


def _png_not_blank(path: Path) -> None:
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img[..., :3].std() > 0.05


SESSION_1 = f"""
%wa motors
%wh
print('SCAN3D', RE(scan3d(xct, num_projections=3, images_per_projection=1, exposure=0.2,
                          num_darks=1, num_flats=1, experiment_id='from-profile')).run_start_uids[0])
print('RUNS', RE(raster(saxs, {RASTER}, shape=(3, 4), step="ocv", cycle=0)).run_start_uids[0],
      RE(plating(xct, current_density=40.0, duration=1800.0, radiogram_every=600.0,
                 sample_every=120.0, exposure=0.5, images_per_radiogram=1,
                 num_darks=1, num_flats=1)).run_start_uids[0])
print('SESSION', RE.md['experiment_id'], RE.md['scan_id'])
print('LIVE_VIEW_ERRORS', RE.live_views.errors)
"""

SESSION_2 = f"""
%mov saxs.stage.x 0.5
print('MOVED', saxs.stage.x.position)
%ct
RE.md['experiment_id'] = 'by-hand'
print('RUNS', RE(raster(saxs, {RASTER}, shape=(2, 2))).run_start_uids[0],
      RE(raster(saxs, {RASTER}, shape=(2, 2), experiment_id='given')).run_start_uids[0])
print('SESSION', RE.md['experiment_id'], RE.md['scan_id'])
print('LIVE_VIEW_ERRORS', RE.live_views.errors)
"""


def test_two_sessions_on_both_stations(stations, tiled_server, tmp_path):
    """Session 1: %wa, %wh, a 3D scan, a raster, a plating; session 2 on the same
    data directory: %mov and two rasters."""
    data_dir = stations["base"] / "session-data"
    plots = tmp_path / "plots"
    env = _env(
        stations,
        tiled_server,
        data_dir,
        tmp_path,
        OPERANDO_PROGRESS="1",
        OPERANDO_LIVE_PLOTS=str(plots),
    )
    first = _ipython(SESSION_1, env, tmp_path)
    out = first.stdout + first.stderr
    ((scan_uid,),) = _tagged(first, "SCAN3D")
    ((raster_uid, plating_uid),) = _tagged(first, "RUNS")
    ((experiment_id, last_scan_id),) = _tagged(first, "SESSION")
    assert re.fullmatch(r"session-\d{8}-\d{6}", experiment_id)

    # %wa: the labelled motors of both stations, the SAXS ones through the station object.
    assert "saxs.stage.x" in out and "stage.th" in out
    # %wh: one block per station, the cell and the beam in it.
    for text in ("XCT", "SAXS", "cell time", "Ewe", "force", "source", "shutter", "diode"):
        assert text in out, text
    # The progress bar of the plating: its label, its unit, run to the end.
    bar = [line for line in re.split(r"[\r\n]", first.stderr) if "cell-h" in line]
    assert bar and "plating" in bar[-1] and "100%" in bar[-1], bar[-3:]

    client = from_uri(tiled_server.uri, api_key=tiled_server.api_key, structure_clients="numpy")
    scan = client["raw"][scan_uid]
    start = scan.metadata["start"]
    assert start["experiment_id"] == "from-profile"  # the plan's id wins over the session's
    assert start["plan_args"]["num_projections"] == 3 and start["plan_args"]["exposure"] == 0.2
    assert scan["primary"]["ct_det_image"].read().shape[0] == 3
    raster_run, plating_run = client["raw"][raster_uid], client["raw"][plating_uid]
    rs, ps = raster_run.metadata["start"], plating_run.metadata["start"]
    assert rs["experiment_id"] == ps["experiment_id"] == experiment_id
    # plan_args as values, not reprs
    assert rs["plan_args"]["shape"] == [3, 4] and rs["plan_args"]["exposure"] == 1.0
    assert rs["plan_args"]["x_range"] == [-2.0, 2.0] and rs["plan_args"]["snake"] is True
    assert ps["plan_args"]["duration"] == 1800.0 and ps["plan_args"]["current_density"] == 40.0
    assert ps["scan_id"] == rs["scan_id"] + 1 == start["scan_id"] + 2 == int(last_scan_id)
    trans = raster_run["primary"]["diode_trans"].read()
    assert len(trans) == 12
    assert len(plating_run["primary"]["ct_det_image"].read()) == 4
    cell_time = plating_run["cell"]["clock_time"].read()
    assert len(cell_time) >= 1800 / 120

    # Live plots: the map filled point by point, force and Ewe at every cell
    # sample, the latest radiogram (flat-field corrected, not blank).
    m = _summary(plots, "raster", "map", raster_uid)
    assert m["points"] == 12 and m["shape"] == [3, 4]
    assert m["range"] == pytest.approx([float(np.min(trans)), float(np.max(trans))])
    c = _summary(plots, "plating", "cell", plating_uid)
    assert c["fields"] == ["force_force", "pstat_ewe"]
    assert c["points"] == [len(cell_time), len(cell_time)]
    img = _summary(plots, "plating", "image", plating_uid)
    assert img["frames"] == 4 and img["std"] > 0
    for png in plots.glob("*.png"):
        _png_not_blank(png)

    # A second session on the same data directory: scan_id counts on, the
    # session's experiment id set by hand, a plan's own id wins.
    second = _ipython(SESSION_2, env, tmp_path)
    ((moved,),) = _tagged(second, "MOVED")
    assert float(moved) == pytest.approx(0.5, abs=1e-3)  # %mov, on virtual time
    # %ct: the devices labelled "detectors", the scalar ones printed
    assert re.search(r"^force_force +\d", second.stdout, re.M), second.stdout[-3000:]
    assert re.search(r"^diode_trans +\d", second.stdout, re.M), second.stdout[-3000:]
    ((by_hand, given),) = _tagged(second, "RUNS")
    ((eid2, last2),) = _tagged(second, "SESSION")
    s1, s2 = client["raw"][by_hand].metadata["start"], client["raw"][given].metadata["start"]
    assert s1["scan_id"] == int(last_scan_id) + 1 and s2["scan_id"] == s1["scan_id"] + 1
    assert int(last2) == s2["scan_id"]
    assert s1["experiment_id"] == "by-hand" == eid2 and s2["experiment_id"] == "given"
    assert len(list(plots.glob("*-raster-map-*.png"))) == 3
