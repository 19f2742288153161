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

    # -- frames ---------------------------------------------------------------------
    def _render_and_store(self, snap: dict):
        """Worker thread: render the frame, append it to the file, log the truth."""
        frame = self.render(snap)
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
                await clock.sleep_until(t0 + n_exp * exposure)
                t1 = await station.pstat.update()  # the cell at the end of the exposure
                snap = self.snapshot(t_start=t0, t=t1, n_exposures=n_exp, acquire_time=exposure)
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
