"""Pure logic of the user session: metadata defaults, run labels, the station
overview's layout, the progress wrapper and the live views on documents."""

import json
import re

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from bluesky import RunEngine  # noqa: E402
from bluesky.plans import grid_scan  # noqa: E402
from ophyd.sim import SynAxis, SynSignal  # noqa: E402

from operando.overview import format_overview  # noqa: E402
from operando.plans.stubs import experiment_md, plain_value  # noqa: E402
from operando.progress import run_label, with_progress  # noqa: E402


def _md(**kw):
    args = dict(technique="xct", step="scan3d", cycle=None, experiment_id=None, cell=None, md=None)
    args.update(kw)
    return experiment_md("scan3d", {"n": 61, "exposure": np.float64(0.5)}, **args)


def test_plan_args_are_values_not_reprs():
    md = _md()
    assert md["plan_args"] == {"n": 61, "exposure": 0.5}
    assert type(md["plan_args"]["exposure"]) is float
    json.dumps(md)


def test_plain_value_of_containers_devices_and_others():
    motor = SynAxis(name="th")
    value = {"r": (0.1, 0.2), "a": np.arange(3), "dev": motor, "none": None, "t": object}
    out = plain_value(value)
    assert out["r"] == [0.1, 0.2] and out["a"] == [0, 1, 2] and out["dev"] == "th"
    assert out["none"] is None and out["t"] == repr(object)
    json.dumps(out)


def test_no_experiment_id_leaves_the_session_default():
    assert "experiment_id" not in _md()
    assert _md(experiment_id="e1")["experiment_id"] == "e1"
    assert _md(experiment_id="e1", md={"experiment_id": "mine"})["experiment_id"] == "mine"


def test_plan_experiment_id_wins_over_RE_md():
    RE = RunEngine({"experiment_id": "session-1"})
    starts = []
    RE.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)

    def plan(eid):
        import bluesky.plan_stubs as bps

        yield from bps.open_run(md=_md(experiment_id=eid))
        yield from bps.close_run()

    RE(plan(None))
    RE(plan("given"))
    assert [s["experiment_id"] for s in starts] == ["session-1", "given"]
    assert [s["scan_id"] for s in starts] == [1, 2]


@pytest.mark.parametrize(
    "start, cycles, label",
    [
        ({"step": "plating", "plan_name": "plating", "cycle": 2}, 5, "cycle 2/5 plating"),
        ({"step": "postmortem", "plan_name": "scan3d", "cycle": None}, 5, "post-mortem scan3d"),
        ({"step": "ocv", "plan_name": "raster", "cycle": 0}, 1, "ocv raster"),
        ({"step": "alignment", "plan_name": "align", "cycle": None}, 1, "alignment"),
        ({"step": "background", "plan_name": "background", "cycle": None}, 1, "background"),
        ({"step": "operando", "plan_name": "raster", "cycle": 1}, None, "cycle 1 operando raster"),
    ],
)
def test_run_labels(start, cycles, label):
    assert run_label(start, cycles) == label


XCT_VALUES = {
    "cell_time": 5400.0,
    "virtual": 1,
    "mode": "CC",
    "state": "running",
    "duration": 21600.0,
    "elapsed": 3600.0,
    "current_sp": 1.5e-6,
    "ewe": 0.0123,
    "current": 1.5e-6,
    "charge": 0.0054,
    "force": 12.345,
    "source_on": 1,
    "kv": 70.0,
    "ua": 100.0,
    "filter": "LE1",
    "ct_exposure": 1.5,
    "ct_images": 3,
    "ct_objective": "4X",
    "positions": {"stage.th": (90.0, "deg"), "stage.x": (0.25, "mm")},
}


def test_overview_block_of_the_xct_station():
    text = format_overview("xct: XCT station", XCT_VALUES)
    lines = text.splitlines()
    assert lines[0] == "xct: XCT station"
    row = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines[2:])
    assert row["cell time"] == "1.500 h (5400.0 s)  virtual time"
    assert "CC  running  1.000 h (3600.0 s) of 6.000 h  set 1.5e-06 A" in row["technique"]
    assert "Ewe +0.0123 V" in text and "I +1.5e-06 A" in text and "charge 0.0054 C" in text
    assert row["force"] == "12.35 N"
    assert "ON  70.0 kV  100.0 µA  filter LE1" in row["source"]
    assert "th 90.0000 deg  x 0.2500 mm" in row["positions"]
    assert "ct_det 1.5 s × 3  objective 4X" in row["detector"]
    assert "shutter" not in text and "diode" not in text
    # one aligned block: every value starts in the same column
    width = max(len(label) for label in row)
    assert all(line[2 + width : 4 + width] == "  " and line[4 + width] != " " for line in lines[2:])


def test_overview_block_of_the_saxs_station_with_unknowns():
    values = {
        "cell_time": 0.0,
        "time_scale": 1.0,
        "mode": "GCPL",
        "state": "running",
        "elapsed": 7200.0,
        "ewe": 2.1,
        "current": -1e-4,
        "capacity": 0.42,
        "half_cycle": 1,
        "direction": "charge",
        "shutter_open": 0,
        "sample_slot": "cell",
        "diode": None,
        "beam": "synchrotron",
        "energy_kev": 8.0,
        "wavelength_A": 1.5498,
        "saxs_exposure": 7.0,
        "waxs_exposure": 7.0,
        "positions": {"stage.x": (None, "")},
    }
    text = format_overview("saxs: SAXS station", values)
    assert "half-cycle 1 charge" in text and "capacity 0.42 mAh" in text
    assert "closed" in text and "transmission ?" in text and "x ?" in text
    assert "synchrotron  8.00 keV  1.5498 Å" in text
    assert "force" not in text and "source" not in text
    assert text.count("detector") == 2


