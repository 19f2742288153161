"""A raw 3D scan (``raw/<uid>``, steps ``scan3d``/``postmortem``) as NeXus NXtomo.

Layout (NXtomo application definition; ``image_key`` 0 projection, 1 flat, 2 dark)::

    /entry                         NXentry, @default=data
      definition = "NXtomo"
      title, start_time, end_time, entry_identifier (raw uid), experiment_identifier
      program_name = "operando-beamline"
      instrument                   NXinstrument
        source                     NXsource: type, name, probe = "x-ray", voltage (kV)
        filter                     NXfilter: description (the source filter)
        detector                   NXdetector
          data                     (nFrames, rows, cols) uint16, the detector's frames
          image_key                (nFrames) int32
          count_time               (nFrames) s, exposure of each frame (all images)
          x_pixel_size, y_pixel_size   µm, at the sample after binning
          description, local_name
      sample                       NXsample
        name                       the cell (start document ``cell``)
        description                cycle, step, electrochemistry, experiment
        rotation_angle             (nFrames) degrees; darks and flats: the first
                                   projection's angle (the stage does not turn for them)
      data                         NXdata: links to data, rotation_angle, image_key
      notes                        NXnote, type application/json: experiment_id, cycle,
                                   step, echem, technique, objective, binning, the cell
                                   time of every frame (s) and the start document

The frames come in acquisition order, stream by stream (darks, flats, then
projections for the station's ``scan3d``). Energy and distances are written
when the run records them (``energy_keV``, ``source_sample_distance_mm``,
``sample_detector_distance_mm`` in the start document); the simulated
laboratory station records the tube voltage and filter only.

:func:`scan_from_node` collects everything but the frames (server side, from
the run's adapters); :class:`NXtomoWriter` writes the file block by block, so
:func:`write_nxtomo` (frames as numpy or h5py arrays) and the Tiled exporter
:func:`serialize_nxtomo` (frames read from the detector files through the
node's arrays) share it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np

from . import nexus as nx
from . import nodes

__all__ = [
    "TomoScan",
    "NXtomoWriter",
    "write_nxtomo",
    "scan_from_node",
    "serialize_nxtomo",
    "IMAGE_KEYS",
    "STREAM_ORDER",
]

#: NXtomo's image_key of each stream
IMAGE_KEYS = {"primary": 0, "flat": 1, "dark": 2}
#: order of the streams when their times do not tell
STREAM_ORDER = ("dark", "flat", "primary")
FRAMES_KEY = "ct_det_image"
ANGLE_KEY = "stage_th"
SCAN_STEPS = ("scan3d", "postmortem")
#: frames read per request from the server's arrays
BLOCK_BYTES = 64 << 20


@dataclass
class TomoScan:
    """One 3D scan, without its frames."""

    uid: str
    start: dict
    stop: dict
    #: streams in acquisition order, each with n frames
    streams: list[str]
    counts: dict[str, int]
    frame_shape: tuple[int, int]
    dtype: str
    #: projection angles (primary), degrees
    angles: np.ndarray
    #: cell time of every frame, per stream (s); NaN where not recorded
    cell_time: dict[str, np.ndarray] = dc_field(default_factory=dict)
    pixel_um: float | None = None
    objective: str | None = None
    binning: int | None = None
    exposure_s: float | None = None
    images_per_frame: int | None = None
    kv: float | None = None
    filter: str | None = None

    @property
    def n_frames(self) -> int:
        return sum(self.counts[s] for s in self.streams)

    def image_key(self) -> np.ndarray:
        return np.concatenate(
            [np.full(self.counts[s], IMAGE_KEYS[s], np.int32) for s in self.streams]
        )

    def rotation_angle(self) -> np.ndarray:
        """Per frame; darks and flats at the first projection's angle."""
        first = float(self.angles[0]) if self.angles.size else 0.0
        parts = []
        for s in self.streams:
            if s == "primary":
                parts.append(np.asarray(self.angles, float))
            else:
                parts.append(np.full(self.counts[s], first))
        return np.concatenate(parts)

    def frame_cell_time(self) -> np.ndarray:
        return np.concatenate(
            [
                np.asarray(self.cell_time.get(s, np.full(self.counts[s], np.nan)), float)
                for s in self.streams
            ]
        )

    def offsets(self) -> dict[str, int]:
        out, k = {}, 0
        for s in self.streams:
            out[s] = k
            k += self.counts[s]
        return out


