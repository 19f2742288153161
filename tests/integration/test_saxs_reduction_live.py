"""Live and offline SAXS/WAXS reduction against a synthetic experiment.

No IOC: the frames are rendered from the cell model (``iocs.physics``) and
written to SWMR HDF5 files under the Tiled server's readable storage, as the
detector's file writer does; the documents are composed with ``event_model``
in the RunEngine's order (start, descriptor, stream_resource, stream_datum,
event, stop) and go to both ``TiledWriter`` (the raw runs) and the live reducer.

The experiment: background (empty cell), one OCV raster, then three operando
rasters of a 4 x 5 snaking grid over the cathode — 40 % into the first
discharge, at its end, and in the middle of the charge.  The simulators are
used here only to make frames and to compare with the truth.
"""

from __future__ import annotations

import ast
import io
import json
import math
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from event_model import compose_run

from operando.callbacks.core import FIGURES_KEY
from operando.callbacks.saxs import experiment as saxs_experiment
from operando.callbacks.saxs import figures as saxs_figures
from operando.callbacks.saxs import live as saxs_live
from operando.callbacks.saxs import model as saxs_model
from operando.callbacks.saxs import offline as saxs_offline
from operando.callbacks.saxs import pipeline as saxs_pipeline
from operando.callbacks.saxs import science as sc
from operando.callbacks.saxs import store as saxs_store
from operando.callbacks.saxs.live import SAXSLiveReducer
from operando.callbacks.saxs.offline import reduce_experiment
from operando.iocs.hdf5_writer import HDF5FrameWriter
from operando.iocs.physics import phases as ph
from operando.iocs.physics import scattering_frames as sf
from operando.iocs.physics.saxs_cell import SaxsCell
from operando.tiled_server import runs_container

pytestmark = pytest.mark.slow  # a whole (short) experiment, reduced live and offline

BL = sf.SYNCHROTRON
XS = np.linspace(-2.0, 2.0, 5)
YS = np.array([0.044, 0.131, 0.219, 0.306])  # the cathode (0–0.35 mm), beam 88 µm high
SHAPE = (len(YS), len(XS))
EXTENTS = [[float(YS[0]), float(YS[-1])], [float(XS[0]), float(XS[-1])]]
DT = 10.0  # cell seconds per point (7 s exposure + moves)
T_CYCLING = 300.0


# ------------------------------------------------------------------------------ synthetic runs
class Potentiostat:
    """Galvanostatic cycling of the model cell, discharge first, one cycle, as
    the simulator's potentiostat publishes it (capacity of the present half cycle)."""

    def __init__(self, cell: SaxsCell):
        self.cell = cell
        self.i = cell.c_rate_current()
        self.current = 0.0
        self.half = 0
        self.direction = "rest"

    def start_cycling(self):
        self.current, self.direction = self.i, "discharge"

    def advance_to(self, t_end: float):
        cell = self.cell
        while cell.time < t_end:
            if self.current == 0.0:
                cell.advance(t_end, 0.0)
                return
            limit = 0.6 if self.current > 0 else 2.4
            ttl = cell.time_to_limit(self.current, limit)
            if cell.time + ttl >= t_end:
                cell.advance(t_end, self.current)
                return
            cell.advance(cell.time + ttl, self.current)
            if self.current > 0:
                self.current, self.half, self.direction = -self.i, 1, "charge"
            else:
                self.current, self.direction = 0.0, "rest"

    @property
    def capacity(self) -> float:
        """Capacity of the present half cycle (0 just after a turn, before any charge passed)."""
        sign = int(np.sign(self.current))
        if sign != 0 and sign != self.cell._direction:
            return 0.0
        return self.cell.half_cycle_capacity_mah