def test_with_progress_shows_the_bar_for_the_plan_only(monkeypatch, capsys):
    import bluesky.plan_stubs as bps

    monkeypatch.setenv("OPERANDO_PROGRESS", "1")  # stderr is not a terminal here
    clock = SynSignal(name="clock_time")

    def plating(duration: float = 7200.0, cycle=None):
        """A plan with the plating's signature."""
        yield from bps.open_run(md={"plan_name": "plating", "step": "plating", "cycle": cycle})
        for t in (0.0, duration / 2, duration):
            clock.put(t)
            yield from bps.trigger_and_read([clock], name="cell")
        yield from bps.close_run()
        return "done"

    wrapped = with_progress(plating)
    assert wrapped.__name__ == "plating" and wrapped.__doc__ == plating.__doc__
    RE = RunEngine({}, call_returns_result=True)
    assert RE(wrapped(duration=3600.0)).plan_result == "done"
    err = capsys.readouterr().err
    assert "plating" in err and "100%" in err and "1.00/1.00 cell-h" in err
    RE(plating())  # unwrapped: no bar
    assert "cell-h" not in capsys.readouterr().err
    # Arguments the total cannot come from: no bar; the plan itself decides.
    assert RE(wrapped(duration=0.0)).plan_result == "done"
    assert "cell-h" not in capsys.readouterr().err


def test_live_map_fills_in_point_by_point(tmp_path):
    from operando.live_views import LiveViews

    x, y = SynAxis(name="stage_x"), SynAxis(name="stage_y")
    diode = SynSignal(
        func=lambda: 0.5 + 0.1 * x.readback.get() + y.readback.get(), name="diode_trans"
    )
    RE = RunEngine({})
    views = LiveViews(tmp_path, save_every=1e9)
    RE.subscribe(views)
    md = {"plan_name": "raster"}
    RE(grid_scan([diode], y, 0.0, 0.3, 3, x, -1.0, 1.0, 4, snake_axes=True, md=md))
    assert not views.errors
    (png,) = views.saved
    summary = json.loads(png.with_suffix(".json").read_text())
    assert summary["points"] == 12 and summary["shape"] == [3, 4]
    assert summary["range"] == pytest.approx([0.4, 0.9])
    assert png.stat().st_size > 5000


def test_live_views_ignore_plans_they_do_not_know(tmp_path):
    from bluesky.plans import count

    from operando.live_views import LiveViews

    RE = RunEngine({})
    views = LiveViews(tmp_path)
    RE.subscribe(views)
    RE(count([SynSignal(name="s")], 3))
    assert views.saved == [] and not views.errors and list(tmp_path.iterdir()) == []


def test_latest_radiogram_flat_field_corrected_from_the_hdf5_file(tmp_path):
    import h5py

    from operando.live_views import LiveViews

    dark = np.full((8, 10), 100, np.uint16)
    flat = np.full((8, 10), 1100, np.uint16)
    sample = np.linspace(0.2, 0.9, 80).reshape(8, 10)
    frames = [dark, flat] + [(100 + 1000 * sample * k / 3).astype(np.uint16) for k in (1, 2, 3)]
    path = tmp_path / "ct_det_000000.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=np.stack(frames))
    views = LiveViews(tmp_path / "plots", redraw_every=0.0)
    start = {"uid": "u" * 32, "time": 0, "scan_id": 7, "plan_name": "plating"}
    start.update(step="plating", cycle=2, detectors=["ct_det"])
    views("start", start)
    views("stream_resource", {
        "uid": "r1", "run_start": start["uid"], "data_key": "ct_det_image",
        "mimetype": "application/x-hdf5", "uri": f"file://localhost{path}",
        "parameters": {"dataset": "/entry/data/data"},
    })  # fmt: skip
    seq = {}
    for i, stream in enumerate(["dark", "flat", "primary", "primary", "primary"]):
        desc = f"d-{stream}"
        if desc not in seq:
            seq[desc] = 0
            views("descriptor", {
                "uid": desc, "run_start": start["uid"], "name": stream, "time": 0,
                "data_keys": {"ct_det_image": {}, "clock_time": {}},
            })  # fmt: skip
        seq[desc] += 1
        views("stream_datum", {
            "uid": f"r1/{i}", "stream_resource": "r1", "descriptor": desc,
            "indices": {"start": i, "stop": i + 1}, "seq_nums": {"start": 0, "stop": 0},
        })  # fmt: skip
        views("event", {
            "uid": f"e{i}", "descriptor": desc, "time": 0, "seq_num": seq[desc],
            "data": {"clock_time": 600.0 * i}, "timestamps": {}, "filled": {},
        })  # fmt: skip
    views("stop", {"uid": "s", "run_start": start["uid"], "time": 0, "exit_status": "success"})
    assert not views.errors, views.errors
    by_view = {p.name.split("-")[2]: p for p in views.saved}
    assert set(by_view) == {"cell", "image"} and by_view["image"].name.startswith("0007-plating")
    summary = json.loads(by_view["image"].with_suffix(".json").read_text())
    assert summary["frames"] == 3 and summary["shape"] == [8, 10]
    # The last radiogram (k = 3) corrected: the sample's transmission itself.
    assert summary["range"] == pytest.approx([0.2, 0.9], abs=0.002)
    assert summary["std"] == pytest.approx(sample.std(), abs=0.002)
