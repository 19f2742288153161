"""Live SAXS/WAXS reduction speed against bare pyFAI, on this machine, in one run.

Plain script, prints a table (no asserts)::

    .venv/bin/python benchmarks/bench_live_reduction.py              # 20 frames per detector
    .venv/bin/python benchmarks/bench_live_reduction.py --frames 40
    .venv/bin/python benchmarks/bench_live_reduction.py --no-tiled   # skip the Tiled-write line

Frames: a cathode-centre raster point rendered with the synchrotron set-up
(``operando.iocs.physics``): Pilatus 1M (SAXS, 1.8 m) and Pilatus 100K (WAXS,
tilted, 11.4 cm), int32 with −1 in the module gaps, written to SWMR HDF5 files
as the detector's writer does.  Rendering is not timed.

Per detector, on the same frames:

* **bare pyFAI**: ``ai.integrate1d(frame, 1000, unit="q_nm^-1",
  method=("full", "csr", "cython"))`` on the frames in memory, the integrator
  warmed up first.
* **live, no writes**: the documents of one raster run (start, descriptor,
  stream_resource, stream_datum, event, stop) pushed through
  ``SAXSLiveReducer(None)``: queue, worker thread, ``RunRouter``, SWMR HDF5
  read, integration with the beamstop mask, gaps as dummies and Poisson errors,
  and the raster's reduction at ``stop``; timed from the first event to
  ``flush()``, after the warm-up at the descriptor.  "integrate" is the part
  spent in the event handler (HDF5 read + integration).
* **live + Tiled**: the same with a Tiled client: the reduced run written at
  ``stop`` (container, 3 arrays per detector, ``points`` table) into a
  ``tiled serve`` subprocess started here.

Each pass measures bare pyFAI just before and just after a live run and the
ratio is taken against their mean (the machine is shared; the best pass and the
median ratio are printed).  ``OMP_WAIT_POLICY=PASSIVE`` is set (see below).
"""

from __future__ import annotations

import os

# Two threads take turns with OpenMP here (bare pyFAI in the main thread, the
# reducer's worker thread): with libgomp's default active wait the team of the
# one spins while the other runs, which on 2 cores made whichever ran second look
# up to 3x slower.  Passive waiting for both makes the comparison fair.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from event_model import compose_run

from operando.callbacks.saxs.live import SAXSLiveReducer
from operando.constants import FRAME_DATASET
from operando.iocs.hdf5_writer import HDF5FrameWriter
from operando.iocs.physics import scattering_frames as sf
from operando.iocs.physics.saxs_cell import SaxsCell

BL = sf.SYNCHROTRON
NPT = 1000