class SyntheticExperiment:
    def __init__(self, frames_dir: Path, experiment_id: str, seed: int = 7):
        self.dir = frames_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.eid = experiment_id
        self.cell = SaxsCell(seed=0)
        self.pstat = Potentiostat(self.cell)
        self.rng = np.random.default_rng(seed)
        self.truth: dict[str, dict] = {}
        self.poni = {
            role: BL.write_poni(role, self.dir / f"{role}.poni") for role in ("saxs", "waxs")
        }
        self.geometry = {role: BL.geometry(role) for role in ("saxs", "waxs")}

    def _configuration(self):
        conf = {}
        for role in ("saxs", "waxs"):
            data = {
                f"{role}_cam_geometry": json.dumps(self.geometry[role]),
                f"{role}_cam_poni_file": self.poni[role],
                f"{role}_cam_acquire_time": BL.exposure_s,
            }
            if role == "saxs":
                data["saxs_cam_beamstop_radius"] = BL.saxs.beamstop_radius_m
            conf[role] = {
                "data": data,
                "timestamps": {k: time.time() for k in data},
                "data_keys": {
                    k: {
                        "source": f"PV:{k}",
                        "dtype": "string" if isinstance(v, str) else "number",
                        "shape": [],
                    }
                    for k, v in data.items()
                },
            }
        return conf

    def _data_keys(self):
        dk = {}
        for role in ("saxs", "waxs"):
            rows, cols = BL.integrator(role).detector.shape
            dk[f"{role}_image"] = {
                "source": f"PV:{role}:HDF1:FullFileName_RBV",
                "shape": [rows, cols],
                "dtype": "array",
                "dtype_numpy": "<i4",
                "external": "STREAM:",
                "object_name": role,
            }
        for key, obj in (
            ("diode_trans", "diode"),
            ("stage_x", "stage"),
            ("stage_y", "stage"),
            ("clock_time", "clock"),
            ("pstat_ewe", "pstat"),
            ("pstat_current", "pstat"),
            ("pstat_capacity", "pstat"),
            ("pstat_charge", "pstat"),
            ("pstat_half_cycle", "pstat"),
        ):
            dk[key] = {"source": f"PV:{key}", "shape": [], "dtype": "number", "object_name": obj}
        dk["pstat_direction"] = {
            "source": "PV:dir",
            "shape": [],
            "dtype": "string",
            "object_name": "pstat",
        }
        return dk

    def run(self, step: str, *, cycle=None, raster_index=None, empty=False):
        """Yield the documents of one run, rendering and writing frames as it goes."""
        if step == "background":
            points = [(0.0, float(YS.mean()))]
            md = {"num_points": 1}
        else:
            points = [(x, y) for i, y in enumerate(YS) for x in (XS if i % 2 == 0 else XS[::-1])]
            md = {
                "shape": list(SHAPE),
                "extents": EXTENTS,
                "snaking": [False, True],
                "num_points": len(points),
                "raster_index": raster_index,
            }
        run = compose_run(
            metadata=dict(
                md,
                technique="saxs_waxs",
                step=step,
                cycle=cycle,
                experiment_id=self.eid,
                beamline="synchrotron",
                plan_name="raster" if step != "background" else "background",
                cell="Li-In|Li6PS5Cl|S-C",
            )
        )
        uid = run.start_doc["uid"]
        yield "start", run.start_doc
        desc = run.compose_descriptor(
            name="primary",
            data_keys=self._data_keys(),
            configuration=self._configuration(),
            object_keys={
                "saxs": ["saxs_image"],
                "waxs": ["waxs_image"],
                "diode": ["diode_trans"],
                "stage": ["stage_x", "stage_y"],
                "clock": ["clock_time"],
                "pstat": [k for k in self._data_keys() if k.startswith("pstat")],
            },
        )
        yield "descriptor", desc.descriptor_doc
        writers, bundles = {}, {}
        truth = {"step": step, "points": [], "cell": []}
        for k, (x, y) in enumerate(points):
            self.pstat.advance_to(self.cell.time + DT)
            fp = self.cell.composition_at(
                x, y, BL.beam_w_mm, BL.beam_h_mm, BL.energy_kev, empty=empty
            )
            frames = sf.render_point(BL, fp, self.rng)
            for role in ("saxs", "waxs"):
                if role not in writers:
                    w = HDF5FrameWriter(frames[role].shape, dtype=np.int32)
                    path = w.open(self.dir / f"{uid[:8]}-{role}.h5")
                    writers[role] = w
                    bundles[role] = run.compose_stream_resource(
                        mimetype="application/x-hdf5",
                        uri=f"file://localhost{path}",
                        data_key=f"{role}_image",
                        parameters={
                            "dataset": "/entry/data/data",
                            "chunk_shape": [1, *frames[role].shape],
                        },
                    )
                    yield "stream_resource", bundles[role].stream_resource_doc
                index = writers[role].append(frames[role])
                yield (
                    "stream_datum",
                    bundles[role].compose_stream_datum(
                        indices={"start": index, "stop": index + 1},
                        seq_nums={"start": k + 1, "stop": k + 2},
                        descriptor=desc.descriptor_doc,
                    ),
                )
            noise = 1.0 + 0.002 * self.rng.standard_normal()
            data = {
                "diode_trans": fp.transmission * noise,
                "stage_x": x + 1e-4 * self.rng.standard_normal(),
                "stage_y": y + 1e-5 * self.rng.standard_normal(),
                "clock_time": self.cell.time,
                "pstat_ewe": self.cell.voltage(self.pstat.current),
                "pstat_current": self.pstat.current,
                "pstat_capacity": self.pstat.capacity,
                "pstat_charge": self.cell.capacity_mah * 3.6,
                "pstat_half_cycle": self.pstat.half,
                "pstat_direction": self.pstat.direction,
            }
            now = time.time()
            yield (
                "event",
                desc.compose_event(data=data, timestamps={k: now for k in data}, seq_num=k + 1),
            )
            truth["points"].append(
                {
                    "x": x,
                    "y": y,
                    "li2s_volume": fp.volumes.get("Li2S", 0.0),
                    "li2s_size_nm": fp.li2s_size_nm,
                    "transmission": fp.transmission,
                }
            )
            truth["cell"].append(
                {
                    "time": self.cell.time,
                    "capacity_mah": self.cell.capacity_mah,
                    "sod": self.cell.state_of_discharge,
                }
            )
        yield "stop", run.compose_stop()
        for w in writers.values():
            w.close()
        self.truth[uid] = truth

    def experiment(self):
        yield from self.run("background", empty=True)
        yield from self.run("ocv", cycle=0, raster_index=0)
        self.pstat.advance_to(T_CYCLING)
        self.pstat.start_cycling()
        t_dis = self.cell.time_to_limit(self.pstat.i, 0.6)
        self.t_discharge_end = T_CYCLING + t_dis
        n = SHAPE[0] * SHAPE[1]
        self.pstat.advance_to(T_CYCLING + 0.4 * t_dis)
        yield from self.run("operando", cycle=1, raster_index=0)
        self.pstat.advance_to(self.t_discharge_end - n * DT - 5.0)
        yield from self.run("operando", cycle=1, raster_index=1)
        self.pstat.advance_to(self.t_discharge_end + 1.5 * 3600.0)
        yield from self.run("operando", cycle=1, raster_index=2)
        self.q1_truth = self.cell.discharge_capacities_mah[0]


