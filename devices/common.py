"""Devices shared by the stations: simulated clock, potentiostat, HDF5 area detector.

Every class talks Channel Access only. PV names are those of ``docs/xct-pvs.md``;
the potentiostat and the clock are the same on both stations.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from event_model import ComposeStreamResource
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Kind
from ophyd.status import DeviceStatus, Status

from ..constants import FRAME_DATASET

TECHNIQUE_END_STATES = ("done", "limit", "aborted")


class _CharArrayDescription:
    """Describe a char-array string PV without its meaningless control limits.

    Channel Access reports the limits of a CHAR waveform as bytes, which are
    not JSON: they would break every document consumer that serializes JSON
    (TiledWriter's backup among them).
    """

    def describe(self):
        desc = super().describe()
        for entry in desc.values():
            for key in ("lower_ctrl_limit", "upper_ctrl_limit"):
                if isinstance(entry.get(key), (bytes, str)):
                    entry.pop(key)
        return desc


class CharArraySignal(_CharArrayDescription, EpicsSignal):
    """A writable string held in a CHAR waveform (paths, names)."""

    def __init__(self, read_pv, **kwargs):
        kwargs.setdefault("string", True)
        super().__init__(read_pv, **kwargs)


class CharArraySignalRO(_CharArrayDescription, EpicsSignalRO):
    """A read-only string held in a CHAR waveform (paths, JSON)."""

    def __init__(self, read_pv, **kwargs):
        kwargs.setdefault("string", True)
        super().__init__(read_pv, **kwargs)


class Station:
    """Base of a station's dataclass of devices (one field per device, named as
    the variable a user types)."""

    def devices(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def wait_for_connection(self, timeout: float = 10.0) -> None:
        for dev in self.devices().values():
            dev.wait_for_connection(timeout=timeout)


class TwoStateDevice(Device):
    """A device with two named states driven by one put-with-completion PV.

    Subclasses name that component in ``command_name`` and map state names to
    values in ``states``; ``set(name)`` returns a status that finishes when the
    hardware has reached the state, and ``stop()`` puts ``safe_state``.
    """

    command_name: str = ""
    states: dict = {}
    safe_state = None

    def set(self, value) -> Status:
        if value not in self.states:
            names = sorted(k for k in self.states if isinstance(k, str))
            raise ValueError(f"{self.name}: state must be one of {names}, not {value!r}")
        return getattr(self, self.command_name).set(self.states[value])

    def stop(self, *, success: bool = False) -> None:
        if self.safe_state is not None:
            getattr(self, self.command_name).put(self.states[self.safe_state])
        super().stop(success=success)


class SimClock(Device):
    """The station clock: cell time in seconds, and a wait on a cell time.

    ``clock.set(t)`` returns a status that finishes when the clock reaches ``t``
    (a put with completion on ``clock:wait``), so plans wait on the hardware's
    time, never on the wall clock. On a real station the same PVs are served by a
    soft IOC at scale 1. ``virtual`` is 1 when the simulators run on virtual
    time (see :func:`operando.session.synchronize_clock`).
    """

    time = Cpt(EpicsSignalRO, "time", kind=Kind.hinted)
    scale = Cpt(EpicsSignalRO, "scale", kind=Kind.config)
    virtual = Cpt(EpicsSignalRO, "virtual", kind=Kind.config)
    wait = Cpt(EpicsSignal, "wait", put_complete=True, kind=Kind.omitted)
    sync = Cpt(EpicsSignal, "sync", kind=Kind.omitted)
    waiting = Cpt(EpicsSignal, "waiting", kind=Kind.omitted)

    def set(self, value: float) -> Status:
        return self.wait.set(float(value))

    def now(self) -> float:
        """Cell time from the last monitor update (no CA round trip)."""
        return float(self.time.get())


@dataclass(frozen=True)
class Technique:
    """A potentiostat technique: ``OCV`` or ``CC`` (constant current).

    current in A (positive: Li stripped from the top electrode, plated on the
    bottom one), duration in cell-time seconds, e_min/e_max in V stop the CC
    technique when Ewe leaves the window.
    """

    mode: str
    duration: float
    current: float = 0.0
    e_min: float = -10.0
    e_max: float = 10.0
    cycles: int = 1

    @classmethod
    def ocv(cls, duration: float) -> Technique:
        return cls("OCV", duration)

    @classmethod
    def cycling(
        cls, current: float, *, e_min: float, e_max: float, cycles: int = 1, duration: float = 1e9
    ) -> Technique:
        """Galvanostatic cycling (GCPL): discharge first at |current|, turning at
        ``e_min``/``e_max``, for ``cycles`` full cycles or ``duration`` s."""
        return cls("GCPL", duration, abs(current), e_min, e_max, cycles)

    @classmethod
    def constant_current(
        cls, current: float, duration: float, *, e_min: float = -10.0, e_max: float = 10.0
    ) -> Technique:
        return cls("CC", duration, current, e_min, e_max)


class Potentiostat(Device):
    """SP-150e-like potentiostat: OCV and constant-current techniques.

    ``set(Technique(...))`` configures and starts a technique and returns a status
    that finishes when the technique ends (duration reached, or a potential
    limit: ``state`` is then ``done`` or ``limit``): ``bps.mv(pstat, technique)``
    runs a whole technique. To run one in the background while the plan does
    other things, as a flyer: ``bps.prepare(pstat, technique, wait=True)``,
    ``bps.kickoff(pstat, wait=True)`` (finishes once it runs), then later
    ``bps.complete(pstat, wait=True)`` (finishes when it has ended).
    ``stop()`` aborts and leaves the cell at open circuit.

    The end of a technique is waited for with a put-with-completion on
    ``pstat:wait``, an operation of the station: on virtual time the clock
    advances to the technique's end only while someone waits for it.
    """

    mode = Cpt(EpicsSignal, "mode", string=True, kind=Kind.config)
    current_sp = Cpt(EpicsSignal, "current_sp", kind=Kind.config)
    duration = Cpt(EpicsSignal, "duration", kind=Kind.config)
    e_min = Cpt(EpicsSignal, "e_min", kind=Kind.config)
    e_max = Cpt(EpicsSignal, "e_max", kind=Kind.config)
    start_cmd = Cpt(EpicsSignal, "start", put_complete=True, kind=Kind.omitted)
    wait_cmd = Cpt(EpicsSignal, "wait", put_complete=True, kind=Kind.omitted)
    abort_cmd = Cpt(EpicsSignal, "stop", kind=Kind.omitted)
    state = Cpt(EpicsSignalRO, "state", string=True, kind=Kind.normal)
    ewe = Cpt(EpicsSignalRO, "ewe", kind=Kind.hinted)
    current = Cpt(EpicsSignalRO, "i", kind=Kind.hinted)
    charge = Cpt(EpicsSignalRO, "charge", kind=Kind.normal)
    elapsed = Cpt(EpicsSignalRO, "elapsed", kind=Kind.normal)

    def current_limits(self) -> tuple[float, float]:
        """The largest current the instrument delivers (from the PV's control limits)."""
        return tuple(self.current_sp.limits)

    def prepare(self, technique: Technique) -> Status:
        """Configure ``technique`` (mode, current, duration, limits); nothing starts."""
        if not isinstance(technique, Technique):
            raise TypeError(f"{self.name} takes a Technique, not {technique!r}")
        settings = [
            (self.mode, technique.mode),
            (self.duration, technique.duration),
            (self.current_sp, technique.current),
            (self.e_min, technique.e_min),
            (self.e_max, technique.e_max),
        ]
        if technique.mode == "GCPL":
            if not hasattr(self, "cycles"):
                raise ValueError(f"{self.name} has no galvanostatic cycling (GCPL)")
            settings.append((self.cycles, technique.cycles))
        for sig, value in settings:
            sig.put(value, wait=True)
        status = Status(obj=self)
        status.set_finished()
        return status

    def kickoff(self) -> Status:
        """Start the prepared technique; finishes once it runs."""
        return self.start_cmd.set(1)

    def complete(self) -> Status:
        """Finishes when the running technique has ended (at once if none runs)."""
        return self.wait_cmd.set(1)

    def set(self, technique: Technique) -> Status:
        self.prepare(technique)
        self.kickoff().wait(timeout=10.0)
        return self.complete()

    def is_running(self) -> bool:
        """A fresh read of the technique state (not a monitor's cached value)."""
        return self.state.get(use_monitor=False) == "running"

    def stop(self, *, success: bool = False) -> None:
        self.abort_cmd.put(1, wait=True)
        super().stop(success=success)


@dataclass
class _AssetQueue:
    """Documents a detector hands to bluesky at the next ``collect_asset_docs``."""

    docs: deque = field(default_factory=deque)

    def push(self, name: str, doc: dict) -> None:
        self.docs.append((name, doc))

    def drain(self):
        while self.docs:
            yield self.docs.popleft()


class HDF5Cam(Device):
    acquire_time = Cpt(EpicsSignal, "AcquireTime", kind=Kind.config)
    num_exposures = Cpt(EpicsSignal, "NumExposures", kind=Kind.config)
    acquire = Cpt(EpicsSignal, "Acquire", put_complete=True, kind=Kind.omitted)
    array_counter = Cpt(EpicsSignalRO, "ArrayCounter_RBV", kind=Kind.omitted)
    size_x = Cpt(EpicsSignalRO, "SizeX_RBV", kind=Kind.config)
    size_y = Cpt(EpicsSignalRO, "SizeY_RBV", kind=Kind.config)


class HDF5Plugin(Device):
    file_path = Cpt(CharArraySignal, "FilePath", kind=Kind.config)
    file_name = Cpt(CharArraySignal, "FileName", kind=Kind.config)
    file_number = Cpt(EpicsSignal, "FileNumber", kind=Kind.omitted)
    full_file_name = Cpt(CharArraySignalRO, "FullFileName_RBV", kind=Kind.omitted)
    capture = Cpt(EpicsSignal, "Capture", kind=Kind.omitted)
    capture_rbv = Cpt(EpicsSignalRO, "Capture_RBV", kind=Kind.omitted)
    num_captured = Cpt(EpicsSignalRO, "NumCaptured_RBV", kind=Kind.omitted)


class HDF5AreaDetector(Device):
    """An area detector whose frames go to HDF5 files, handed to bluesky as assets.

    Staging opens a new file (``FilePath/FileName_NNNNNN.h5``, dataset
    ``/entry/data/data``) and queues a ``stream_resource``; each trigger acquires
    one frame and queues a ``stream_datum`` for its index; unstaging closes the
    file. Frames never travel through Channel Access. Stage once per stream (dark,
    flat, projections) so that each stream has its own file.

    Subclasses set ``cam_cls`` and ``image_dtype``.
    """

    image_dtype = "<u2"
    cam = Cpt(HDF5Cam, "cam:")
    hdf1 = Cpt(HDF5Plugin, "HDF1:")

    def __init__(
        self, prefix="", *, write_path: str | Path = "", file_stem: str | None = None, **kwargs
    ):
        super().__init__(prefix, **kwargs)
        self.write_path = str(write_path)
        self.file_stem = file_stem or self.name
        self._assets = _AssetQueue()
        self._bundle = None
        self._first_frame = 0

    @property
    def image_key(self) -> str:
        return f"{self.name}_image"

    def frame_shape(self) -> tuple[int, int]:
        return int(self.cam.size_y.get()), int(self.cam.size_x.get())

    def stage(self):
        if not self.write_path:
            raise ValueError(f"{self.name}: no write_path set for the HDF5 files")
        self.hdf1.file_path.put(self.write_path, wait=True)
        self.hdf1.file_name.put(self.file_stem, wait=True)
        self.hdf1.capture.put(1, wait=True)
        path = self.hdf1.full_file_name.get(use_monitor=False)
        self._first_frame = int(self.hdf1.num_captured.get(use_monitor=False))
        rows, cols = self.frame_shape()
        self._bundle = ComposeStreamResource()(
            mimetype="application/x-hdf5",
            uri=f"file://localhost{Path(path).resolve()}",
            data_key=self.image_key,
            parameters={"dataset": FRAME_DATASET, "chunk_shape": [1, rows, cols]},
        )
        self._assets.push("stream_resource", self._bundle.stream_resource_doc)
        self._counter = itertools.count(self._first_frame)
        return super().stage()

    def unstage(self):
        try:
            self.hdf1.capture.put(0, wait=True)
        finally:
            self._bundle = None
        return super().unstage()

    def trigger(self) -> Status:
        if self._bundle is None:
            raise RuntimeError(f"{self.name} must be staged before it is triggered")
        status = DeviceStatus(self)
        acquire = self.cam.acquire.set(1)

        def frame_written(st):
            if not st.success:
                status.set_exception(st.exception() or RuntimeError("acquisition failed"))
                return
            index = next(self._counter)
            self._assets.push(
                "stream_datum",
                self._bundle.compose_stream_datum(indices={"start": index, "stop": index + 1}),
            )
            status.set_finished()

        acquire.add_callback(frame_written)
        return status

    def describe(self):
        desc = super().describe()
        rows, cols = self.frame_shape()
        desc[self.image_key] = {
            "source": self.hdf1.full_file_name.pvname,
            "shape": [rows, cols],
            "dtype": "array",
            "dtype_numpy": self.image_dtype,
            "external": "STREAM:",
        }
        return desc

    def collect_asset_docs(self):
        yield from self._assets.drain()