def render_frames(n: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    cell = SaxsCell(seed=0)
    i = cell.c_rate_current()
    cell.advance(0.8 * cell.time_to_limit(i, 0.6), i)  # Li2S in the cathode
    rng = np.random.default_rng(seed)
    out = {"saxs": [], "waxs": []}
    xs = np.linspace(-2, 2, n)
    for x in xs:
        fp = cell.composition_at(float(x), 0.175, BL.beam_w_mm, BL.beam_h_mm, BL.energy_kev)
        frames = sf.render_point(BL, fp, rng)
        for role in out:
            out[role].append(frames[role])
    return out


_AI: dict = {}


def bare_pyfai(frames: list[np.ndarray], geometry: dict) -> float:
    """Frames per second of bare ``integrate1d`` over the frames (one pass)."""
    import pyFAI

    key = json.dumps(geometry, sort_keys=True)
    ai = _AI.get(key)
    if ai is None:
        ai = _AI[key] = pyFAI.load(dict(geometry))
        ai.integrate1d(frames[0], NPT, unit="q_nm^-1", method=("full", "csr", "cython"))  # warm-up
    t0 = time.perf_counter()
    done = 0
    while done < len(frames) or time.perf_counter() - t0 < 0.5:  # at least 0.5 s
        ai.integrate1d(
            frames[done % len(frames)], NPT, unit="q_nm^-1", method=("full", "csr", "cython")
        )
        done += 1
    return done / (time.perf_counter() - t0)


def run_documents(role: str, paths: dict, n: int, shape, n_frames: int):
    """Start, descriptor; then the rest (resources, datums, events, stop)."""
    rows, cols = BL.integrator(role).detector.shape
    run = compose_run(
        metadata={
            "technique": "saxs_waxs",
            "step": "ocv",
            "cycle": 0,
            "experiment_id": f"bench-{role}-{time.time_ns()}",
            "raster_index": 0,
            "shape": list(shape),
            "extents": [[0.0, 1.0], [0.0, float(shape[1] - 1)]],
            "snaking": [False, False],
        }
    )
    data = {f"{role}_cam_geometry": json.dumps(BL.geometry(role))}
    if role == "saxs":
        data["saxs_cam_beamstop_radius"] = BL.saxs.beamstop_radius_m
    conf = {
        role: {
            "data": data,
            "timestamps": {k: 0.0 for k in data},
            "data_keys": {
                k: {"source": k, "dtype": "string" if isinstance(v, str) else "number", "shape": []}
                for k, v in data.items()
            },
        }
    }
    dk = {
        f"{role}_image": {
            "source": "hdf5",
            "shape": [rows, cols],
            "dtype": "array",
            "dtype_numpy": "<i4",
            "external": "STREAM:",
        }
    }
    for key in ("stage_x", "stage_y", "clock_time", "diode_trans"):
        dk[key] = {"source": key, "shape": [], "dtype": "number"}
    desc = run.compose_descriptor(name="primary", data_keys=dk, configuration=conf)
    head = [("start", run.start_doc), ("descriptor", desc.descriptor_doc)]
    bundle = run.compose_stream_resource(
        mimetype="application/x-hdf5",
        uri=f"file://localhost{paths[role]}",
        data_key=f"{role}_image",
        parameters={"dataset": FRAME_DATASET, "chunk_shape": [1, rows, cols]},
    )
    rest = [("stream_resource", bundle.stream_resource_doc)]
    for k in range(n):
        rest.append(
            (
                "stream_datum",
                bundle.compose_stream_datum(
                    indices={"start": k % n_frames, "stop": k % n_frames + 1},
                    seq_nums={"start": k + 1, "stop": k + 2},
                    descriptor=desc.descriptor_doc,
                ),
            )
        )
        r, c = divmod(k, shape[1])
        vals = {
            "stage_x": float(c),
            "stage_y": float(r),
            "clock_time": 10.0 * k,
            "diode_trans": 0.35,
        }
        rest.append(
            (
                "event",
                desc.compose_event(data=vals, timestamps={k_: 0.0 for k_ in vals}, seq_num=k + 1),
            )
        )
    rest.append(("stop", run.compose_stop()))
    return head, rest


def live(role: str, paths: dict, n: int, n_frames: int, client=None) -> tuple[float, float]:
    """(frames/s from the first event to flush, frames/s in the event handler)
    for one run of ``n`` events cycling over the ``n_frames`` frames of the file."""
    shape = (max(1, n // 5), 5) if n % 5 == 0 else (1, n)
    head, rest = run_documents(role, paths, n, shape, n_frames)
    reducer = SAXSLiveReducer(client, npt=NPT)
    for name, doc in head:
        reducer(name, doc)
    reducer.flush()  # warm-up at the descriptor is done
    reducer.timings["integrate_events"] = 0.0
    t0 = time.perf_counter()
    for name, doc in rest:
        reducer(name, doc)
    reducer.flush()
    wall = time.perf_counter() - t0
    integ = reducer.timings["integrate_events"]
    reducer.close()
    if reducer.errors:
        raise RuntimeError(reducer.errors)
    return n / wall, n / integ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--frames", type=int, default=20, help="frames rendered per detector (default 20)"
    )
    ap.add_argument(
        "--events",
        type=int,
        default=60,
        help="events per live run, cycling over the frames (default 60)",
    )
    ap.add_argument("--no-tiled", action="store_true", help="skip the line with Tiled writes")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="alternate bare/live this many times and keep the best of each (default 3): "
        "the machine is shared, the best pass is the least disturbed",
    )
    args = ap.parse_args()
    n = args.frames
    t0 = time.perf_counter()
    frames = render_frames(n)
    print(
        f"rendered {n} Pilatus 1M + {n} Pilatus 100K frames in {time.perf_counter() - t0:.1f} s "
        "(not timed below)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-saxs-") as tmp:
        tmp = Path(tmp)
        frames_dir = tmp / "frames"
        paths = {}
        for role, fs in frames.items():
            w = HDF5FrameWriter(fs[0].shape, dtype=np.int32)
            paths[role] = w.open(frames_dir / f"{role}.h5")
            for f in fs:
                w.append(f)
            w.close()
        results = {role: {} for role in ("saxs", "waxs")}

        def measure(client, label):
            for _ in range(max(1, args.repeat)):
                for role in ("saxs", "waxs"):
                    r = results[role]
                    before = bare_pyfai(frames[role], BL.geometry(role))
                    wall, integ = live(role, paths, args.events, n, client)
                    after = bare_pyfai(frames[role], BL.geometry(role))
                    r.setdefault("bare", []).extend([before, after])
                    r.setdefault(label, []).append(wall)
                    r.setdefault(f"{label}_ratio", []).append(wall / (0.5 * (before + after)))
                    if client is None:
                        r.setdefault("integrate", []).append(integ)

        measure(None, "live")
        if not args.no_tiled:
            from operando.tiled_server import DataLayout, TiledServer

            with TiledServer(DataLayout.at(tmp / "tiled")) as server:
                client = server.client()
                for role in ("saxs", "waxs"):
                    live(
                        role, paths, args.events, n, client
                    )  # the first write of a kind pays setup costs
                measure(client, "tiled")
    names = {"saxs": "Pilatus 1M (SAXS)", "waxs": "Pilatus 100K (WAXS)"}
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\nframes per second, best of {args.repeat} passes; ratio = median over passes of "
        f"live / bare pyFAI measured just before and after it ({n} frames per detector, "
        f"{args.events} events per live run, npt={NPT}, "
        f"load average now {load} on {os.cpu_count()} cores, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')})"
    )
    print(
        f"{'detector':22s} {'bare pyFAI':>11s} {'live:integrate':>15s} {'live, no writes':>16s} "
        f"{'ratio':>6s} {'live + Tiled':>13s} {'ratio':>6s}"
    )
    for role, r in results.items():
        tiled = (
            f"{max(r['tiled']):13.1f} {np.median(r['tiled_ratio']):6.2f}"
            if "tiled" in r
            else f"{'-':>13s} {'-':>6s}"
        )
        print(
            f"{names[role]:22s} {max(r['bare']):11.1f} {max(r['integrate']):15.1f} {max(r['live']):16.1f} "
            f"{np.median(r['live_ratio']):6.2f} {tiled}"
        )
    print(
        "live:integrate = the event handler alone (SWMR HDF5 read + integration), no queue or stop"
    )


if __name__ == "__main__":
    main()
