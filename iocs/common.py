"""Building blocks shared by the station simulators (``xct.py``, ``saxs.py``).

Nothing here knows a particular cell or detector physics; each station plugs its
models in through a few hooks:

* :class:`ClippedDouble`, :class:`ClippedInteger` — PVs that clip puts to their
  ctrl limits like an instrument front panel.
* :class:`TruthLog` — ground truth as JSON lines (tests only, never via PVs).
* :class:`Potentiostat` — OCV and constant-current techniques on the station's
  cell model (``station.cell``), advanced on the simulated clock. The cell model
  is reached through :meth:`Potentiostat.cell_time`, :meth:`~Potentiostat.cell_voltage`,
  :meth:`~Potentiostat.advance_cell` and, for exact potential limits,
  :meth:`~Potentiostat.limit_time`; a station subclasses it to adapt its model or
  add techniques (the SAXS station adds GCPL).
* :class:`DetectorCam`, :class:`HDF1`, :class:`FrameDetector` — an
  areaDetector-like camera + HDF5 plugin. A station's detector subclasses
  :class:`FrameDetector` and supplies the frame shape, a snapshot of the
  station at the end of the exposure (taken on the event loop) and a render
  callable (run in a worker thread).
* :class:`Station` — the top-level group: seed, data dir, truth log, simulated
  clock, start-up hook (cell t = 0 when serving starts; SIGTERM = SIGINT) and
  clean close; :func:`station_arg_parser` / :func:`serve` for ``main()``.
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
from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty, run, template_arg_parser
from caproto.server.server import PvpropertyDouble, PvpropertyInteger

from .clock import VIRTUAL, make_clock, parse_time_scale
from .hdf5_writer import HDF5FrameWriter

__all__ = [
    "TECHNIQUE_STATES", "ClippedDouble", "ClippedInteger", "TruthLog", "Potentiostat",
    "DetectorCam", "HDF1", "FrameDetector", "Station", "station_arg_parser",
    "station_kwargs", "serve", "keyed_normal",
]

TECHNIQUE_STATES = ("idle", "running", "done", "limit", "aborted")


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


def keyed_normal(seed: int, stream: int, t: float, sigma: float) -> float:
    """Gaussian noise (rms ``sigma``) that is a function of the cell time ``t``.

    A reading's noise depends on the seed, the signal (``stream``) and the cell
    time of the reading (to the microsecond), never on how often a loop ran or
    a client read: the same experiment gives the same readings.
    """
    key = int(round(float(t) * 1e6))
    return float(np.random.default_rng([int(seed), int(stream), key]).normal(0.0, sigma))


def char_pv(name: str, value: str = "", *, max_length: int = 256, read_only: bool = False,
            doc: str = ""):
    """A long-string PV as a char waveform (a DBR_STRING holds only 40 characters)."""
    return pvproperty(name=name, value=value, max_length=max_length, dtype=ChannelType.CHAR,
                      string_encoding="utf-8", read_only=read_only, doc=doc)


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


# -- potentiostat -----------------------------------------------------------------

class Potentiostat(PVGroup):
    """BioLogic SP-150e-like potentiostat: OCV and constant-current (CC) techniques.

    PVs
    ---
    mode (enum OCV/CC), current_sp (A, clipped to +-0.8), duration (s > 0),
    e_min/e_max (V, clipped to +-10; stop a CC technique when Ewe leaves them),
    start (put 1: start; completes once the technique runs; a running technique
    is aborted first), stop (put 1: abort; the cell goes to OCV), wait (put 1
    with completion: completes when the running technique ends, at once if none
    runs), state (idle/running/done/limit/aborted), ewe (V), i (A), charge (C),
    elapsed (s).

    The cell model (``station.cell``) is advanced with the applied current every
    ``tick`` s wall (scaled time) or at every advance of the clock (virtual
    time), and exactly to every technique event (its duration, an exact
    potential limit from :meth:`limit_time`), so a technique's end never
    depends on the loop tick.

    Hooks for a station's cell model: :meth:`cell_time`, :meth:`cell_voltage`,
    :meth:`advance_cell`, :meth:`limit_time`; for more techniques:
    :meth:`technique_current`, :meth:`begin_technique`, :meth:`handle_event`,
    :meth:`publish_technique`, :meth:`technique_truth`.
    """

    tick = 0.05  # wall s
    noise_v = 50e-6  # V rms on Ewe
    rng_stream = 1

    mode = pvproperty(value="OCV", enum_strings=("OCV", "CC"), dtype=ChannelType.ENUM,
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
                           doc="Put 1: start the technique (completes once it runs)")
    wait_cmd = pvproperty(name="wait", value=0,
                          doc="Put 1 with completion: completes when the technique ends")
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
        self._ended = asyncio.Event()
        self._ended.set()
        self._lock = asyncio.Lock()

    @property
    def station(self):
        return self.parent

    @property
    def cell(self):
        return self.parent.cell

    # -- cell-model hooks --------------------------------------------------------
    def cell_time(self) -> float:
        """The cell model's time (s)."""
        return float(self.cell.time)

    def cell_voltage(self, current_a: float) -> float:
        """Noise-free Ewe (V) of the cell model while ``current_a`` flows."""
        return float(self.cell.voltage(current_a))

    def advance_cell(self, t: float) -> None:
        """Advance the cell model to cell time ``t`` at the applied current."""
        if t > self.cell_time():
            self.cell.advance(t, self.applied_current)

    def limit_time(self, current_a: float, e_min: float, e_max: float) -> float:
        """Cell seconds of ``current_a`` from now until Ewe leaves [e_min, e_max]
        exactly (``inf``: none known; the noisy per-tick check still applies to CC)."""
        return math.inf

    # -- technique hooks ---------------------------------------------------------
    def technique_current(self, mode: str) -> float:
        """The current a technique starts with."""
        return float(self.current_sp.value) if mode == "CC" else 0.0

    def begin_technique(self, now: float) -> dict:
        """The state of a technique started at ``now`` (cell advanced to it)."""
        mode = self.mode.value
        current = self.technique_current(mode)
        tech = dict(mode=mode, current=current, t0=now, seg_t0=now, q0=0.0,
                    t_end=now + float(self.duration.value),
                    e_min=float(self.e_min.value), e_max=float(self.e_max.value))
        tech["t_limit"] = self._limit_at(tech, now)
        return tech

    def _limit_at(self, tech: dict, now: float) -> float:
        if tech["current"] == 0.0:
            return math.inf
        return now + self.limit_time(tech["current"], tech["e_min"], tech["e_max"])

    def next_event(self) -> tuple[float, str]:
        """(cell time, kind) of the running technique's next event."""
        tech = self.technique
        if tech["t_limit"] < tech["t_end"]:
            return tech["t_limit"], "limit"
        return tech["t_end"], "duration"

    async def handle_event(self, kind: str, t: float) -> None:
        """React to an event at cell time ``t`` (the cell is advanced to it)."""
        await self._finish("done" if kind == "duration" else "limit", t)

    def technique_charge(self, t: float) -> float:
        tech = self.technique
        return tech["q0"] + tech["current"] * (t - tech["seg_t0"])

    async def publish_technique(self, t: float) -> None:
        """Readbacks of the running technique at cell time ``t``."""
        tech = self.technique
        await self.elapsed.write(t - tech["t0"])
        await self.charge.write(self.technique_charge(t))
        await self.i.write(tech["current"])

    def technique_truth(self, tech: dict) -> dict:
        """Extra ground truth for technique_start/technique_end records."""
        return {"truth": self.station.cell.truth()}

    # -- engine ------------------------------------------------------------------
    async def _finish(self, reason: str, t_end: float) -> None:
        """End the running technique at ``t_end`` (cell already advanced to it)."""
        tech = self.technique
        if tech is None:
            return
        elapsed = max(t_end - tech["t0"], 0.0)
        charge = self.technique_charge(t_end)
        await self.publish_technique(t_end)
        self.technique = None
        self.applied_current = 0.0
        self._ended.set()
        await self.elapsed.write(elapsed)
        await self.charge.write(charge)
        await self.i.write(0.0)
        await self.technique_ended(tech, reason, t_end)
        await self.state.write(reason)
        self.station.truth.write({"event": "technique_end", "t": t_end, "reason": reason,
                                  "mode": tech["mode"], "current_a": tech["current"],
                                  "elapsed_s": elapsed, "charge_c": charge,
                                  "ewe_v": self.ewe.value, **self.technique_truth(tech)})

    async def technique_ended(self, tech: dict, reason: str, t_end: float) -> None:
        """Hook: extra readbacks when a technique ends (before ``state`` changes)."""

    async def update(self) -> float:
        """Advance the cell to now through every technique event, refresh readbacks.

        Returns the cell time it advanced to. Everything that needs the cell at
        "now" calls this, so a technique never runs past its events.
        """
        async with self._lock:
            return await self._update()

    async def _update(self) -> float:
        """:meth:`update`, the lock held (one change of the technique at a time)."""
        now = self.station.simclock.now()
        while self.technique is not None:
            t_event, kind = self.next_event()
            if t_event > now:
                break
            self.advance_cell(t_event)
            await self.handle_event(kind, t_event)
        self.advance_cell(now)
        ewe = self.cell_voltage(self.applied_current) + keyed_normal(
            self.station.seed, self.rng_stream, now, self.noise_v)
        await self.ewe.write(ewe)
        tech = self.technique
        if tech is not None:
            await self.publish_technique(now)
            if tech["mode"] == "CC" and not tech["e_min"] <= ewe <= tech["e_max"]:
                await self._finish("limit", now)
        return now

    def next_event_time(self) -> float:
        """Cell time of the running technique's next event (``inf``: none)."""
        return self.next_event()[0] if self.technique is not None else math.inf

    async def _step(self, t: float) -> None:
        await self.update()

    @ewe.startup
    async def ewe(self, instance, async_lib):
        clock = self.station.simclock
        if clock.virtual:
            # Virtual time: the clock stops at every technique event and the
            # cell catches up at every advance; no loop of our own.
            clock.add_event_source(self.next_event_time)
            clock.add_step_hook(self._step)
            await self.update()
            return
        while True:
            await self.update()
            wall = self.tick
            if self.technique is not None:
                wall = min(wall, clock.wall_delay(self.next_event()[0] - clock.now()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(wall, 1e-3))
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    @current_sp.putter
    async def current_sp(self, instance, value):
        await self.setpoint_changed(float(value))
        return value

    async def setpoint_changed(self, current_a: float) -> None:
        """Hook: ``current_sp`` was put (value already clipped)."""

    @start_cmd.putter
    async def start_cmd(self, instance, value):
        if not value:
            return 0
        async with self._lock:
            await self._start()
        self._wake.set()
        return 0

    async def _start(self) -> None:
        now = await self._update()
        if self.technique is not None:
            await self._finish("aborted", now)
        tech = self.begin_technique(now)
        self.technique = tech
        self._ended.clear()
        self.applied_current = tech["current"]
        await self.elapsed.write(0.0)
        await self.charge.write(0.0)
        await self.i.write(tech["current"])
        await self.publish_technique(now)
        await self.state.write("running")
        self.station.truth.write({"event": "technique_start", "t": now, "mode": tech["mode"],
                                  "current_a": tech["current"],
                                  "duration_s": tech["t_end"] - now,
                                  "e_min": tech["e_min"], "e_max": tech["e_max"],
                                  **{k: tech[k] for k in ("cycles",) if k in tech},
                                  **self.technique_truth(tech)})

    @wait_cmd.putter
    async def wait_cmd(self, instance, value):
        """Wait until the running technique ends (an operation: in virtual time
        the clock advances to the technique's next event while this waits)."""
        clock = self.station.simclock
        while self.technique is not None:
            if await clock.sleep_until_or(self.next_event_time(), self._ended):
                break
            await self.update()  # the event is due: handle it now
        return 0

    @stop_cmd.putter
    async def stop_cmd(self, instance, value):
        if value and self.technique is not None:
            async with self._lock:
                now = await self._update()
                if self.technique is not None:
                    await self._finish("aborted", now)
            self._wake.set()
        return 0


# -- detectors ----------------------------------------------------------------------

class DetectorCam(PVGroup):
    """Camera of a simulated detector (areaDetector-like names).

    PVs
    ---
    AcquireTime (s, clipped to [1e-3, 3600]), NumExposures (1..100), Acquire
    (put 1 with completion: one frame), Acquire_RBV (1 while acquiring),
    ArrayCounter (RW, frames acquired; put to reset), ArrayCounter_RBV,
    SizeX_RBV (columns), SizeY_RBV (rows).
    """

    acquire_time = pvproperty(name="AcquireTime", value=1.5, dtype=ClippedDouble,
                              lower_ctrl_limit=1e-3, upper_ctrl_limit=3600.0, units="s",
                              precision=4, doc="Exposure per image (cell s)")
    num_exposures = pvproperty(name="NumExposures", value=3, dtype=ClippedInteger,
                               lower_ctrl_limit=1, upper_ctrl_limit=100,
                               doc="Images per frame")
    acquire = pvproperty(name="Acquire", value=0,
                         doc="Put 1 with completion: acquire one frame")
    acquire_rbv = pvproperty(name="Acquire_RBV", value=0, read_only=True,
                             doc="1 while a frame is being acquired")
    array_counter = pvproperty(name="ArrayCounter", value=0,
                               doc="Frames acquired (put to reset)")
    array_counter_rbv = pvproperty(name="ArrayCounter_RBV", value=0, read_only=True,
                                   doc="Frames acquired")
    size_x = pvproperty(name="SizeX_RBV", value=0, read_only=True,
                        doc="Frame width (columns)")
    size_y = pvproperty(name="SizeY_RBV", value=0, read_only=True,
                        doc="Frame height (rows)")

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


class HDF1(PVGroup):
    """HDF5 file plugin (areaDetector NDFileHDF5-like names).

    PVs
    ---
    FilePath (char[256]; created if missing), FileName (char[256]), FileNumber
    (incremented after each file is opened), FullFileName_RBV (char[256]),
    Capture (put 1: open FilePath/FileName_NNNNNN.h5, closing a file still
    open; put 0: close), Capture_RBV, NumCaptured_RBV.
    """

    file_path = char_pv("FilePath", doc="Directory of the HDF5 files")
    file_name = char_pv("FileName", "frames", doc="File base name")
    file_number = pvproperty(name="FileNumber", value=1,
                             doc="Number of the next file (incremented on open)")
    full_file_name = char_pv("FullFileName_RBV", read_only=True,
                             doc="Absolute path of the open/last file")
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


class FrameDetector(PVGroup):
    """A detector: ``cam:`` (:class:`DetectorCam` or a subclass) and ``HDF1:``.

    An Acquire waits NumExposures x AcquireTime of cell time, brings the cell to
    that moment (``station.pstat.update()``), takes a :meth:`snapshot` of the
    station on the event loop, then renders the frame (:meth:`render`) in a
    worker thread, writes it to the open HDF5 file (if capturing) and completes.
    Frames of one detector are serialized; the loop stays free meanwhile.

    Subclasses define :meth:`frame_shape`, :meth:`snapshot`, :meth:`render`
    and may extend :meth:`file_attrs`, :meth:`frame_truth`, :meth:`startup`.
    """

    cam = SubGroup(DetectorCam, prefix="cam:")
    hdf1 = SubGroup(HDF1, prefix="HDF1:")

    #: dtype of the frames in the HDF5 file
    frame_dtype = np.uint16
    #: default HDF1:FileName
    file_name = "frames"
    #: stream of the detector's random generator (``[station.seed, rng_stream]``)
    rng_stream = 3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writer = HDF5FrameWriter(dtype=self.frame_dtype)
        self._lock = asyncio.Lock()
        self._rng = np.random.default_rng([self.station.seed, self.rng_stream])

    @property
    def station(self):
        return self.parent

    # -- subclass hooks ------------------------------------------------------------
    def frame_shape(self) -> tuple[int, int]:
        """(rows, cols) of the frames."""
        raise NotImplementedError

    def snapshot(self, *, t_start: float, t: float, n_exposures: int,
                 acquire_time: float) -> dict:
        """Everything :meth:`render` needs, taken on the event loop at the end of
        the exposure (the cell is at ``t``). Must not share mutable state with
        the loop."""
        raise NotImplementedError

    def render(self, snap: dict) -> np.ndarray:
        """The frame of a snapshot (worker thread; may use ``self._rng``)."""
        raise NotImplementedError

    def file_attrs(self) -> dict:
        """Attributes of ``/entry`` in a new HDF5 file."""
        return {}

    def frame_truth(self, snap: dict, frame: np.ndarray) -> dict:
        """The ground-truth record of a frame (``event``, ``file``, ``index`` are added)."""
        return dict(snap, frame_mean=float(np.mean(frame)))

    async def startup(self) -> None:
        """Publish the default file path/name and the frame size (at IOC start)."""
        await self.hdf1.file_path.write(str(self.station.data_dir))
        await self.hdf1.file_name.write(self.file_name)
        await self.publish_size()

    async def publish_size(self) -> None:
        rows, cols = self.frame_shape()
        await self.cam.size_x.write(int(cols))
        await self.cam.size_y.write(int(rows))

    # -- files ----------------------------------------------------------------------
    async def open_file(self) -> Path:
        hdf = self.hdf1
        async with self._lock:
            number = int(hdf.file_number.value)
            directory = Path(hdf.file_path.value or self.station.data_dir).expanduser()
            path = directory.absolute() / f"{hdf.file_name.value}_{number:06d}.h5"
            shape = tuple(int(n) for n in self.frame_shape())
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.writer.open, path, shape, self.file_attrs())
            await hdf.file_number.write(number + 1)
            await hdf.full_file_name.write(str(path))
            await hdf.num_captured.write(0)
            await hdf.capture_rbv.write(1)
            self.station.truth.write({"event": "file_open", "t": self.station.simclock.now(),
                                      "detector": self.prefix, "path": str(path),
                                      "shape": shape})
            return path

    async def close_file(self) -> None:
        async with self._lock:
            if self.writer.is_open:
                path, n = self.writer.path, self.writer.num_frames
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self.writer.close)
                self.station.truth.write({"event": "file_close",
                                          "t": self.station.simclock.now(),
                                          "detector": self.prefix,
                                          "path": str(path), "frames": n})
            await self.hdf1.capture_rbv.write(0)

    # -- frames ---------------------------------------------------------------------
    def _render_and_store(self, snap: dict):
        """Worker thread: render the frame, append it to the file, log the truth."""
        frame = self.render(snap)
        index = self.writer.append(frame) if self.writer.is_open else None
        if self.station.truth:
            record = self.frame_truth(snap, frame)
            record.update(event="frame", file=str(self.writer.path) if index is not None
                          else None, index=index)
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
                snap = self.snapshot(t_start=t0, t=t1, n_exposures=n_exp,
                                     acquire_time=exposure)
                snap["array_counter"] = int(cam.array_counter.value) + 1
                loop = asyncio.get_running_loop()
                _, index = await loop.run_in_executor(None, self._render_and_store, snap)
                count = int(cam.array_counter.value) + 1
                await cam.array_counter.write(count, verify_value=False)
                await cam.array_counter_rbv.write(count)
                if index is not None:
                    await self.hdf1.num_captured.write(index + 1)
            finally:
                await cam.acquire_rbv.write(0)