# ------------------------------------------------------------------------------ fixtures
def _plain_client(server):
    from tiled.client import from_uri

    return from_uri(server.uri, api_key=server.api_key, structure_clients="numpy")


def _snapshot(client, uids, eid):
    red = client["reduced"]
    out = {}
    for uid in uids:
        node = red[uid]
        out[uid] = {
            "metadata": dict(node.metadata),
            **{k: node[k].read() for k in node if k != "points"},
            "points": node["points"].read(),
        }
    node = red[eid]
    out[eid] = {
        "metadata": dict(node.metadata),
        **{k: node[k].read() for k in node if k != FIGURES_KEY},
    }
    return out


@pytest.fixture(scope="module")
def experiment(tiled_server, tmp_path_factory):
    from bluesky_tiled_plugins import TiledWriter

    eid = f"saxs-test-{uuid.uuid4().hex[:6]}"
    frames_dir = tiled_server.layout.frames / eid
    figures = tmp_path_factory.mktemp("saxs-figures")
    client = tiled_server.client()
    writer = TiledWriter(runs_container(client))
    reducer = SAXSLiveReducer(client, figures_dir=figures / "live", npt=1000)
    sim = SyntheticExperiment(frames_dir, eid)
    t0 = time.perf_counter()
    uids = []
    for name, doc in sim.experiment():
        writer(name, doc)
        reducer(name, doc)
        if name == "start":
            uids.append(doc["uid"])
    t_acq = time.perf_counter() - t0
    assert reducer.flush(timeout=120)
    reducer.close(timeout=60)
    t_live = time.perf_counter() - t0
    plain = _plain_client(tiled_server)
    yield {
        "eid": eid,
        "sim": sim,
        "uids": uids,
        "reducer": reducer,
        "client": client,
        "plain": plain,
        "live": _snapshot(plain, uids, eid),
        "figures": figures,
        "frames_dir": frames_dir,
        "seconds": {"acquisition": t_acq, "live_done": t_live},
    }
    shutil.rmtree(frames_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def offline(experiment):
    # any raw uid of the experiment finds the whole experiment
    summary = reduce_experiment(
        experiment["client"], experiment["uids"][2], figures_dir=experiment["figures"] / "offline"
    )
    return {
        "summary": summary,
        "stored": _snapshot(experiment["plain"], experiment["uids"], experiment["eid"]),
    }


def _run(experiment, step, index=None):
    for uid in experiment["uids"]:
        t = experiment["sim"].truth[uid]
        if t["step"] == step:
            md = experiment["live"][uid]["metadata"]
            if index is None or md["raster_index"] == index:
                return uid
    raise KeyError((step, index))


# ------------------------------------------------------------------------------ tests
def test_callbacks_do_not_import_the_simulators():
    for mod in (
        saxs_model,
        saxs_pipeline,
        saxs_experiment,
        saxs_store,
        saxs_live,
        saxs_offline,
        saxs_figures,
    ):
        for node in ast.walk(ast.parse(Path(mod.__file__).read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any("iocs" in n for n in names), (mod.__name__, names)


def test_live_reduction_ran_cleanly(experiment):
    r = experiment["reducer"]
    assert r.errors == []
    assert set(experiment["uids"]) <= set(r.written)
    # the raw runs are in Tiled too, frames readable by a plain client
    raw = experiment["plain"]["raw"][experiment["uids"][1]]
    assert raw.metadata["start"]["step"] == "ocv"
    conf = raw["primary"].metadata["configuration"]
    assert json.loads(conf["saxs"]["data"]["saxs_cam_geometry"])["detector"] == "Pilatus1M"
    assert raw["primary"]["waxs_image"].shape[0] == 20


def test_reduced_curves_read_back_with_plain_client(experiment):
    live = experiment["live"]
    bg_uid = _run(experiment, "background")
    bg = live[bg_uid]
    assert bg["metadata"]["raw_uid"] == bg_uid and bg["metadata"]["step"] == "background"
    assert bg["metadata"]["reduction"]["name"] == saxs_model.REDUCTION_NAME
    assert bg["metadata"]["reduction"]["parameters"]["npt"] == 1000
    assert bg["q_saxs"].shape == (1000,) and bg["saxs"].shape == (1, 1000)
    assert bg["q_saxs"][0] == pytest.approx(0.03, rel=0.1) and bg["q_saxs"][-1] == pytest.approx(
        6.71, rel=0.02
    )
    assert bg["q_waxs"][0] == pytest.approx(16.9, abs=0.1) and bg["q_waxs"][-1] == pytest.approx(
        34.7, abs=0.1
    )
    # the stored curves are pyFAI's, recomputed here from the HDF5 frames
    frames_dir = experiment["frames_dir"]
    geo_s, geo_w = BL.geometry("saxs"), BL.geometry("waxs")

    def frames(uid, role):
        import h5py

        with h5py.File(frames_dir / f"{uid[:8]}-{role}.h5", "r") as f:
            return f["/entry/data/data"][()]

    qs, i_s, _, qw, i_w, _ = sc.reduce_frames(
        frames(bg_uid, "saxs"),
        frames(bg_uid, "waxs"),
        geo_s,
        geo_w,
        beamstop_radius=BL.saxs.beamstop_radius_m,
        npt=1000,
    )
    np.testing.assert_allclose(bg["saxs"], i_s, rtol=1e-12)
    np.testing.assert_allclose(bg["waxs"], i_w, rtol=1e-12)
    # an operando point: integrated, minus the empty cell scaled by the diode ratio
    uid = _run(experiment, "operando", 1)
    op = live[uid]
    assert op["saxs"].shape == (20, 1000) and op["waxs_sigma"].shape == (20, 1000)
    assert op["li2s_map"].shape == SHAPE and op["li2s_size_nm"].shape == SHAPE
    pts = op["points"]
    k = 7
    _, _, _, _, w, _ = sc.reduce_frames(None, frames(uid, "waxs")[k : k + 1], None, geo_w, npt=1000)
    t_bg = live[bg_uid]["points"]["diode"].mean()
    expected = w[0] - pts["diode"][k] / t_bg * i_w[0]
    np.testing.assert_allclose(op["waxs"][k], expected, rtol=1e-9, atol=1e-9 * np.nanmax(expected))
    md = op["metadata"]
    assert (md["experiment_id"], md["step"], md["cycle"], md["raster_index"], md["technique"]) == (
        experiment["eid"],
        "operando",
        1,
        1,
        "saxs_waxs",
    )
    assert md["background_uid"] == bg_uid and md["reference_uids"] == [_run(experiment, "ocv")]
    # grid indices from the snaking positions
    assert pts["row"].tolist() == [i for i in range(4) for _ in range(5)]
    assert pts["col"].tolist()[:10] == [0, 1, 2, 3, 4, 4, 3, 2, 1, 0]


def test_li2s_peak_at_the_lattice_position(experiment):
    q111 = ph.reflection_q("Li2S", (1, 1, 1))
    assert q111 == pytest.approx(sc.LI2S_Q111, abs=1e-3)
    for index in (0, 1, 2):
        pts = experiment["live"][_run(experiment, "operando", index)]["points"]
        found = pts["li2s_q111"].to_numpy()
        assert np.isfinite(found).sum() >= 15
        assert np.nanmax(np.abs(found - q111)) < 0.05, (index, found)


def test_scherrer_size_within_10_percent(experiment):
    for index in (0, 1, 2):
        uid = _run(experiment, "operando", index)
        pts = experiment["live"][uid]["points"]
        truth = np.array([p["li2s_size_nm"] for p in experiment["sim"].truth[uid]["points"]])
        found = pts["li2s_size_nm"].to_numpy()
        ok = np.isfinite(found)
        assert ok.sum() >= 15
        np.testing.assert_allclose(found[ok], truth[ok], rtol=0.10)
        if index == 1:
            assert np.nanmax(found) <= 1.75 * 1.05  # grows to <= 1.75 nm at full discharge
            assert np.nanmax(found) > 1.5


def test_li2s_map_heterogeneous_as_simulated(experiment):
    live = experiment["live"]
    maps = [live[_run(experiment, "operando", i)]["li2s_map"] for i in (0, 1, 2)]
    full = maps[1]
    rows = full.mean(axis=1)
    assert min(rows[1], rows[2]) > 1.5 * max(
        rows[0], rows[3]
    )  # centre > collector and separator sides
    uid = _run(experiment, "operando", 1)
    truth = np.zeros(SHAPE)
    pts = live[uid]["points"]
    for p, r, c in zip(experiment["sim"].truth[uid]["points"], pts["row"], pts["col"]):
        truth[r, c] = p["li2s_volume"]
    assert np.corrcoef(full.ravel(), truth.ravel())[0, 1] > 0.95
    # appears with discharge, maximal at full discharge, partly removed by the charge
    assert 0.2 * full.mean() < maps[0].mean() < 0.7 * full.mean()
    assert maps[2].mean() < full.mean()
    # SAXS stable (within a few per cent of the OCV)
    for i in (0, 1, 2):
        assert np.nanmax(np.abs(live[_run(experiment, "operando", i)]["saxs_map"])) < 0.05


def test_state_of_discharge(experiment):
    live, sim = experiment["live"], experiment["sim"]
    ocv = live[_run(experiment, "ocv")]
    assert np.all(ocv["points"]["sodc"] == 0.0)
    exp_md = live[experiment["eid"]]["metadata"]
    assert exp_md["sodc_final"] is True
    assert exp_md["q1_mah"] == pytest.approx(sim.q1_truth, rel=0.01)
    for index in (0, 1, 2):
        uid = _run(experiment, "operando", index)
        assert live[uid]["metadata"]["sodc_final"] is True  # rewritten once the discharge ended
        sodc = live[uid]["points"]["sodc"].to_numpy()
        truth = np.array([c["capacity_mah"] for c in sim.truth[uid]["cell"]]) / sim.q1_truth
        np.testing.assert_allclose(sodc, truth, atol=0.01)
    assert np.mean(live[_run(experiment, "operando", 1)]["points"]["sodc"]) > 0.97


def test_experiment_container(experiment):
    node = experiment["live"][experiment["eid"]]
    md = node["metadata"]
    assert md["experiment_id"] == experiment["eid"]
    assert len(md["map_uids"]) == 3 and md["pixel"] == [2, 2]
    ts = node["timeseries"]
    assert len(ts) == 80 and set(ts["step"]) == {"ocv", "operando"}
    assert np.all(np.diff(ts["time"].to_numpy()) > 0)
    assert node["li2s_maps"].shape == (3, *SHAPE)
    np.testing.assert_allclose(
        node["li2s_maps"][1], experiment["live"][_run(experiment, "operando", 1)]["li2s_map"]
    )
    assert node["waterfall_waxs"].shape == (4, 1000) and node["waterfall_saxs"].shape == (4, 1000)
    norm = node["waterfall_waxs_norm"]
    np.testing.assert_allclose(
        np.nanmedian(norm[0]), 1.0, atol=1e-9
    )  # the OCV raster is its own reference
    q = node["q_waxs"]
    window = (q > 18.3) & (q < 20.8)
    assert np.nanmean(norm[2][window]) > 1.2  # Li2S at full discharge, pixel (2, 2)
    assert node["rasters"]["li2s_size_max_nm"].to_numpy()[2] == pytest.approx(1.7, abs=0.1)


def test_figures_written_and_fetchable_through_tiled(experiment):
    files = experiment["reducer"].figures[experiment["eid"]]
    names = {Path(f).stem for f in files}
    # no alignment runs in this synthetic experiment: every other figure
    assert names == set(saxs_figures.FIGURES) - {"alignment"}
    for f in files:
        assert Path(f).stat().st_size > 10_000
    assert experiment["live"][experiment["eid"]]["metadata"]["figures"] == [
        Path(f).stem for f in files
    ]
    stored = experiment["plain"]["reduced"][experiment["eid"]][FIGURES_KEY]
    assert set(stored) == names
    for name in names:
        image = stored[name].read()
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 4
        assert image[..., :3].std() > 10  # drawn, not blank
        assert stored[name].metadata["description"] == saxs_figures.FIGURES[name]
    buffer = io.BytesIO()
    stored["li2s_maps"].export(buffer, format="image/png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_offline_reduction_gives_the_live_numbers(experiment, offline):
    summary, stored, live = offline["summary"], offline["stored"], experiment["live"]
    assert summary["experiment_id"] == experiment["eid"]
    assert [r["uid"] for r in summary["runs"]] == experiment["uids"]
    assert summary["sodc_final"] and summary["q1_mah"] == pytest.approx(
        live[experiment["eid"]]["metadata"]["q1_mah"]
    )
    for uid in experiment["uids"]:
        a, b = live[uid], stored[uid]
        assert b["metadata"]["reduction"]["mode"] == "offline"
        assert a["metadata"]["reduction"]["mode"] == "live"
        assert set(a) == set(b)
        for key in a:
            if key == "metadata":
                continue
            if key == "points":
                for col in a[key].columns:
                    np.testing.assert_allclose(
                        b[key][col].to_numpy(),
                        a[key][col].to_numpy(),
                        rtol=1e-9,
                        equal_nan=True,
                        err_msg=f"{uid} {col}",
                    )
            else:
                np.testing.assert_allclose(
                    b[key], a[key], rtol=1e-9, equal_nan=True, err_msg=f"{uid} {key}"
                )
    a, b = live[experiment["eid"]], stored[experiment["eid"]]
    for key in ("li2s_maps", "li2s_size_maps", "saxs_maps", "waterfall_waxs"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-9, equal_nan=True)
    for f in summary["figures"]:
        assert Path(f).stat().st_size > 10_000


def test_figure_functions_are_pure(tmp_path):
    q = np.linspace(17, 34, 50)
    t = np.array([0.0, 3600.0, 7200.0])
    curves = np.outer([1, 2, 3], np.exp(-q / 10))
    p = saxs_figures.waterfalls(t, None, None, q, curves, tmp_path / "w.png", pixel=(1, 1))
    assert Path(p).stat().st_size > 5_000
    p = saxs_figures.li2s_maps(
        np.random.default_rng(0).random((2, 4, 5)), ["a", "b"], tmp_path / "m.png", extents=EXTENTS
    )
    assert Path(p).stat().st_size > 5_000
    p = saxs_figures.voltage_capacity(
        [0, 0.1, 0.2, 0.05],
        [1.7, 1.6, 1.5, 1.8],
        [0, 0, 0, 1],
        tmp_path / "v.png",
        sulfur_mass_g=0.000525,
    )
    assert Path(p).stat().st_size > 5_000
    y = np.linspace(-0.5, 1.5, 21)
    profile = {"direction": "vertical", "motor": "stage_y", "positions": y}
    profile["transmission"] = np.where((y > 0.2) & (y < 0.6), 0.8, 0.3)
    p = saxs_figures.alignment([profile], {"y": (0.25, 0.55)}, tmp_path / "a.png")
    assert Path(p).stat().st_size > 5_000
    rows = [
        {"step": "operando", "half_cycle": h, "sodc": s} for h, s in ((0, 0.1), (0, 0.5), (1, 0.9))
    ]
    p = saxs_figures.iq_lines(None, None, q, curves, rows, tmp_path / "i.png")
    assert Path(p).stat().st_size > 5_000
    assert saxs_figures.half_cycle_name(0) == "discharge 1"
    assert saxs_figures.half_cycle_name(3) == "charge 2"


def test_net_capacity_and_sodc():
    h = [0, 0, 0, 1, 1, 2]
    c = [0.0, 0.2, 0.4, 0.1, 0.15, 0.05]
    q, q1, final = sc.net_capacity(h, c)
    assert final and q1 == 0.4
    np.testing.assert_allclose(q, [0, 0.2, 0.4, 0.3, 0.25, 0.3])
    q, q1, final = sc.net_capacity([0, 0], [0.0, 0.2])
    assert not final
    assert sc.sodc(q, q1, final).tolist()[0] == 0.0
    assert math.isnan(sc.sodc(q, q1, final)[1])


def test_grid_indices_from_positions_and_order():
    x = [0, 1, 2, 2, 1, 0]
    y = [0, 0, 0, 1, 1, 1]
    rows, cols = sc.grid_indices(x, y, (2, 3), [[0, 1], [0, 2]])
    assert rows.tolist() == [0, 0, 0, 1, 1, 1] and cols.tolist() == x
    rows, cols = sc.grid_indices([np.nan] * 6, y, (2, 3), None, [False, True])
    assert cols.tolist() == x
