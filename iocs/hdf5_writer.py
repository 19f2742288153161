"""An areaDetector-HDF5-plugin-like frame writer (SWMR, one frame per append).

Layout, as the areaDetector HDF5 plugin writes it::

    /entry/data/data   uint16, shape (n, rows, cols), chunks (1, rows, cols)

The file is opened with ``libver="latest"`` and switched to SWMR mode after the
dataset is created; every append resizes, writes and flushes, so another
process can open the file with ``h5py.File(path, "r", swmr=True)`` and read the
frames written so far (``dataset.refresh()`` to see new ones) while it grows.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from operando.constants import FRAME_DATASET

__all__ = ["HDF5FrameWriter", "DATASET"]

#: Where the frames go (areaDetector's default).
DATASET = FRAME_DATASET


class HDF5FrameWriter:
    """Write 2-D frames to a growing ``/entry/data/data`` dataset.

    Parameters
    ----------
    frame_shape : (rows, cols), optional
        Default frame shape for :meth:`open`.
    dtype : numpy dtype
        Frame dtype (uint16 like the detector).
    """

    def __init__(self, frame_shape: tuple[int, int] | None = None, dtype=np.uint16):
        self.frame_shape = tuple(frame_shape) if frame_shape is not None else None
        self.dtype = np.dtype(dtype)
        self.path: Path | None = None
        self._file: h5py.File | None = None
        self._dset: h5py.Dataset | None = None

    @property
    def is_open(self) -> bool:
        return self._file is not None

    @property
    def num_frames(self) -> int:
        return 0 if self._dset is None else int(self._dset.shape[0])

    def open(
        self, path, frame_shape: tuple[int, int] | None = None, attrs: dict | None = None
    ) -> Path:
        """Create the file (parents too) with an empty frame dataset, in SWMR mode.

        ``attrs`` are stored as attributes of ``/entry``. Closes a file left open.
        """
        if self.is_open:
            self.close()
        shape = tuple(frame_shape) if frame_shape is not None else self.frame_shape
        if shape is None or len(shape) != 2:
            raise ValueError(f"frame_shape must be (rows, cols), got {shape!r}")
        rows, cols = (int(n) for n in shape)
        path = Path(path).absolute()
        os.makedirs(path.parent, exist_ok=True)
        f = h5py.File(path, "w", libver="latest")
        try:
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            data = entry.create_group("data")
            data.attrs["NX_class"] = "NXdata"
            data.attrs["signal"] = "data"
            for key, value in (attrs or {}).items():
                entry.attrs[key] = value
            dset = data.create_dataset(
                "data",
                shape=(0, rows, cols),
                maxshape=(None, rows, cols),
                chunks=(1, rows, cols),
                dtype=self.dtype,
            )
            f.swmr_mode = True
            f.flush()
        except BaseException:
            f.close()
            raise
        self.frame_shape = (rows, cols)
        self.path, self._file, self._dset = path, f, dset
        return path

    def resume(self, path, *, keep: int | None = None) -> int:
        """Continue a file left open by a process that died; return its frame count.

        A file its writer left in SWMR mode cannot be opened for writing again
        (its consistency flags are set), but it reads: its frames and attributes
        are copied into a new file that replaces it at the same path (tmp file +
        ``os.replace``), which stays open for appending. With ``keep``, only the
        first ``keep`` frames are kept.
        """
        path = Path(path).absolute()
        with h5py.File(path, "r", swmr=True) as old:
            dset = old[DATASET]
            frames = dset[()] if keep is None else dset[: max(int(keep), 0)]
            attrs = dict(old["entry"].attrs)
        for key in ("NX_class",):
            attrs.pop(key, None)
        tmp = path.with_name(path.name + ".resume")
        self.open(tmp, frames.shape[1:], attrs)
        for frame in frames:
            self.append(frame)
        self.close()
        os.replace(tmp, path)
        f = h5py.File(path, "a", libver="latest")
        dset = f[DATASET]
        f.swmr_mode = True
        self.frame_shape = tuple(int(n) for n in dset.shape[1:])
        self.path, self._file, self._dset = path, f, dset
        return int(dset.shape[0])

    def append(self, frame) -> int:
        """Append one frame, flush; return its index in the dataset."""
        if self._dset is None:
            raise RuntimeError("no file is open")
        frame = np.asarray(frame)
        if frame.shape != self.frame_shape:
            raise ValueError(f"frame shape {frame.shape} != file's {self.frame_shape}")
        n = self._dset.shape[0]
        self._dset.resize(n + 1, axis=0)
        self._dset[n] = frame.astype(self.dtype, copy=False)
        self._dset.flush()
        return n

    def close(self) -> None:
        """Close the file (no-op if none is open)."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = self._dset = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