# -- station --------------------------------------------------------------------------

class Station(PVGroup):
    """Base of a station IOC: shared state its subgroups find through ``.parent``.

    Attributes set before the subgroups are created: ``seed``, ``data_dir``,
    ``truth`` (:class:`TruthLog`), ``simclock`` (:class:`SimClock`). A
    subclass sets its own models (e.g. ``self.cell``) before calling
    ``super().__init__``.
    """

    def __init__(self, *args, time_scale: float = 1.0, seed: int = 0, data_dir=".",
                 truth_file=None, hold: bool = False, **kwargs):
        self.seed = int(seed)
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.truth = TruthLog(truth_file)
        self.simclock = make_clock(time_scale, hold=hold)
        super().__init__(*args, **kwargs)

    def start_info(self) -> dict:
        """Station-specific fields of the ``ioc_start`` truth record."""
        return {}

    def detectors(self) -> list[FrameDetector]:
        return [g for g in self.groups.values() if isinstance(g, FrameDetector)]

    async def startup_hook(self, async_lib) -> None:
        """``run(..., startup_hook=ioc.startup_hook)``: cell t = 0 when serving starts.

        It runs before the groups' startup methods (first task created). It also
        makes SIGTERM stop the server like SIGINT (clean shutdown: open HDF5
        files are closed).
        """
        self.simclock.restart(0.0)
        self.truth.write({"event": "ioc_start", "t": self.simclock.now(),
                          "prefix": self.prefix, "time_scale": VIRTUAL if self.simclock.virtual else self.simclock.scale,
                          "seed": self.seed, "held": self.simclock.held,
                          **self.start_info()})
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))

    def close(self) -> None:
        """Close open HDF5 files and the truth log (at exit)."""
        for det in self.detectors():
            det.writer.close()
        self.truth.close()


