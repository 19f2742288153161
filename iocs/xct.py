"""Simulated operando X-ray CT station: a caproto IOC over the cell physics.

The PV contract is ``docs/xct-pvs.md``; this module serves exactly those PVs
(and a few extra, listed in :class:`XCTStation`). The physics lives in
``operando.iocs.physics`` (no EPICS there); this is a thin shell that advances
the cell model on the simulated clock, turns puts into technique/stage/source
changes, and renders detector frames into HDF5 files.

Run it::

    python -m operando.iocs.xct --prefix XCT: --time-scale 200 --data-dir ./data/xct-frames
    python -m operando.iocs.xct --prefix XCT: --list-pvs

Ground truth for tests never goes through PVs: with ``--truth-file PATH`` the
IOC appends one JSON object per line for every event of interest (``ioc_start``,
``technique_start``, ``technique_end``, ``source``, ``short``, ``file_open``,
``file_close``, ``frame``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import signal
import threading
from pathlib import Path
from textwrap import dedent

import numpy as np
from caproto import AlarmSeverity, AlarmStatus, ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty, run, template_arg_parser
from caproto.server.server import PvpropertyDouble, PvpropertyInteger

from .clock import ClockGroup, SimClock
from .hdf5_writer import HDF5FrameWriter
from .motor import SimMotor
from .physics.materials import effective_energy_kev, i0_rate, objective_flux_factor
from .physics.xct_cell import CellParams, XCTCell
from .physics.xct_phantom import DetectorGeometry, Projector

__all__ = ["XCTStation", "ClippedDouble", "ClippedInteger", "TruthLog", "main"]

TECHNIQUE_STATES = ("idle", "running", "done", "limit", "aborted")
MODES = ("OCV", "CC")
FILTERS = ("None", "LE1", "LE2", "LE3", "HE1")
OBJECTIVES = ("4X", "4X-wide", "20X")
BINNINGS = (1, 2, 4)


# -- PV helpers ---------------------------------------------------------------

def _clip(value, lo, hi):
    if lo == hi:  # EPICS convention: equal limits mean "no limits"
        return value
    return min(max(value, lo), hi)


class ClippedDouble(PvpropertyDouble):
    """A float PV whose puts are clipped to its ctrl limits (the clipped value is stored).

    Plain caproto rejects a put outside the ctrl limits; an instrument front
    panel clips, and so do these PVs. NaN is rejected.
    """

    async def verify_value(self, value):
        value = float(value)
        if math.isnan(value):
            raise ValueError(f"{self.pvname}: NaN is not a valid value")
        value = _clip(value, self.lower_ctrl_limit, self.upper_ctrl_limit)
        result = await super().verify_value(value)
        return value if result is None else result


class ClippedInteger(PvpropertyInteger):
    """An integer PV whose puts are clipped to its ctrl limits."""

    async def verify_value(self, value):
        value = int(_clip(int(round(float(value))), self.lower_ctrl_limit,
                          self.upper_ctrl_limit))
        result = await super().verify_value(value)
        return value if result is None else result


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


class TruthLog:
    """Ground truth as JSON lines (one object per event), for tests; thread-safe.

    A no-op without a path. Never exposed through PVs.
    """

    def __init__(self, path=None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")

    def __bool__(self) -> bool:
        return self._fh is not None

    def write(self, record: dict) -> None:
        if self._fh is None:
            return
        line = json.dumps(record, default=_jsonable)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def _particles_of(geom):
    """The particle array of a cell geometry, whatever its container."""
    if isinstance(geom, dict):
        return geom.get("particles")
    return getattr(geom, "particles", None)


# -- clock is in clock.py; motors in motor.py -----------------------------------

class Potentiostat(PVGroup):
    """BioLogic SP-150e-like potentiostat: OCV and constant-current (CC) techniques.

    PVs
    ---
    mode (enum OCV/CC), current_sp (A, clipped to +-0.8), duration (s > 0),
    e_min/e_max (V, clipped to +-10; stop a CC technique when Ewe leaves them),
    start (put 1: start; returns at once; a running technique is aborted first),
    stop (put 1: abort; the cell goes to OCV), state (idle/running/done/limit/
    aborted), ewe (V), i (A), charge (C), elapsed (s).

    The cell model is advanced every ``tick`` s wall with the applied current; a
    technique ends exactly at its duration (cell time).
    """

    tick = 0.05  # wall s
    noise_v = 50e-6  # V rms on Ewe

    mode = pvproperty(value="OCV", enum_strings=MODES, dtype=ChannelType.ENUM,
                      doc="Technique to run: OCV or CC")
    current_sp = pvproperty(value=0.0, dtype=ClippedDouble, lower_ctrl_limit=-0.8,
                            upper_ctrl_limit=0.8, units="A", precision=9,
                            doc="CC current (A); clipped to the ctrl limits +-0.8 A")
    duration = pvproperty(value=3600.0, dtype=ClippedDouble, lower_ctrl_limit=1e-3,
                          upper_ctrl_limit=1e8, units="s", precision=3,
                          doc="Technique duration in cell s (> 0)")
    e_min = pvproperty(value=-10.0, dtype=ClippedDouble, lower_ctrl_limit=-10.0,
                       upper_ctrl_limit=10.0, units="V", precision=4,
                       doc="Lower Ewe limit of the CC technique (V)")
    e_max = pvproperty(value=10.0, dtype=ClippedDouble, lower_ctrl_limit=-10.0,
                       upper_ctrl_limit=10.0, units="V", precision=4,
                       doc="Upper Ewe limit of the CC technique (V)")
    start_cmd = pvproperty(name="start", value=0,
                           doc="Put 1: start the technique (returns at once)")
    stop_cmd = pvproperty(name="stop", value=0,
                          doc="Put 1: abort the running technique; cell to OCV")
    state = pvproperty(value="idle", enum_strings=TECHNIQUE_STATES,
                       dtype=ChannelType.ENUM, read_only=True, doc="Technique state")
    ewe = pvproperty(value=0.0, read_only=True, units="V", precision=6,
                     doc="Working electrode potential (V)")
    i = pvproperty(value=0.0, read_only=True, units="A", precision=9, doc="Current (A)")
    charge = pvproperty(value=0.0, read_only=True, units="C", precision=9,
                        doc="Charge passed in the current technique (C)")
    elapsed = pvproperty(value=0.0, read_only=True, units="s", precision=3,
                         doc="Technique elapsed time (cell s)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.applied_current = 0.0
        self.technique: dict | None = None
        self._wake = asyncio.Event()
        self._rng = np.random.default_rng([self.parent.seed, 1])
        self._short_logged = False

    @property
    def station(self) -> "XCTStation":
        return self.parent

    def advance_cell(self, t: float) -> None:
        """Advance the cell model to cell time ``t`` at the applied current."""
        cell = self.station.cell
        if t > cell.t:
            cell.advance(t, self.applied_current)
        if cell.shorted and not self._short_logged:
            self._short_logged = True
            self.station.truth.write({"event": "short", "t": cell.short_time,
                                      "t_detected": t})

    async def _finish(self, reason: str, t_end: float) -> None:
        """End the running technique at ``t_end`` (cell already advanced to it)."""
        tech = self.technique
        if tech is None:
            return
        elapsed = max(t_end - tech["t0"], 0.0)
        charge = tech["current"] * elapsed
        self.technique = None
        self.applied_current = 0.0
        await self.elapsed.write(elapsed)
        await self.charge.write(charge)
        await self.i.write(0.0)
        await self.state.write(reason)
        self.station.truth.write({"event": "technique_end", "t": t_end, "reason": reason,
                                  "mode": tech["mode"], "current_a": tech["current"],
                                  "elapsed_s": elapsed, "charge_c": charge,
                                  "ewe_v": self.ewe.value, "truth": self.station.cell.truth()})

    async def update(self) -> float:
        """Advance the cell to now, end the technique if due, refresh readbacks.

        Returns the cell time it advanced to. Everything that needs the cell at
        "now" calls this, so a technique never runs past its duration.
        """
        clock = self.station.simclock
        now = clock.now()
        tech = self.technique
        if tech is not None and now >= tech["t_end"]:
            self.advance_cell(tech["t_end"])
            await self._finish("done", tech["t_end"])
            tech = None
        self.advance_cell(now)
        cell = self.station.cell
        ewe = float(cell.potential_v(self.applied_current)) + self._rng.normal(0.0, self.noise_v)
        await self.ewe.write(ewe)
        if tech is not None:
            elapsed = now - tech["t0"]
            await self.elapsed.write(elapsed)
            await self.charge.write(tech["current"] * elapsed)
            await self.i.write(tech["current"])
            if tech["mode"] == "CC" and not tech["e_min"] <= ewe <= tech["e_max"]:
                await self._finish("limit", now)
        return now

    @ewe.startup
    async def ewe(self, instance, async_lib):
        clock = self.station.simclock
        while True:
            await self.update()
            wall = self.tick
            if self.technique is not None:
                wall = min(wall, clock.wall_delay(self.technique["t_end"] - clock.now()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(wall, 1e-3))
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    @start_cmd.putter
    async def start_cmd(self, instance, value):
        if not value:
            return 0
        now = await self.update()
        if self.technique is not None:
            await self._finish("aborted", now)
        mode = self.mode.value
        current = float(self.current_sp.value) if mode == "CC" else 0.0
        duration = float(self.duration.value)
        self.technique = dict(mode=mode, current=current, t0=now, t_end=now + duration,
                              e_min=float(self.e_min.value), e_max=float(self.e_max.value))
        self.applied_current = current
        await self.elapsed.write(0.0)
        await self.charge.write(0.0)
        await self.i.write(current)
        await self.state.write("running")
        self.station.truth.write({"event": "technique_start", "t": now, "mode": mode,
                                  "current_a": current, "duration_s": duration,
                                  "e_min": self.technique["e_min"],
                                  "e_max": self.technique["e_max"],
                                  "truth": self.station.cell.truth()})
        self._wake.set()
        return 0

    @stop_cmd.putter
    async def stop_cmd(self, instance, value):
        if value and self.technique is not None:
            now = await self.update()
            if self.technique is not None:
                await self._finish("aborted", now)
            self._wake.set()
        return 0


class ForceSensor(PVGroup):
    """KM10z load cell (0-500 N) read through a GSV-3USB bridge amplifier.

    PVs
    ---
    bridge (mV/V, RO): 2 mV/V at 500 N, clipped at full scale.
    force (N, RO): bridge / 2 mV/V * 500 N - offset; alarm limits 450 N (MINOR,
        HIGH) and 500 N (MAJOR, HIHI) on the load the sensor carries; over-range
        reads as 500 N with a MAJOR alarm.
    tare (put 1): take the present force as the zero offset.
    offset (N, RO): tare offset.
    """

    full_scale_n = 500.0
    full_scale_mv_v = 2.0
    warning_n = 450.0
    noise_n = 0.02
    period = 0.1  # wall s

    bridge = pvproperty(value=0.0, read_only=True, units="mV/V", precision=6,
                        doc="GSV-3USB bridge signal (2 mV/V at 500 N)")
    force = pvproperty(value=0.0, read_only=True, units="N", precision=3,
                       upper_alarm_limit=500.0, upper_warning_limit=450.0,
                       doc="Force (N) = bridge/2 mV/V*500 N - tare offset")
    tare = pvproperty(value=0, doc="Put 1: take the current force as zero offset")
    offset = pvproperty(value=0.0, read_only=True, units="N", precision=3,
                        doc="Tare offset (N)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng([self.parent.seed, 2])
        self._load = 0.0

    async def _update(self) -> None:
        load = float(self.parent.cell.force_n) + self._rng.normal(0.0, self.noise_n)
        load = min(load, self.full_scale_n)
        self._load = load
        bridge = load / self.full_scale_n * self.full_scale_mv_v
        if load >= self.full_scale_n:
            status, severity = AlarmStatus.HIHI, AlarmSeverity.MAJOR_ALARM
        elif load >= self.warning_n:
            status, severity = AlarmStatus.HIGH, AlarmSeverity.MINOR_ALARM
        else:
            status, severity = AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM
        force = bridge / self.full_scale_mv_v * self.full_scale_n - self.offset.value
        await self.bridge.write(bridge, verify_value=False, status=status, severity=severity)
        await self.force.write(force, verify_value=False, status=status, severity=severity)

    @force.scan(period=period)
    async def force(self, instance, async_lib):
        await self._update()

    @tare.putter
    async def tare(self, instance, value):
        if value:
            await self.offset.write(self._load)
            await self._update()
        return 0


class XraySource(PVGroup):
    """Micro-focus X-ray tube (Xradia 620 Versa: up to 70 kV, 10 W).

    PVs
    ---
    on (0/1): put with completion; completes when the source is ready (after a
        warm-up of ``warmup_s`` cell s) or off (at once).
    on_rbv (RO): 1 when ready. Frames are dark unless on_rbv = 1.
    kv (kV, clipped 0..70), ua (uA, clipped 0..150), filter (None/LE1/LE2/LE3/HE1).
    """

    warmup_s = 10.0  # cell s

    on = pvproperty(value=0, dtype=ClippedInteger, lower_ctrl_limit=0, upper_ctrl_limit=1,
                    doc="Put 1/0 with completion: completes when ready / off")
    on_rbv = pvproperty(value=0, read_only=True, doc="Source state (1: ready)")
    kv = pvproperty(value=70.0, dtype=ClippedDouble, lower_ctrl_limit=0.0,
                    upper_ctrl_limit=70.0, units="kV", precision=2,
                    doc="Tube voltage (kV), clipped to 0..70")
    ua = pvproperty(value=143.0, dtype=ClippedDouble, lower_ctrl_limit=0.0,
                    upper_ctrl_limit=150.0, units="uA", precision=2,
                    doc="Tube current (uA), clipped to 0..150")
    filter = pvproperty(value="LE1", enum_strings=FILTERS, dtype=ChannelType.ENUM,
                        doc="Low-energy filter")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._wanted = False
        self._ready_at: float | None = None

    @property
    def emitting(self) -> bool:
        return bool(self.on_rbv.value) and self.kv.value > 0 and self.ua.value > 0

    def _log(self, state: str) -> None:
        self.parent.truth.write({"event": "source", "t": self.parent.simclock.now(),
                                 "state": state, "kv": self.kv.value, "ua": self.ua.value,
                                 "filter": self.filter.value})

    @on.putter
    async def on(self, instance, value):
        clock = self.parent.simclock
        if not value:
            self._wanted = False
            self._ready_at = None
            if self.on_rbv.value:
                await self.on_rbv.write(0)
                self._log("off")
            return 0
        await instance.write(1, verify_value=False)
        if self.on_rbv.value:
            return 1
        if not self._wanted:
            self._wanted = True
            self._ready_at = clock.now() + self.warmup_s
        while self._wanted and self._ready_at is not None and clock.now() < self._ready_at:
            await clock.sleep_until(self._ready_at)
        if self._wanted and not self.on_rbv.value:
            await self.on_rbv.write(1)
            self._log("on")
        return 1 if self._wanted else 0


class CTCam(PVGroup):
    """Camera of the CT detector (areaDetector-like names).

    PVs
    ---
    AcquireTime (s, clipped to [1e-3, 3600]), NumExposures (1..100),
    Objective (4X/4X-wide/20X), BinX (1/2/4, both axes), Acquire (put 1 with
    completion: one frame), Acquire_RBV (1 while acquiring), ArrayCounter (RW,
    frames acquired; put to reset), ArrayCounter_RBV, SizeX_RBV (columns),
    SizeY_RBV (rows), PixelSize_RBV (um at the sample, after binning).
    """

    acquire_time = pvproperty(name="AcquireTime", value=1.5, dtype=ClippedDouble,
                              lower_ctrl_limit=1e-3, upper_ctrl_limit=3600.0, units="s",
                              precision=4, doc="Exposure per image (cell s)")
    num_exposures = pvproperty(name="NumExposures", value=3, dtype=ClippedInteger,
                               lower_ctrl_limit=1, upper_ctrl_limit=100,
                               doc="Images averaged per frame")
    objective = pvproperty(name="Objective", value="4X", enum_strings=OBJECTIVES,
                           dtype=ChannelType.ENUM, doc="Optics (voxel 3.4/5.44/0.68 um)")
    bin_x = pvproperty(name="BinX", value=4, dtype=ClippedInteger, lower_ctrl_limit=1,
                       upper_ctrl_limit=4, doc="Binning 1, 2 or 4 (both axes)")
    acquire = pvproperty(name="Acquire", value=0,
                         doc="Put 1 with completion: acquire one frame")
    acquire_rbv = pvproperty(name="Acquire_RBV", value=0, read_only=True,
                             doc="1 while a frame is being acquired")
    array_counter = pvproperty(name="ArrayCounter", value=0,
                               doc="Frames acquired (put to reset)")
    array_counter_rbv = pvproperty(name="ArrayCounter_RBV", value=0, read_only=True,
                                   doc="Frames acquired")
    size_x = pvproperty(name="SizeX_RBV", value=0, read_only=True,
                        doc="Frame width (columns) after binning")
    size_y = pvproperty(name="SizeY_RBV", value=0, read_only=True,
                        doc="Frame height (rows) after binning")
    pixel_size = pvproperty(name="PixelSize_RBV", value=0.0, read_only=True, units="um",
                            precision=4, doc="Pixel size at the sample after binning (um)")

    @size_x.startup
    async def size_x(self, instance, async_lib):
        await self.parent.startup()

    @acquire.putter
    async def acquire(self, instance, value):
        if value:
            await instance.write(1, verify_value=False)
            await self.parent.acquire_frame()
        return 0

    @array_counter.putter
    async def array_counter(self, instance, value):
        await self.array_counter_rbv.write(int(value))
        return int(value)

    @objective.putter
    async def objective(self, instance, value):
        await self.parent.set_optics(objective=value)
        return value

    @bin_x.putter
    async def bin_x(self, instance, value):
        value = max(b for b in BINNINGS if b <= max(int(value), 1))
        await self.parent.set_optics(binning=value)
        return value


class HDF1(PVGroup):
    """HDF5 file plugin (areaDetector NDFileHDF5-like names).

    PVs
    ---
    FilePath (char[256]; created if missing), FileName (char[256]), FileNumber
    (incremented after each file is opened), FullFileName_RBV (char[256]),
    Capture (put 1: open FilePath/FileName_NNNNNN.h5, closing a file still
    open; put 0: close), Capture_RBV, NumCaptured_RBV.
    """

    file_path = pvproperty(name="FilePath", value="", max_length=256,
                           dtype=ChannelType.CHAR, string_encoding="utf-8",
                           doc="Directory of the HDF5 files")
    file_name = pvproperty(name="FileName", value="xct", max_length=256,
                           dtype=ChannelType.CHAR, string_encoding="utf-8",
                           doc="File base name")
    file_number = pvproperty(name="FileNumber", value=1,
                             doc="Number of the next file (incremented on open)")
    full_file_name = pvproperty(name="FullFileName_RBV", value="", max_length=256,
                                dtype=ChannelType.CHAR, string_encoding="utf-8",
                                read_only=True, doc="Absolute path of the open/last file")
    capture = pvproperty(name="Capture", value=0,
                         doc="Put 1: open a new file (SWMR); put 0: close it")
    capture_rbv = pvproperty(name="Capture_RBV", value=0, read_only=True,
                             doc="1 while a file is open")
    num_captured = pvproperty(name="NumCaptured_RBV", value=0, read_only=True,
                              doc="Frames written to the open file")

    @capture.putter
    async def capture(self, instance, value):
        if value:
            await self.parent.open_file()
            return 1
        await self.parent.close_file()
        return 0

    @capture.shutdown
    async def capture(self, instance, async_lib):
        self.parent.writer.close()


class CTDetector(PVGroup):
    """Xradia-620-Versa-like CT detector: ``cam:`` and ``HDF1:`` (see those groups).

    An Acquire waits NumExposures x AcquireTime of cell time, then renders the
    frame from the cell geometry, stage th/x/z and source state at that moment
    (source not ready: a dark frame), in a worker thread, writes it to the open
    HDF5 file (if capturing), and completes.
    """

    cam = SubGroup(CTCam, prefix="cam:")
    hdf1 = SubGroup(HDF1, prefix="HDF1:")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        station = self.parent
        self.writer = HDF5FrameWriter()
        self._lock = asyncio.Lock()
        self._rng = np.random.default_rng([station.seed, 3])
        self._projectors: dict = {}
        self.objective = "4X"
        self.binning = int(station.binning)
        self.geometry = DetectorGeometry.for_objective(self.objective, binning=self.binning)

    @property
    def station(self) -> "XCTStation":
        return self.parent

    async def _publish_geometry(self) -> None:
        det = self.geometry
        await self.cam.size_x.write(int(det.n_cols))
        await self.cam.size_y.write(int(det.n_rows))
        await self.cam.pixel_size.write(float(det.pixel_um))

    async def startup(self) -> None:
        """Publish the initial binning, file path and frame geometry."""
        await self.cam.bin_x.write(self.binning, verify_value=False)
        await self.hdf1.file_path.write(str(self.station.data_dir))
        await self._publish_geometry()

    async def set_optics(self, *, objective=None, binning=None) -> None:
        """Change objective and/or binning (refused while a file is open; waits
        for a frame being acquired)."""
        objective = self.objective if objective is None else str(objective)
        binning = self.binning if binning is None else int(binning)
        if (objective, binning) == (self.objective, self.binning):
            return
        async with self._lock:
            if self.writer.is_open:
                raise RuntimeError("cannot change the objective or binning while capturing "
                                   "(the open file's frame shape is fixed): put Capture 0")
            self.geometry = DetectorGeometry.for_objective(objective, binning=binning)
            self.objective, self.binning = objective, binning
            await self._publish_geometry()

    # -- files ----------------------------------------------------------------
    async def open_file(self) -> Path:
        hdf = self.hdf1
        async with self._lock:
            number = int(hdf.file_number.value)
            directory = Path(hdf.file_path.value or self.station.data_dir).expanduser()
            path = directory.absolute() / f"{hdf.file_name.value}_{number:06d}.h5"
            shape = (int(self.geometry.n_rows), int(self.geometry.n_cols))
            attrs = {"objective": self.objective, "binning": self.binning,
                     "pixel_size_um": float(self.geometry.pixel_um)}
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.writer.open, path, shape, attrs)
            await hdf.file_number.write(number + 1)
            await hdf.full_file_name.write(str(path))
            await hdf.num_captured.write(0)
            await hdf.capture_rbv.write(1)
            self.station.truth.write({"event": "file_open", "t": self.station.simclock.now(),
                                      "path": str(path), "shape": shape})
            return path

    async def close_file(self) -> None:
        async with self._lock:
            if self.writer.is_open:
                path, n = self.writer.path, self.writer.num_frames
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self.writer.close)
                self.station.truth.write({"event": "file_close",
                                          "t": self.station.simclock.now(),
                                          "path": str(path), "frames": n})
            await self.hdf1.capture_rbv.write(0)

    # -- frames ---------------------------------------------------------------
    def _projector(self, snap: dict) -> Projector:
        energy_kev = snap["energy_kev"]
        key = (snap["objective"], snap["binning"], round(energy_kev, 2))
        proj = self._projectors.get(key)
        if proj is None:
            if len(self._projectors) > 8:
                self._projectors.clear()
            proj = Projector(snap["det_geometry"], energy_kev=energy_kev,
                             axis_offset_px=self.station.axis_offset_px,
                             seed=self.station.seed)
            self._projectors[key] = proj
        return proj

    def _render_and_store(self, snap: dict):
        """Worker thread: render the frame, append it to the file, log the truth."""
        proj = self._projector(snap)
        if snap["source_on"]:
            transmission = proj.transmission(snap["geometry"], snap["theta_deg"],
                                             stage_x_mm=snap["stage_x_mm"],
                                             stage_z_mm=snap["stage_z_mm"])
        else:  # dark frame: no need to project
            det = snap["det_geometry"]
            transmission = np.ones((int(det.n_rows), int(det.n_cols)))
        frame = proj.frame(transmission, snap["counts_per_exposure"], snap["n_exposures"],
                           self._rng, source_on=snap["source_on"])
        index = self.writer.append(frame) if self.writer.is_open else None
        if self.station.truth:
            record = {k: v for k, v in snap.items()
                      if k not in ("geometry", "det_geometry")}
            record.update(event="frame", file=str(self.writer.path) if index is not None
                          else None, index=index, frame_mean=float(np.mean(frame)),
                          particles=_particles_of(snap["geometry"]))
            self.station.truth.write(record)
        return frame, index

    async def acquire_frame(self) -> None:
        """One frame: expose in cell time, render off the event loop, store."""
        station = self.station
        clock = station.simclock
        cam = self.cam
        async with self._lock:
            await cam.acquire_rbv.write(1)
            try:
                t0 = clock.now()
                n_exp = int(cam.num_exposures.value)
                exposure = float(cam.acquire_time.value)
                await clock.sleep_until(t0 + n_exp * exposure)
                t1 = await station.pstat.update()  # the cell at the end of the exposure
                src = station.src
                kv, ua, filt = float(src.kv.value), float(src.ua.value), src.filter.value
                source_on = src.emitting
                energy = float(effective_energy_kev(kv if kv > 0 else 70.0, filt))
                # open-beam counts per full-size pixel and exposure (binning averages)
                counts = (float(i0_rate(kv, ua, filt)) * exposure
                          * objective_flux_factor(self.objective)) if source_on else 0.0
                stage = station.stage
                snap = dict(
                    t_start=t0, t=t1, theta_deg=stage.th.position,
                    stage_x_mm=stage.x.position, stage_y_mm=stage.y.position,
                    stage_z_mm=stage.z.position, source_on=source_on, kv=kv, ua=ua,
                    filter=filt, energy_kev=energy, counts_per_exposure=counts,
                    n_exposures=n_exp, acquire_time=exposure, objective=self.objective,
                    binning=self.binning, pixel_um=float(self.geometry.pixel_um),
                    det_geometry=self.geometry,
                    array_counter=int(cam.array_counter.value) + 1,
                    geometry=station.cell.geometry(),  # a frozen snapshot
                    truth=station.cell.truth() if station.truth else None,
                )
                loop = asyncio.get_running_loop()
                _, index = await loop.run_in_executor(None, self._render_and_store, snap)
                count = int(cam.array_counter.value) + 1
                await cam.array_counter.write(count, verify_value=False)
                await cam.array_counter_rbv.write(count)
                if index is not None:
                    await self.hdf1.num_captured.write(index + 1)
            finally:
                await cam.acquire_rbv.write(0)


class SampleStage(PVGroup):
    """Sample stage: motor records th (deg, +-720, 30 deg/s), x, y, z (mm, +-25, 2 mm/s).

    x is across the beam, y along it, z vertical; th rotates about the vertical
    axis through x = 0. Moves run in cell time.
    """

    th = SubGroup(SimMotor, prefix="th", velocity=30.0, acceleration=0.1,
                  limits=(-720.0, 720.0), egu="deg", precision=4)
    x = SubGroup(SimMotor, prefix="x", velocity=2.0, acceleration=0.1,
                 limits=(-25.0, 25.0), egu="mm", precision=4)
    y = SubGroup(SimMotor, prefix="y", velocity=2.0, acceleration=0.1,
                 limits=(-25.0, 25.0), egu="mm", precision=4)
    z = SubGroup(SimMotor, prefix="z", velocity=2.0, acceleration=0.1,
                 limits=(-25.0, 25.0), egu="mm", precision=4)


class XCTStation(PVGroup):
    """Simulated operando X-ray CT station (pressurized cell, lab CT scanner).

    PVs (prefix P; the contract is docs/xct-pvs.md)
    ---
    P clock:time, clock:scale, clock:wait (extra: clock:hold)
    P pstat:mode, current_sp, duration, e_min, e_max, start, stop, state, ewe, i,
      charge, elapsed
    P force:bridge, force, tare, offset
    P src:on, on_rbv, kv, ua, filter
    P det:cam:AcquireTime, NumExposures, Objective, BinX, Acquire,
      ArrayCounter_RBV, SizeX_RBV, SizeY_RBV, PixelSize_RBV
      (extra: Acquire_RBV, ArrayCounter)
    P det:HDF1:FilePath, FileName, FileNumber, FullFileName_RBV, Capture,
      Capture_RBV, NumCaptured_RBV
    P stage:th, stage:x, stage:y, stage:z (motor records)
    """

    clock = SubGroup(ClockGroup, prefix="clock:")
    pstat = SubGroup(Potentiostat, prefix="pstat:")
    force = SubGroup(ForceSensor, prefix="force:")
    src = SubGroup(XraySource, prefix="src:")
    det = SubGroup(CTDetector, prefix="det:")
    stage = SubGroup(SampleStage, prefix="stage:")

    def __init__(self, *args, time_scale: float = 1.0, seed: int = 0, binning: int = 4,
                 data_dir="./data/xct-frames", truth_file=None,
                 cell_params: CellParams | None = None, axis_offset_px: float = 3.7,
                 hold: bool = False, **kwargs):
        if binning not in BINNINGS:
            raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")
        # Set before PVGroup.__init__: the subgroups find them through .parent.
        self.seed = int(seed)
        self.binning = int(binning)
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.axis_offset_px = float(axis_offset_px)
        self.cell_params = cell_params or CellParams()
        self.cell = XCTCell(self.cell_params, seed=self.seed)
        self.truth = TruthLog(truth_file)
        self.simclock = SimClock(time_scale, hold=hold)
        super().__init__(*args, **kwargs)

    async def startup_hook(self, async_lib) -> None:
        """``run(..., startup_hook=ioc.startup_hook)``: cell t = 0 when serving starts.

        It runs before the groups' startup methods (first task created). It also
        makes SIGTERM stop the server like SIGINT (clean shutdown: the open HDF5
        file is closed).
        """
        self.simclock.restart(0.0)
        self.truth.write({"event": "ioc_start", "t": self.simclock.now(),
                          "prefix": self.prefix, "time_scale": self.simclock.scale,
                          "seed": self.seed, "binning": self.binning,
                          "held": self.simclock.held, "axis_offset_px": self.axis_offset_px,
                          "cell_params": self.cell_params, "truth": self.cell.truth()})
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))

    def close(self) -> None:
        """Close the open HDF5 file and the truth log (at exit)."""
        self.det.writer.close()
        self.truth.close()


def main(argv=None) -> None:
    parser, split_args = template_arg_parser(
        default_prefix="XCT:", desc=dedent(XCTStation.__doc__),
        supported_async_libs=("asyncio",), argv=argv)
    parser.add_argument("--time-scale", type=float, default=1.0, metavar="S",
                        help="cell seconds per wall second (default 1)")
    parser.add_argument("--data-dir", default="./data/xct-frames", metavar="D",
                        help="default FilePath of the HDF5 files (default ./data/xct-frames)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="random seed of the cell and the noise (default 0)")
    parser.add_argument("--binning", type=int, default=4, choices=BINNINGS, metavar="B",
                        help="initial detector binning 1, 2 or 4 (default 4)")
    parser.add_argument("--truth-file", default=None, metavar="PATH",
                        help="append ground truth as JSON lines to PATH (for tests)")
    parser.add_argument("--hold", action="store_true",
                        help="start with the cell time frozen at 0 until clock:hold is put 0")
    args = parser.parse_args(argv)
    if not args.time_scale > 0:
        parser.error("--time-scale must be > 0")
    ioc_options, run_options = split_args(args)
    ioc = XCTStation(time_scale=args.time_scale, seed=args.seed, binning=args.binning,
                     data_dir=args.data_dir, truth_file=args.truth_file, hold=args.hold,
                     **ioc_options)
    try:
        run(ioc.pvdb, startup_hook=ioc.startup_hook, **run_options)
    except KeyboardInterrupt:
        pass
    finally:
        ioc.close()


if __name__ == "__main__":
    main()
