"""Exports in the field's formats, read back by the field's own readers.

Data made here, by real processes:

* XCT: the station simulator (an IOC subprocess, virtual time) runs a 3D scan
  (61 projections, 2 darks, 2 flats, 4x binning) and a short plating; TiledWriter
  writes them into the session's ``tiled serve`` subprocess (started by
  ``TiledServer``, so with the project's exporters) and the live reducer writes
  ``reduced/<uid>`` (volume, layers) and ``reduced/<experiment id>`` (tables).
* SAXS/WAXS: ``operando rehearse saxs`` (its own simulators and server), then a
  ``TiledServer`` on its data directory.

Everything is exported by a plain Tiled client (``node.export(..., format=...)``)
or by ``operando export``, and read by ``nxtomo`` (ESRF), ``sasdata`` (SasView's
loader), ``tifffile``, ``nexusformat``, pandas/pyarrow; every NeXus file is
checked by ``nxvalidate`` against its application definition (NXtomo, NXcanSAS,
NXtomoproc; the NXDL files ship with it) and by ``punx`` (base classes, the
v2018.5 definitions it ships). ``punx``'s application-definition check is
shallow (it reports "more validations needed" and misses a missing required
field, see the negative control), so ``nxvalidate`` is the one that must and
does catch one.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

from .simulators import start_xct_ioc

BIN = Path(sys.executable).parent
OPERANDO = [str(BIN / "operando")]
HOUR = 3600.0
SCAN = dict(
    num_projections=61,
    exposure=1.5,
    images_per_projection=1,
    num_darks=2,
    num_flats=2,
    sample_every=1800.0,
)
CELL = "Li|HSE|Li export test"

#: nxvalidate sizes its messages to the terminal and fails without one
NXVALIDATE = """
import logging, os, sys
os.get_terminal_size = lambda *a: os.terminal_size((200, 40))
import h5py
from nxvalidate.validate import logger, validate_application
logger.setLevel(logging.WARNING)
path = sys.argv[1]
with h5py.File(path, "r") as f:
    entries = [k for k in f if f[k].attrs.get("NX_class") in ("NXentry", b"NXentry")]
for entry in entries:
    validate_application(path, path=entry)
print("NXVALIDATE", logger.total["warning"], logger.total["error"], len(entries))
"""


# ------------------------------------------------------------------------------ validators
def nxvalidate(path) -> dict:
    """nxvalidate against the file's application definition, every entry."""
    proc = subprocess.run(
        [sys.executable, "-c", NXVALIDATE, str(path)], capture_output=True, text=True, timeout=600
    )
    found = re.search(r"^NXVALIDATE (\d+) (\d+) (\d+)$", proc.stdout, re.M)
    assert found, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    return {
        "warnings": int(found.group(1)),
        "errors": int(found.group(2)),
        "entries": int(found.group(3)),
        "text": text,
    }


def punx(path) -> dict:
    """punx's summary counts (base classes and the application definition it knows)."""
    proc = subprocess.run(
        [str(BIN / "punx"), "validate", str(path)], capture_output=True, text=True, timeout=900
    )
    out = proc.stdout
    counts = {}
    for status in ("OK", "NOTE", "WARN", "ERROR"):
        m = re.search(rf"^{status}\s+(\d+)\s", out, re.M)
        assert m, out[-3000:] + proc.stderr[-2000:]
        counts[status] = int(m.group(1))
    counts["lines"] = [
        line
        for line in out.splitlines()
        if re.search(r"\s(ERROR|WARN)\s", line) and not line.startswith(("ERROR ", "WARN "))
    ]
    counts["text"] = out
    return counts


def _report(name, nxv, px):
    warn_kinds = sorted(
        {
            re.sub(r"/(saxs|waxs)_\d+", r"/\1_N", ln.split()[0]) + " " + " ".join(ln.split()[3:])
            for ln in px["lines"]
        }
    )
    print(
        f"{name}: nxvalidate {nxv['entries']} entries, {nxv['errors']} errors, "
        f"{nxv['warnings']} warnings; punx OK {px['OK']} NOTE {px['NOTE']} WARN {px['WARN']} "
        f"ERROR {px['ERROR']}",
        *warn_kinds[:6],
        sep="\n  ",
    )


