"""An areaDetector-like detector simulator: camera, HDF5 file plugin, frames in cell time.

A station's detector subclasses :class:`FrameDetector` and supplies the frame
shape, a snapshot of the station at the end of the exposure (taken on the event
loop) and a render callable (run in a worker thread).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from caproto.server import PVGroup, SubGroup, pvproperty

from .hdf5_writer import HDF5FrameWriter
from .pvs import ClippedDouble, ClippedInteger, char_pv

__all__ = ["DetectorCam", "HDF1", "FrameDetector"]


class DetectorCam(PVGroup):
    """Camera of a simulated detector (areaDetector-like names).

    PVs
    ---
    AcquireTime (s, clipped to [1e-3, 3600]), NumExposures (1..100), Acquire
    (put 1 with completion: one frame), Acquire_RBV (1 while acquiring),
    ArrayCounter (RW, frames acquired; put to reset), ArrayCounter_RBV,
    SizeX_RBV (columns), SizeY_RBV (rows).
    """

    acquire_time = pvproperty(
        name="AcquireTime",
        value=1.5,
        dtype=ClippedDouble,
        lower_ctrl_limit=1e-3,
        upper_ctrl_limit=3600.0,
        units="s",
        precision=4,
        doc="Exposure per image (cell s)",
    )
    num_exposures = pvproperty(
        name="NumExposures",
        value=3,
        dtype=ClippedInteger,
        lower_ctrl_limit=1,
        upper_ctrl_limit=100,
        doc="Images per frame",
    )
    acquire = pvproperty(name="Acquire", value=0, doc="Put 1 with completion: acquire one frame")
    acquire_rbv = pvproperty(
        name="Acquire_RBV", value=0, read_only=True, doc="1 while a frame is being acquired"
    )
    array_counter = pvproperty(name="ArrayCounter", value=0, doc="Frames acquired (put to reset)")
    array_counter_rbv = pvproperty(
        name="ArrayCounter_RBV", value=0, read_only=True, doc="Frames acquired"
    )
    size_x = pvproperty(name="SizeX_RBV", value=0, read_only=True, doc="Frame width (columns)")
    size_y = pvproperty(name="SizeY_RBV", value=0, read_only=True, doc="Frame height (rows)")

    @size_x.startup
    async def size_x(self, instance, async_lib):
        await self.parent.startup()

    @acquire.putter
    async def acquire(self, instance, value):
        if value:
            await instance.write(1, verify_value=False)
            await self.parent.acquire_frame()
        else:
            self.parent.abort_frame()
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
    open; put 0: close), Capture_RBV, NumCaptured_RBV; Truncate (extra: put N
    to keep the first N frames of the open file).
    """

    file_path = char_pv("FilePath", doc="Directory of the HDF5 files")
    file_name = char_pv("FileName", "frames", doc="File base name")
    file_number = pvproperty(
        name="FileNumber", value=1, doc="Number of the next file (incremented on open)"
    )
    full_file_name = char_pv(
        "FullFileName_RBV", read_only=True, doc="Absolute path of the open/last file"
    )
    capture = pvproperty(
        name="Capture", value=0, doc="Put 1: open a new file (SWMR); put 0: close it"
    )
    capture_rbv = pvproperty(
        name="Capture_RBV", value=0, read_only=True, doc="1 while a file is open"
    )
    num_captured = pvproperty(
        name="NumCaptured_RBV", value=0, read_only=True, doc="Frames written to the open file"
    )
    truncate = pvproperty(
        name="Truncate",
        value=0,
        doc="Put N: keep only the first N frames of the open file (frames no event refers to)",
    )

    @truncate.putter
    async def truncate(self, instance, value):
        det = self.parent
        async with det._lock:
            loop = asyncio.get_running_loop()
            n = await loop.run_in_executor(None, det.truncate, int(value))
            await self.num_captured.write(n)
        return int(value)

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
        #: bumped by an abort and by every file opened or closed: a frame whose
        #: acquisition began before is not written
        self._generation = 0
        self._abort = asyncio.Event()
        self._rng = np.random.default_rng([self.station.seed, self.rng_stream])

    @property
    def station(self):
        return self.parent

    # -- autosave ------------------------------------------------------------------
    def save_state(self) -> dict:
        """The file being captured and the noise generator (autosave)."""
        return {
            "capturing": self.writer.is_open,
            "path": str(self.writer.path) if self.writer.path else None,
            "rng": self._rng.bit_generator.state,
        }

    def restore_state(self, state: dict) -> None:
        """Reopen the file that was being captured: its frames are kept and the
        next frame is appended after them (see :meth:`HDF5FrameWriter.resume`)."""
        self._rng.bit_generator.state = state["rng"]
        path = state.get("path")
        if state.get("capturing") and path and Path(path).is_file():
            n = self.writer.resume(path)
            self.hdf1.num_captured._data["value"] = n
            self.hdf1.capture_rbv._data["value"] = 1
        else:
            self.hdf1.capture_rbv._data["value"] = 0
            self.hdf1.capture._data["value"] = 0

    # -- subclass hooks ------------------------------------------------------------
    def frame_shape(self) -> tuple[int, int]:
        """(rows, cols) of the frames."""
        raise NotImplementedError

    def snapshot(self, *, t_start: float, t: float, n_exposures: int, acquire_time: float) -> dict:
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
        """Publish the default file path/name and the frame size (at IOC start;
        a restored IOC keeps its saved ones)."""
        if self.station.restored is None:
            await self.hdf1.file_path.write(str(self.station.data_dir))
            await self.hdf1.file_name.write(self.file_name)
        await self.publish_size()

    async def publish_size(self) -> None:
        rows, cols = self.frame_shape()
        await self.cam.size_x.write(int(cols))
        await self.cam.size_y.write(int(rows))

    # -- files ----------------------------------------------------------------------
    def abort_frame(self) -> None:
        """Acquire 0: the frame being exposed (or rendered) is dropped."""
        self._generation += 1
        self._abort.set()

    def truncate(self, n: int) -> int:
        """Keep the first ``n`` frames of the open file (HDF1:Truncate); the count kept."""
        if self.writer.is_open and n < self.writer.num_frames:
            path = self.writer.path
            self.writer.close()
            return self.writer.resume(path, keep=n)
        return self.writer.num_frames

    async def open_file(self) -> Path:
        hdf = self.hdf1
        self._generation += 1
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
            self._autosave()
            self.station.truth.write(
                {
                    "event": "file_open",
                    "t": self.station.simclock.now(),
                    "detector": self.prefix,
                    "path": str(path),
                    "shape": shape,
                }
            )
            return path

    async def close_file(self) -> None:
        self._generation += 1
        async with self._lock:
            if self.writer.is_open:
                path, n = self.writer.path, self.writer.num_frames
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self.writer.close)
                self.station.truth.write(
                    {
                        "event": "file_close",
                        "t": self.station.simclock.now(),
                        "detector": self.prefix,
                        "path": str(path),
                        "frames": n,
                    }
                )
            await self.hdf1.capture_rbv.write(0)
            self._autosave()

    def _autosave(self) -> None:
        from .station import request_autosave

        request_autosave(self)

    # -- frames ---------------------------------------------------------------------
    def _render_and_store(self, snap: dict, generation: int):
        """Worker thread: render the frame, append it to the file, log the truth."""
        frame = self.render(snap)
        if generation != self._generation:  # aborted meanwhile, or another file
            return frame, None
        index = self.writer.append(frame) if self.writer.is_open else None
        if self.station.truth:
            record = self.frame_truth(snap, frame)
            record.update(
                event="frame",
                file=str(self.writer.path) if index is not None else None,
                index=index,
            )
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
                generation = self._generation
                self._abort = abort = asyncio.Event()
                if await clock.sleep_until_or(t0 + n_exp * exposure, abort):
                    return  # aborted (Acquire 0): no frame
                t1 = await station.pstat.update()  # the cell at the end of the exposure
                snap = self.snapshot(t_start=t0, t=t1, n_exposures=n_exp, acquire_time=exposure)
                snap["array_counter"] = int(cam.array_counter.value) + 1
                loop = asyncio.get_running_loop()
                _, index = await loop.run_in_executor(
                    None, self._render_and_store, snap, generation
                )
                if index is None and generation != self._generation:
                    return
                count = int(cam.array_counter.value) + 1
                await cam.array_counter.write(count, verify_value=False)
                await cam.array_counter_rbv.write(count)
                if index is not None:
                    await self.hdf1.num_captured.write(index + 1)
            finally:
                await cam.acquire_rbv.write(0)