def station_arg_parser(station_cls, *, default_prefix: str, default_data_dir: str,
                       argv=None):
    """caproto's ``template_arg_parser`` with the options every station takes:
    ``--time-scale``, ``--data-dir``, ``--seed``, ``--truth-file``, ``--hold``.

    Returns ``(parser, split_args)``; add station options, then
    ``args = parser.parse_args(argv)`` and :func:`station_kwargs`.
    """
    parser, split_args = template_arg_parser(
        default_prefix=default_prefix, desc=dedent(station_cls.__doc__ or ""),
        supported_async_libs=("asyncio",), argv=argv)
    parser.add_argument("--time-scale", type=parse_time_scale, default=1.0, metavar="S",
                        help="cell seconds per wall second (default 1), or 'virtual': "
                             "cell time advances only by what the operations take")
    parser.add_argument("--data-dir", default=default_data_dir, metavar="D",
                        help=f"default FilePath of the HDF5 files (default {default_data_dir})")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="random seed of the cell and the noise (default 0)")
    parser.add_argument("--truth-file", default=None, metavar="PATH",
                        help="append ground truth as JSON lines to PATH (for tests)")
    parser.add_argument("--hold", action="store_true",
                        help="start with the cell time frozen at 0 until clock:hold is put 0")
    return parser, split_args


def station_kwargs(parser, args) -> dict:
    """The common station keyword arguments from parsed ``args`` (validated)."""
    return dict(time_scale=args.time_scale, seed=args.seed, data_dir=args.data_dir,
                truth_file=args.truth_file, hold=args.hold)


def serve(ioc: Station, run_options: dict) -> None:
    """Serve a station until SIGINT/SIGTERM, then close it cleanly."""
    try:
        run(ioc.pvdb, startup_hook=ioc.startup_hook, **run_options)
    except KeyboardInterrupt:
        pass
    finally:
        ioc.close()