# ------------------------------------------------------------------------------ XCT data
def _xct_protocol(station, eid):
    from operando.plans.xct import plating, scan3d

    common = dict(experiment_id=eid, cell=CELL)
    yield from scan3d(station, ocv_duration=3 * HOUR, cycle=1, **SCAN, **common)
    yield from plating(
        station,
        current_density=20.0,
        duration=1.0 * HOUR,
        radiogram_every=0.5 * HOUR,
        sample_every=300.0,
        images_per_radiogram=1,
        num_darks=2,
        num_flats=2,
        cycle=1,
        **common,
    )


@pytest.fixture(scope="module")
def xct(tiled_server, tmp_path_factory):
    from operando.callbacks.xct.live import XCTLiveReducer
    from operando.devices.xct import make_xct_station
    from operando.session import make_ingest, make_run_engine

    tmp = tmp_path_factory.mktemp("xct-export")
    base = tiled_server.layout.frames / f"xct-export-{uuid.uuid4().hex[:6]}"
    ioc = start_xct_ioc(base, time_scale="virtual", seed=3, extra=["--hold"])
    station = make_xct_station(ioc.prefix, write_path=ioc.frames_dir, timeout=15)
    RE = make_run_engine(loop=asyncio.new_event_loop(), clock=station.clock)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    # the project's ingest (TiledWriter in a process of its own), as `operando run`
    ingest = make_ingest(tiled_server.client(), backup_directory=tiled_server.layout.backup)
    RE.subscribe(ingest)
    reducer = XCTLiveReducer(tiled_server.client(), figures_dir=tmp / "figures")
    RE.subscribe(reducer)
    eid = f"xct-export-{uuid.uuid4().hex[:8]}"
    ioc.release_hold()
    try:
        RE(_xct_protocol(station, eid))
        ingest.shutdown(wait=True)  # every document in Tiled
        assert reducer.flush(300), "live reduction did not finish"
        assert reducer.errors == []
        starts = [d for n, d in docs if n == "start"]
        truth = [json.loads(line) for line in ioc.truth_file.read_text().splitlines()]
        yield {
            "eid": eid,
            "scan": starts[0]["uid"],
            "plating": starts[1]["uid"],
            "docs": docs,
            "truth": truth,
            "tmp": tmp,
            "server": tiled_server,
        }
    finally:
        ingest.shutdown(wait=True)
        reducer.close(60)
        for dev in station.devices().values():
            dev.destroy()
        ioc.stop()


@pytest.fixture(scope="module")
def client(tiled_server):
    """A plain Tiled client, as an analyst has one."""
    from tiled.client import from_uri

    return from_uri(tiled_server.uri, api_key=tiled_server.api_key)


@pytest.fixture(scope="module")
def nxtomo_file(xct, client):
    path = xct["tmp"] / "scan.nxs"
    client["raw"][xct["scan"]].export(str(path), format="nxtomo")
    return path


def _load_nxtomo(path):
    from nxtomo.application.nxtomo import NXtomo

    return NXtomo().load(str(path), "/entry", detector_data_as="as_numpy_array")


# ------------------------------------------------------------------------------ server
def test_server_has_the_exporters_and_no_key_on_its_command_line(tiled_server):
    cmdline = Path(f"/proc/{tiled_server.process.pid}/cmdline").read_bytes().split(b"\0")
    args = [a.decode() for a in cmdline if a]
    assert args[-6:-4] == ["config", str(tiled_server.layout.config)]
    assert tiled_server.api_key not in " ".join(args)
    config = tiled_server.layout.config.read_text()
    assert tiled_server.api_key not in config
    assert "application/x-nxtomo: operando.exporters.nxtomo:serialize_nxtomo" in config
    log = tiled_server.log_path
    assert (log.stat().st_mode & 0o077) == 0, "the server log holds the login URL: private"


