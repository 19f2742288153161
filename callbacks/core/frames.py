"""Detector frames read straight from their HDF5 files, while they are written.

:class:`SWMRFile` opens one dataset SWMR and waits for the frames asked for;
:class:`FrameReader` reads single frames of one file (live, event by event);
:class:`FrameStack` is one stream's frames ``(n, rows, cols)`` over many files,
sliced lazily (``stack[i]``, ``stack[i0:i1]``, ``stack[[i, j]]``,
``stack[:, r0:r1, :]``) so that a reconstruction reads a few detector rows at a
time; :class:`RowWindow` is rows ``r0:r1`` of any such stack, still lazy.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlparse

import numpy as np

from operando.constants import FRAME_DATASET

__all__ = ["path_of_uri", "SWMRFile", "FrameReader", "FrameStack", "RowWindow"]


def path_of_uri(uri: str) -> str:
    """Local path of a ``file://host/abs/path`` resource URI (a bare path passes)."""
    parsed = urlparse(uri)
    return parsed.path if parsed.scheme in ("file", "") else uri


class SWMRFile:
    """One dataset of an HDF5 file being (or having been) written: opened SWMR,
    refreshed until the frames asked for are there (up to ``timeout`` s)."""

    def __init__(self, path: str, dataset: str, timeout: float):
        self.path, self.dataset_name, self.timeout = path, dataset, float(timeout)
        self.file = None
        self.dset = None

    def _open(self) -> None:
        import h5py

        deadline = time.monotonic() + self.timeout
        while True:
            try:
                try:
                    self.file = h5py.File(self.path, "r", swmr=True)
                except OSError:
                    self.file = h5py.File(self.path, "r")
                self.dset = self.file[self.dataset_name]
                return
            except (OSError, KeyError):
                self.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def dataset(self, need: int):
        """The dataset once it holds at least ``need`` frames (waits up to ``timeout``)."""
        if self.dset is None:
            self._open()
        deadline = time.monotonic() + self.timeout
        while self.dset.shape[0] < need:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.path}: {self.dset.shape[0]} frames, {need} expected "
                    f"after {self.timeout} s"
                )
            time.sleep(0.02)
            try:
                self.dset.refresh()
            except (AttributeError, RuntimeError, OSError):  # not SWMR: reopen
                self.close()
                self._open()
        return self.dset

    def close(self) -> None:
        f, self.file, self.dset = self.file, None, None
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


class FrameReader:
    """Frames of one HDF5 file being written (SWMR): ``reader[index]``, waiting
    up to ``timeout`` s for a frame not written yet (see :class:`SWMRFile`)."""

    def __init__(self, path: str, dataset: str = FRAME_DATASET, *, timeout: float = 60.0):
        self.path = path
        self._file = SWMRFile(path, dataset, timeout)

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self._file.dataset(index + 1)[index])

    def close(self) -> None:
        self._file.close()


class FrameStack:
    """Frames ``(n, rows, cols)`` of one stream, read lazily from HDF5 files.

    ``locations``: one ``(path, dataset, index)`` per frame, in event order.
    ``shape``/``dtype`` of one frame come from the descriptor (or the first file).
    """

    def __init__(
        self,
        locations: list[tuple[str, str, int]],
        *,
        frame_shape=None,
        dtype=None,
        timeout: float = 60.0,
    ):
        self.locations = list(locations)
        self.timeout = float(timeout)
        self._files: dict[tuple[str, str], SWMRFile] = {}
        if frame_shape is None or dtype is None:
            if not self.locations:
                raise ValueError("an empty stack needs frame_shape and dtype")
            path, ds, idx = self.locations[0]
            d = self._file(path, ds).dataset(idx + 1)
            frame_shape = frame_shape or d.shape[1:]
            dtype = dtype or d.dtype
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.dtype = np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.locations),) + self.frame_shape

    @property
    def ndim(self) -> int:
        return 1 + len(self.frame_shape)

    def __len__(self) -> int:
        return len(self.locations)

    def _file(self, path: str, ds: str) -> SWMRFile:
        f = self._files.get((path, ds))
        if f is None:
            f = self._files[(path, ds)] = SWMRFile(path, ds, self.timeout)
        return f

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        first, rest = key[0], key[1:]
        n = len(self.locations)
        if isinstance(first, (int, np.integer)):
            i = int(first) + (n if first < 0 else 0)
            path, ds, idx = self.locations[i]
            return np.asarray(self._file(path, ds).dataset(idx + 1)[(idx,) + rest])
        if isinstance(first, slice):
            sel = list(range(n))[first]
        else:
            sel = [int(i) + (n if int(i) < 0 else 0) for i in np.asarray(first).ravel()]
        blocks = []
        k = 0
        while k < len(sel):
            path, ds, idx = self.locations[sel[k]]
            m = k + 1  # a run of consecutive frames in one file
            while (
                m < len(sel)
                and self.locations[sel[m]][:2] == (path, ds)
                and self.locations[sel[m]][2] == idx + (m - k)
                and sel[m] == sel[k] + (m - k)
            ):
                m += 1
            d = self._file(path, ds).dataset(idx + (m - k))
            blocks.append(np.asarray(d[(slice(idx, idx + (m - k)),) + rest]))
            k = m
        if not blocks:
            probe = np.zeros((0,) + self.frame_shape, self.dtype)[(slice(None),) + rest]
            return probe
        return np.concatenate(blocks, axis=0)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out.astype(dtype) if dtype is not None else out

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


class RowWindow:
    """Rows ``r0:r1`` (axis 1) of a stack ``(n, rows, cols)``, lazily.

    Supports ``w[i]``, ``w[a:b]``, ``w[[i, j]]`` and ``w[:, a:b, :]`` (rows
    relative to ``r0``), which is all :func:`~operando.callbacks.xct.science.reconstruct`
    asks of its input once the centre is given.
    """

    def __init__(self, source: Any, r0: int, r1: int):
        self.source, self.r0, self.r1 = source, int(r0), int(r1)
        n, _, ncol = source.shape
        self.shape = (int(n), self.r1 - self.r0, int(ncol))
        self.dtype = getattr(source, "dtype", np.dtype(np.float32))
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, sel) -> slice | list:
        if sel is None or sel == slice(None):
            return slice(self.r0, self.r1)
        if isinstance(sel, slice):
            start, stop, step = sel.indices(self.shape[1])
            if step != 1:
                return [self.r0 + r for r in range(start, stop, step)]
            return slice(self.r0 + start, self.r0 + stop)
        if isinstance(sel, (int, np.integer)):
            return slice(self.r0 + int(sel), self.r0 + int(sel) + 1)
        return [self.r0 + int(r) for r in np.asarray(sel).ravel()]

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        first = key[0]
        rows = self._rows(key[1] if len(key) > 1 else None)
        cols = key[2] if len(key) > 2 else slice(None)
        if isinstance(rows, list):  # fancy rows: read their bounding block, pick
            lo, hi = min(rows), max(rows) + 1
            block = np.asarray(self.source[(first, slice(lo, hi), cols)])
            idx = [r - lo for r in rows]
            out = block[..., idx, :] if block.ndim == 3 else block[idx, :]
        else:
            out = np.asarray(self.source[(first, rows, cols)])
        if len(key) > 1 and isinstance(key[1], (int, np.integer)):
            out = out[:, 0] if out.ndim == 3 else out[0]
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out.astype(dtype) if dtype is not None else out