def _float(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _int(value) -> int | None:
    return None if value is None else int(value)


def _plan_arg(start: dict, key: str):
    """A value of the start document's ``plan_args`` (recorded as reprs)."""
    text = (start.get("plan_args") or {}).get(key)
    if text is None:
        return None
    if isinstance(text, str):
        import ast

        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return text


def _detector_settings(configuration: dict, attrs: dict) -> dict:
    data = ((configuration or {}).get("ct_det") or {}).get("data") or {}
    out = {
        "pixel_um": _float(data.get("ct_det_cam_pixel_size")),
        "objective": data.get("ct_det_cam_objective"),
        "binning": data.get("ct_det_cam_binning"),
        "exposure_s": _float(data.get("ct_det_cam_acquire_time")),
        "images": data.get("ct_det_cam_num_exposures"),
    }
    # the detector file says the same; it is the fallback
    if out["pixel_um"] is None:
        out["pixel_um"] = _float(attrs.get("pixel_size_um"))
    out["objective"] = out["objective"] or attrs.get("objective")
    if out["binning"] is None:
        out["binning"] = attrs.get("binning")
    return out


def _source_settings(start: dict, configurations: list[dict]) -> dict:
    kv = filt = None
    for conf in configurations:
        data = ((conf or {}).get("source") or {}).get("data") or {}
        kv = kv if kv is not None else _float(data.get("source_kv"))
        filt = filt or data.get("source_filter")
    if kv is None:
        kv = _float(_plan_arg(start, "kv"))
    if filt is None:
        f = _plan_arg(start, "filter")
        filt = str(f) if f not in (None, "None") else None
    return {"kv": kv, "filter": filt}


async def scan_from_node(run, metadata: dict | None = None) -> tuple[TomoScan, dict]:
    """The scan's description from a run adapter, and its frame adapters by stream.

    Raises Tiled's ``SerializationError`` (HTTP 406) when the run is not a 3D scan.
    """
    md = dict(metadata if metadata is not None else run.metadata())
    start = dict(md.get("start") or {})
    stop = dict(md.get("stop") or {})
    if start.get("technique") != "xct" or start.get("step") not in SCAN_STEPS:
        raise nodes.refuse(
            f"NXtomo is for 3D scans (technique 'xct', step {' or '.join(SCAN_STEPS)}); "
            f"this run is technique {start.get('technique')!r}, step {start.get('step')!r}"
        )
    present = await nodes.keys(run)
    streams, counts, frames, times, configurations = [], {}, {}, {}, []
    first_time = {}
    angles = np.zeros(0)
    shape = dtype = None
    attrs: dict = {}
    detector: dict = {}
    for name in STREAM_ORDER:
        if name not in present:
            continue
        stream = await nodes.child(run, name)
        smd = stream.metadata() or {}
        configurations.append(smd.get("configuration") or {})
        try:
            arr = await nodes.child(stream, FRAMES_KEY)
        except KeyError:
            continue
        n, rows, cols = nodes.array_shape(arr)
        if n == 0:
            continue
        cols_table = await nodes.stream_columns(run, name)
        if len(cols_table) != n:
            raise nodes.refuse(f"stream {name!r}: {n} frames but {len(cols_table)} events")
        if shape is None:
            shape = (rows, cols)
            dtype = np.dtype(arr.structure().data_type.to_numpy_dtype()).str
            paths = await nodes.asset_paths(arr)
            attrs = nodes.file_attributes(paths[0]) if paths else {}
            detector = _detector_settings(smd.get("configuration") or {}, attrs)
        elif (rows, cols) != shape:
            raise nodes.refuse(f"stream {name!r}: frames {rows}x{cols}, not {shape[0]}x{shape[1]}")
        streams.append(name)
        counts[name] = n
        frames[name] = arr
        ct = cols_table["clock_time"] if "clock_time" in cols_table else None
        times[name] = np.asarray(ct, float) if ct is not None else np.full(n, np.nan)
        first_time[name] = float(cols_table["time"].iloc[0]) if "time" in cols_table else math.inf
        if name == "primary":
            if ANGLE_KEY not in cols_table:
                raise nodes.refuse(f"the projections have no {ANGLE_KEY!r} column")
            angles = np.asarray(cols_table[ANGLE_KEY], float)
    if "primary" not in streams:
        raise nodes.refuse("the run has no projections (stream 'primary' with ct_det_image)")
    streams.sort(key=lambda s: (first_time[s], STREAM_ORDER.index(s)))
    source = _source_settings(start, configurations)
    scan = TomoScan(
        uid=str(start.get("uid", "")),
        start=start,
        stop=stop,
        streams=streams,
        counts=counts,
        frame_shape=shape,
        dtype=dtype,
        angles=angles,
        cell_time=times,
        pixel_um=detector.get("pixel_um"),
        objective=detector.get("objective"),
        binning=_int(detector.get("binning")),
        exposure_s=detector.get("exposure_s"),
        images_per_frame=_int(detector.get("images")),
        kv=source["kv"],
        filter=source["filter"],
    )
    return scan, frames


class NXtomoWriter:
    """Write an NXtomo file: everything at creation, then the frames block by block."""

    def __init__(self, path, scan: TomoScan):
        import h5py

        self.scan = scan
        self.file = h5py.File(path, "w")
        try:
            self._write_layout()
        except BaseException:
            self.file.close()
            raise

    def _write_layout(self) -> None:
        s, f = self.scan, self.file
        start = s.start
        f.attrs["default"] = "entry"
        f.attrs["creator"] = "operando-beamline"
        entry = nx.group(f, "entry", "NXentry", default="data")
        nx.field(entry, "definition", "NXtomo")
        step = start.get("step", "")
        cycle = start.get("cycle")
        title = f"XCT {step}" + (f" cycle {cycle}" if cycle is not None else "")
        if start.get("postmortem_scan"):
            title += f" ({start['postmortem_scan']})"
        if start.get("experiment_id"):
            title += f", experiment {start['experiment_id']}"
        nx.field(entry, "title", title)
        t0 = nx.iso_time(_float(start.get("time")))
        t1 = nx.iso_time(_float(s.stop.get("time")))
        if t0:
            nx.field(entry, "start_time", t0)
        if t1:
            nx.field(entry, "end_time", t1)
        nx.field(entry, "entry_identifier", s.uid)
        if start.get("experiment_id"):
            nx.field(entry, "experiment_identifier", str(start["experiment_id"]))
        nx.field(entry, "program_name", "operando-beamline")

        inst = nx.group(entry, "instrument", "NXinstrument")
        src = nx.group(inst, "source", "NXsource")
        nx.field(src, "type", "Fixed Tube X-ray")
        nx.field(src, "name", "micro-focus X-ray tube")
        nx.field(src, "probe", "x-ray")
        if s.kv is not None:
            nx.field(src, "voltage", s.kv, units="kV")
        energy = _float(start.get("energy_keV"))
        if energy is not None:
            beam = nx.group(inst, "beam", "NXbeam")
            nx.field(beam, "incident_energy", energy, units="keV")
        dist = _float(start.get("source_sample_distance_mm"))
        if dist is not None:
            nx.field(src, "distance", -dist, units="mm")
        if s.filter:
            flt = nx.group(inst, "filter", "NXfilter")
            nx.field(flt, "description", str(s.filter))

        det = nx.group(inst, "detector", "NXdetector")
        rows, cols = s.frame_shape
        self.data = det.create_dataset(
            "data", shape=(s.n_frames, rows, cols), dtype=s.dtype, chunks=(1, rows, cols)
        )
        self.data.attrs["interpretation"] = "image"
        nx.field(det, "image_key", s.image_key())
        if s.exposure_s is not None:
            per_frame = s.exposure_s * (s.images_per_frame or 1)
            nx.field(det, "count_time", np.full(s.n_frames, per_frame), units="s")
        if s.pixel_um is not None:
            for axis in ("x", "y"):
                nx.field(det, f"{axis}_pixel_size", s.pixel_um, units="µm")
        dist = _float(start.get("sample_detector_distance_mm"))
        if dist is not None:
            nx.field(det, "distance", dist, units="mm")
        nx.field(det, "local_name", "ct_det")
        desc = "CT detector; pixel size at the sample, after binning"
        if s.objective:
            desc += f"; objective {s.objective}"
        if s.binning:
            desc += f"; binning {s.binning}"
        if s.images_per_frame and s.images_per_frame > 1:
            desc += f"; each frame the mean of {s.images_per_frame} images"
        nx.field(det, "description", desc)

        sample = nx.group(entry, "sample", "NXsample")
        nx.field(sample, "name", str(start.get("cell") or "cell"))
        parts = []
        if cycle is not None:
            parts.append(f"cycle {cycle}")
        if step:
            parts.append(f"step {step}")
        if start.get("echem"):
            parts.append(f"electrochemistry {start['echem']}")
        if start.get("experiment_id"):
            parts.append(f"experiment {start['experiment_id']}")
        nx.field(sample, "description", ", ".join(parts) or "operando cell")
        angle = nx.field(sample, "rotation_angle", s.rotation_angle(), units="deg")

        data = nx.group(entry, "data", "NXdata", signal="data")
        nx.link(data, "data", self.data)
        nx.link(data, "rotation_angle", angle)
        nx.link(data, "image_key", det["image_key"])

        context = {
            key: start.get(key)
            for key in ("experiment_id", "cycle", "step", "echem", "technique", "postmortem_scan")
        }
        context.update(
            {
                "objective": s.objective,
                "binning": s.binning,
                "cell_time_s": [
                    None if not math.isfinite(t) else t for t in s.frame_cell_time().tolist()
                ],
                "start": start,
            }
        )
        notes = nx.group(entry, "notes", "NXnote")
        nx.field(notes, "type", "application/json")
        nx.field(
            notes,
            "description",
            "the run's context: experiment, cycle, step, optics, "
            "the cell time of every frame (s, in the order of the frames) and the "
            "bluesky start document",
        )
        nx.field(notes, "data", json.dumps(context, default=str))

    def write_frames(self, offset: int, block) -> None:
        block = np.asarray(block)
        self.data[offset : offset + block.shape[0]] = block

    def close(self) -> None:
        self.file.close()


def _block_frames(scan: TomoScan) -> int:
    rows, cols = scan.frame_shape
    return max(1, int(BLOCK_BYTES // max(1, rows * cols * np.dtype(scan.dtype).itemsize)))


def write_nxtomo(path, scan: TomoScan, frames: dict[str, Any]) -> None:
    """Write ``scan`` with ``frames[stream]`` (numpy or h5py arrays, (n, rows, cols))."""
    writer = NXtomoWriter(path, scan)
    try:
        k = _block_frames(scan)
        for stream, offset in scan.offsets().items():
            for i0 in range(0, scan.counts[stream], k):
                i1 = min(scan.counts[stream], i0 + k)
                writer.write_frames(offset + i0, frames[stream][i0:i1])
    finally:
        writer.close()


async def serialize_nxtomo(mimetype, node, metadata, filter_for_access=None):
    """Tiled exporter (container): the run as an NXtomo file, streamed."""
    import anyio

    scan, frames = await scan_from_node(node, metadata)

    async def write(path):
        writer = await anyio.to_thread.run_sync(NXtomoWriter, path, scan)
        try:
            k = _block_frames(scan)
            for stream, offset in scan.offsets().items():
                for i0 in range(0, scan.counts[stream], k):
                    i1 = min(scan.counts[stream], i0 + k)
                    block = await nodes.read_array(frames[stream], slice(i0, i1))
                    await anyio.to_thread.run_sync(writer.write_frames, offset + i0, block)
        finally:
            await anyio.to_thread.run_sync(writer.close)

    return await nx.streamed_file(write, suffix=".nxs")