# ------------------------------------------------------------------------------ NXtomo
def test_nxtomo_read_by_nxtomo(xct, client, nxtomo_file):
    run = client["raw"][xct["scan"]]
    scan = _load_nxtomo(nxtomo_file)
    det = scan.instrument.detector
    keys = np.array([k.value for k in det.image_key])
    assert list(keys) == [2] * 2 + [1] * 2 + [0] * 61  # darks, flats, projections
    data = np.asarray(det.data)
    assert data.shape == (65, 242, 250) and data.dtype == np.uint16
    # the frames are the detector's, read from its files through the server
    np.testing.assert_array_equal(data[keys == 0], run["primary"]["ct_det_image"].read())
    np.testing.assert_array_equal(data[keys == 1], run["flat"]["ct_det_image"].read())
    np.testing.assert_array_equal(data[keys == 2], run["dark"]["ct_det_image"].read())
    angles = scan.sample.rotation_angle
    assert str(angles.units) == "degree"
    np.testing.assert_allclose(angles.magnitude[keys == 0], run["primary"]["stage_th"].read())
    assert angles.magnitude[keys == 0][0] == pytest.approx(0.0, abs=1e-2)
    assert angles.magnitude[keys == 0][-1] == pytest.approx(360.0, abs=1e-2)
    assert det.x_pixel_size.to("micrometer").magnitude == pytest.approx(13.6)
    assert det.y_pixel_size.to("micrometer").magnitude == pytest.approx(13.6)
    assert np.allclose(det.count_time.to("second").magnitude, 1.5)
    start = run.metadata["start"]
    assert scan.sample.name == start["cell"] == CELL
    assert "cycle 1" in scan.title and xct["eid"] in scan.title
    assert scan.start_time is not None and scan.end_time > scan.start_time
    assert scan.instrument.source.probe.value == "x-ray"
    # the tube voltage and the run's context, as h5py sees them
    with h5py.File(nxtomo_file, "r") as f:
        assert f["entry/definition"][()] == b"NXtomo"
        assert f["entry/instrument/source/voltage"][()] == pytest.approx(70.0)
        assert f["entry/instrument/source/voltage"].attrs["units"] == "kV"
        assert f["entry/entry_identifier"][()].decode() == xct["scan"]
        notes = json.loads(f["entry/notes/data"][()])
    assert notes["cycle"] == 1 and notes["step"] == "scan3d" and notes["binning"] == 4
    assert len(notes["cell_time_s"]) == 65 and notes["start"]["uid"] == xct["scan"]


def test_nxtomo_reconstructs_to_the_live_layers(xct, client, nxtomo_file):
    from operando.callbacks.xct import science as tomo

    scan = _load_nxtomo(nxtomo_file)
    det = scan.instrument.detector
    keys = np.array([k.value for k in det.image_key])
    data = np.asarray(det.data)
    angles = scan.sample.rotation_angle.to("degree").magnitude
    pixel = det.x_pixel_size.to("micrometer").magnitude
    volume = tomo.reconstruct(
        data[keys == 0], angles[keys == 0], flats=data[keys == 1], darks=data[keys == 2]
    )
    layers = tomo.find_layers(tomo.layer_profile(volume), pixel, cu_snr=math.inf)
    live = client["reduced"][xct["scan"]].metadata
    frames = {(r["file"], r["index"]): r for r in xct["truth"] if r.get("event") == "frame"}
    resources, locs = {}, []
    for name, doc in xct["docs"]:
        if name == "stream_resource":
            resources[doc["uid"]] = doc["uri"].removeprefix("file://localhost")
        elif name == "stream_datum" and doc["descriptor"] in {
            d["uid"]
            for n, d in xct["docs"]
            if n == "descriptor" and d["name"] == "primary" and d["run_start"] == xct["scan"]
        }:
            locs += [
                (resources[doc["stream_resource"]], i)
                for i in range(doc["indices"]["start"], doc["indices"]["stop"])
            ]
    truth = {
        k: np.mean([frames[loc]["truth"][k] for loc in locs]) for k in ("cu_to_cu_um", "top_li_um")
    }
    for key in ("cu_to_cu_um", "top_li_um", "hse_um"):
        print(
            f"{key}: NXtomo {layers[key]:.2f} µm, live {live[key]:.2f} µm, "
            f"truth {truth.get(key, math.nan):.2f} µm, voxel {pixel}"
        )
        assert abs(layers[key] - live[key]) <= pixel, key
    for key in ("cu_to_cu_um", "top_li_um"):
        assert abs(layers[key] - truth[key]) <= pixel, key
    # the same rows of the detector (the live volume starts at its row0)
    for key in ("cu_top", "cu_bottom", "li_hse_top"):
        assert abs(layers[key] - live["layers"][key]) <= 1.0, key


def test_nxtomo_of_a_plating_run_is_refused(xct, client, tmp_path):
    from tiled.client.utils import ClientError

    with pytest.raises(ClientError, match="406.*NXtomo is for 3D scans"):
        client["raw"][xct["plating"]].export(str(tmp_path / "x.nxs"), format="nxtomo")


# ------------------------------------------------------------------------------ volume
def test_volume_as_tiff_read_by_tifffile(xct, client, tmp_path):
    import tifffile

    scan = client["reduced"][xct["scan"]]
    node = scan["volume"]
    volume = node.read()
    pixel = node.metadata["pixel_um"]
    paths = {"scan": tmp_path / "scan-volume.tif", "array": tmp_path / "volume.tif"}
    scan.export(str(paths["scan"]), format="tiff")  # slice by slice, server side
    node.export(str(paths["array"]), format="tiff")  # the array route
    for route, path in paths.items():
        with tifffile.TiffFile(path) as tif:
            assert len(tif.pages) == volume.shape[0], route
            np.testing.assert_array_equal(tif.asarray(), volume)
            ij = tif.imagej_metadata
            assert ij["spacing"] == pytest.approx(pixel) and ij["unit"] == "um", route
            assert ij["images"] == volume.shape[0]
            page = tif.pages[0]
            for tag in ("XResolution", "YResolution"):
                num, den = page.tags[tag].value
                assert den / num == pytest.approx(pixel, rel=1e-6)  # µm per pixel
    print(
        f"volume {volume.shape} {volume.dtype}, voxel {pixel} µm: "
        f"{paths['scan'].stat().st_size} bytes"
    )


def test_volume_as_nexus_read_by_nexusformat(xct, client, tmp_path):
    from nexusformat.nexus import nxload

    node = client["reduced"][xct["scan"]]
    volume = node["volume"].read()
    vmd = node["volume"].metadata
    pixel = vmd["pixel_um"]
    path = tmp_path / "volume.nxs"
    node.export(str(path), format="nexus")  # the reduced scan: NXtomoproc
    root = nxload(str(path))
    entry = root["entry"]
    assert str(entry["definition"]) == "NXtomoproc"
    data = entry["data"]
    assert data.nxsignal.nxname == "data"
    assert [a.nxname for a in data.nxaxes] == ["z", "y", "x"]
    np.testing.assert_array_equal(data.nxsignal.nxdata, volume)
    for axis, n in zip("zyx", volume.shape):
        values = data[axis].nxdata
        assert data[axis].attrs["units"] == "um" and values.size == n
        assert np.diff(values) == pytest.approx(np.full(n - 1, pixel))
    assert data["z"].nxdata[0] == pytest.approx(vmd["row0"] * pixel)
    assert data["x"].nxdata[vmd["axis_voxel"]] == pytest.approx(0.0)
    assert str(entry["sample/name"]) == CELL
    assert json.loads(str(entry["notes/data"]))["cu_to_cu_um"] == pytest.approx(
        node.metadata["cu_to_cu_um"]
    )
    # the array alone: NXdata with the same axes
    path2 = tmp_path / "volume-array.nxs"
    node["volume"].export(str(path2), format="nexus")
    data2 = nxload(str(path2))["entry/data"]
    np.testing.assert_array_equal(data2.nxsignal.nxdata, volume)
    assert [a.nxname for a in data2.nxaxes] == ["z", "y", "x"]


class _Recorded:
    """A volume that records the slices read from it (as the server's arrays are read)."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

    def __getitem__(self, item):
        self.reads.append(item)
        return self.array[item]


def test_volume_writers_read_a_few_slices_at_a_time(tmp_path, monkeypatch):
    import tifffile

    from operando.exporters import volume as vol

    rng = np.random.default_rng(0)
    data = rng.random((11, 6, 7)).astype(np.float32)
    monkeypatch.setattr(vol, "BLOCK_BYTES", 3 * 6 * 7 * 4)  # three slices
    md = {"pixel_um": 2.5, "row0": 4, "axis_voxel": 3}
    src = _Recorded(data)
    vol.write_tiff(tmp_path / "v.tif", src, md)
    assert src.reads == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 11)]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "v.tif"), data)
    src = _Recorded(data)
    vol.write_nxtomoproc(tmp_path / "v.nxs", src, md, {"raw_uid": "u", "step": "scan3d"})
    assert len(src.reads) == 4
    with h5py.File(tmp_path / "v.nxs", "r") as f:
        np.testing.assert_array_equal(f["entry/data/data"][()], data)
        np.testing.assert_allclose(f["entry/data/z"][()], (4 + np.arange(11)) * 2.5)
        np.testing.assert_allclose(f["entry/data/x"][()], (np.arange(7) - 3) * 2.5)


# ------------------------------------------------------------------------------ validation
def test_nexus_files_pass_the_validators(xct, client, nxtomo_file, saxs, tmp_path):
    files = {
        "NXtomo": nxtomo_file,
        "NXtomoproc": tmp_path / "volume.nxs",
        "NXcanSAS": tmp_path / "raster.h5",
        "NXdata": tmp_path / "volume-array.nxs",
    }
    client["reduced"][xct["scan"]].export(str(files["NXtomoproc"]), format="nexus")
    client["reduced"][xct["scan"]]["volume"].export(str(files["NXdata"]), format="nexus")
    saxs["client"]["reduced"][saxs["operando"][0]].export(str(files["NXcanSAS"]), format="nxcansas")
    for definition, path in files.items():
        px = punx(path)
        assert px["ERROR"] == 0, px["lines"]
        if definition != "NXdata":
            assert f"{definition}: known NeXus application definition" in px["text"]
            nxv = nxvalidate(path)
            assert f"Application Definition: {definition}" in nxv["text"]
            assert nxv["errors"] == 0, nxv["text"][-4000:]
            _report(definition, nxv, px)
        else:
            print(f"NXdata: punx ERROR {px['ERROR']} WARN {px['WARN']} (no application definition)")
    # the validator does look: a copy without image_key and rotation_angle fails
    broken = tmp_path / "broken.nxs"
    shutil.copy(nxtomo_file, broken)
    with h5py.File(broken, "a") as f:
        for path in (
            "instrument/detector/image_key",
            "data/image_key",
            "sample/rotation_angle",
            "data/rotation_angle",
        ):
            del f[f"entry/{path}"]
    nxv = nxvalidate(broken)
    print("broken NXtomo: nxvalidate", nxv["errors"], "errors; punx ERROR", punx(broken)["ERROR"])
    assert nxv["errors"] >= 2 and "This required link is not in the NeXus file" in nxv["text"]


# ------------------------------------------------------------------------------ tables
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_reduced_tables_through_tiled_builtins(xct, client, saxs, tmp_path, fmt):
    import pandas as pd

    tables = {
        "timeseries": client["reduced"][xct["eid"]]["timeseries"],
        "cycles": client["reduced"][xct["eid"]]["cycles"],
        "radiograms": client["reduced"][xct["plating"]]["radiograms"],
        "points": saxs["client"]["reduced"][saxs["operando"][0]]["points"],
        "saxs timeseries": saxs["client"]["reduced"]["export-saxs"]["timeseries"],
        "rasters": saxs["client"]["reduced"]["export-saxs"]["rasters"],
    }
    for name, node in tables.items():
        path = tmp_path / f"{name.replace(' ', '-')}.{fmt}"
        node.export(str(path), format=fmt)
        got = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
        want = node.read()
        assert list(got.columns) == list(want.columns), name
        assert len(got) == len(want) > 0, name
        for col in want.columns:
            kind = want[col].dtype
            if pd.api.types.is_numeric_dtype(kind) and not pd.api.types.is_bool_dtype(kind):
                np.testing.assert_allclose(
                    got[col].to_numpy(float),
                    want[col].to_numpy(float),
                    rtol=1e-12,
                    equal_nan=True,
                    err_msg=f"{name}.{col}",
                )
            else:
                assert [str(v) for v in got[col]] == [str(v) for v in want[col]], f"{name}.{col}"
    ts = tables["timeseries"].read()
    assert {"force", "pressure_mpa", "pressure_nominal_mpa"} <= set(ts.columns)
    cycles = tables["cycles"].read()
    assert {"cu_to_cu_um_first", "cu_to_cu_um_last", "top_li_um_change"} <= set(cycles.columns)


# ------------------------------------------------------------------------------ SAXS/WAXS
@pytest.fixture(scope="module")
def saxs(tmp_path_factory):
    """``operando rehearse saxs`` (IOC subprocesses, its own server), then a server on its data."""
    from tiled.client import from_uri

    from operando.tiled_server import DataLayout, TiledServer

    data = tmp_path_factory.mktemp("saxs-export") / "data"
    proc = subprocess.run(
        OPERANDO
        + [
            "rehearse",
            "saxs",
            "--cycles",
            "1",
            "--grid",
            "3x2",
            "--c-rate",
            "0.5",
            "--raster-every",
            "3600",
            "--exposure",
            "1",
            "--sample-every",
            "600",
            "--experiment-id",
            "export-saxs",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    runs = re.findall(r"^\s+([0-9a-f-]{36})\s+(\w+)", proc.stdout, flags=re.M)
    with TiledServer(DataLayout.at(data)) as server:
        yield {
            "data": data,
            "server": server,
            "client": from_uri(server.uri, api_key=server.api_key),
            "operando": [u for u, step in runs if step == "operando"],
            "ocv": [u for u, step in runs if step == "ocv"],
        }


def test_nxcansas_read_by_sasdata(saxs, tmp_path):
    from sasdata.dataloader.loader import Loader

    client = saxs["client"]
    uid = saxs["operando"][-1]
    node = client["reduced"][uid]
    path = tmp_path / "raster.h5"
    node.export(str(path), format="nxcansas")
    sets = Loader().load(str(path))
    points = node["points"].read()
    n = len(points)
    assert n == 6 and len(sets) == 2 * n  # one data set per point and detector
    geometry = {
        role: json.loads(
            client["raw"][uid]["primary"].metadata["configuration"][role]["data"][
                f"{role}_cam_geometry"
            ]
        )
        for role in ("saxs", "waxs")
    }
    for j, role in enumerate(("saxs", "waxs")):
        q = node[f"q_{role}"].read()
        inten, sigma = node[role].read(), node[f"{role}_sigma"].read()
        for k in range(n):
            d = sets[j * n + k]
            assert d.title.startswith(role.upper()) and f"point {k} " in d.title
            assert d.run == [uid]
            # sasdata gives Q in 1/Å: 1/Å = 10/nm
            assert d._xunit == "A^{-1}" and d._yunit == "arbitrary"
            np.testing.assert_allclose(np.asarray(d.x) * 10.0, q, rtol=1e-12)
            np.testing.assert_allclose(d.y, inten[k], rtol=1e-12)
            np.testing.assert_allclose(d.dy, sigma[k], rtol=1e-12)
            assert d.sample.position.x == pytest.approx(points["x"][k])
            assert d.sample.position.y == pytest.approx(points["y"][k])
            assert d.sample.position_unit == "mm"
            assert d.meta_data["cell_time"] == pytest.approx(points["time"][k])
            assert d.meta_data["state_of_discharge"] == pytest.approx(
                points["sodc"][k], nan_ok=True
            )
            assert d.meta_data["ewe"] == pytest.approx(points["ewe"][k])
            assert d.source.wavelength == pytest.approx(geometry[role]["wavelength"] * 1e9)
            assert d.source.wavelength_unit == "nm"
            assert d.detector[0].distance == pytest.approx(geometry[role]["dist"])
            assert d.detector[0].distance_unit == "m"
    sod = [s.meta_data["state_of_discharge"] for s in sets[:n]]
    print(
        f"raster {uid[:8]}: {len(sets)} data sets, Q {sets[0].x[0]:.4g}..{sets[0].x[-1]:.4g} "
        f"1/Å (SAXS), {sets[n].x[0]:.4g}..{sets[n].x[-1]:.4g} 1/Å (WAXS), state of discharge "
        f"{min(sod):.3f}..{max(sod):.3f}"
    )
    assert all(np.isfinite(sod))


def test_nxcansas_of_an_xct_node_is_refused(xct, client, tmp_path):
    from tiled.client.utils import ClientError

    with pytest.raises(ClientError, match="406.*NXcanSAS is for a reduced SAXS/WAXS raster"):
        client["reduced"][xct["scan"]].export(str(tmp_path / "x.h5"), format="nxcansas")


# ------------------------------------------------------------------------------ units
def test_every_reduced_name_has_a_unit(xct, client, saxs):
    from operando.callbacks.units import UNITS

    names, missing = set(), set()
    nodes = [client["reduced"][k] for k in (xct["scan"], xct["plating"], xct["eid"])]
    nodes += [
        saxs["client"]["reduced"][k] for k in (saxs["ocv"][0], saxs["operando"][0], "export-saxs")
    ]
    unlabelled = set()
    for node in nodes:
        for key, child in node.items():
            family = str(getattr(child.structure_family, "value", child.structure_family))
            found = list(child.read().columns) if family == "table" else [key]
            names.update(found)
            missing.update(n for n in found if n not in UNITS)
            # and the node itself says them, to a plain client
            md = child.metadata
            if family == "table":
                units = md.get("units", {})
                unlabelled.update(
                    f"{key}.{c}" for c in found if c not in units or units[c] != UNITS[c][0]
                )
            elif md.get("units") != UNITS.get(key, ("?",))[0] or "description" not in md:
                unlabelled.add(key)
    print(f"{len(names)} reduced names, all with units")
    assert not missing, sorted(missing)
    assert not unlabelled, sorted(unlabelled)


# ------------------------------------------------------------------------------ CLI
def test_operando_export_command(xct, tiled_server, tmp_path):
    from nxtomo.application.nxtomo import NXtomo

    common = ["--tiled-uri", tiled_server.uri, "--api-key", tiled_server.api_key]
    out = tmp_path / "cli-scan.nxs"
    proc = subprocess.run(
        OPERANDO + ["export", xct["scan"][:8], "--format", "nxtomo", "-o", str(out), *common],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"raw/{xct['scan']} as nxtomo" in proc.stdout
    scan = NXtomo().load(str(out), "/entry")
    assert len(scan.instrument.detector.image_key) == 65
    for ref, fmt, name in (
        (xct["scan"], "tiff", f"{xct['scan']}-volume.tif"),
        (f"{xct['eid']}/cycles", "csv", f"{xct['eid']}-cycles.csv"),
        (f"reduced/{xct['eid']}/timeseries", "parquet", f"{xct['eid']}-timeseries.parquet"),
    ):
        proc = subprocess.run(
            OPERANDO + ["export", ref, "--format", fmt, *common],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (tmp_path / name).stat().st_size > 0, name
    # a table is needed for CSV; a scan for NXtomo: clear messages, exit code 2
    proc = subprocess.run(
        OPERANDO + ["export", xct["eid"], "--format", "csv", *common],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "name one" in proc.stderr and "cycles" in proc.stderr
    proc = subprocess.run(
        OPERANDO + ["export", xct["plating"], "--format", "nxtomo", *common],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "406" in proc.stderr and "3D scans" in proc.stderr
    assert not list(tmp_path.glob("*.part"))


def test_operando_serve_prints_a_browse_url(saxs):
    import httpx

    from operando.tiled_server import free_port

    port = free_port()
    proc = subprocess.Popen(
        OPERANDO + ["serve", "--data-dir", str(saxs["data"]), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        url = None
        for line in proc.stdout:
            if line.startswith("Browse (web UI):"):
                url = line.split(":", 1)[1].strip()
                break
        key = (saxs["data"] / "api_key").read_text().strip()
        assert url == f"http://127.0.0.1:{port}/ui/browse/raw?api_key={key}"
        page = httpx.get(url, follow_redirects=True, timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        # the same address logs the browser in: the UI's API calls then pass
        with httpx.Client(timeout=30) as browser:
            browser.get(url, follow_redirects=True)
            listing = browser.get(f"http://127.0.0.1:{port}/api/v1/search/raw")
        assert listing.status_code == 200 and listing.json()["meta"]["count"] >= 3
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/search/raw").status_code == 401
    finally:
        os.killpg(proc.pid, 2)
        proc.wait(timeout=30)
