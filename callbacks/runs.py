"""Generic pieces of the live and offline reductions, whatever the technique.

* :class:`RunCollector`: an ``event_model.DocumentRouter`` that keeps one run's
  documents as the reduction wants them: the start and stop documents, each
  stream's descriptor configuration, its scalar columns (one value per event,
  in ``seq_num`` order) and where each external frame lives (the
  ``stream_resource`` file and the ``stream_datum`` index of every event).
* :class:`FrameStack`: the frames of one stream as an array-like ``(n, rows,
  cols)`` read straight from the detector's HDF5 files, SWMR-safe
  (``h5py.File(path, "r", swmr=True)``, the dataset refreshed until the frames
  are there). It supports the slicing the reductions need (``stack[i]``,
  ``stack[i0:i1]``, ``stack[[i, j]]``, ``stack[:, r0:r1, :]``), so a
  reconstruction reads a few detector rows at a time and never holds a
  full-size scan in memory.
* :class:`RowWindow`: detector rows ``r0:r1`` of any such stack (numpy, h5py,
  a Tiled array client), still lazy.
* Tiled helpers: :func:`json_safe`, :func:`replace_container`,
  :func:`stream_columns` (a stored stream's scalars in one request),
  :func:`find_experiment_runs` (a raw run uid or an ``experiment_id`` → the
  experiment's runs, by ``start.experiment_id``).

Nothing here imports the simulators or the acquisition code.
"""

from __future__ import annotations

import threading

import queue

import copy

import logging
import math
import time
from typing import Any, Callable
from urllib.parse import urlparse

import numpy as np
from event_model import DocumentRouter

from operando.constants import FRAME_DATASET

__all__ = [
    "RunCollector",
    "FrameStack",
    "RowWindow",
    "json_safe",
    "replace_container",
    "path_of_uri",
    "stream_columns",
    "find_experiment_runs",
]

logger = logging.getLogger(__name__)

DEFAULT_DATASET = FRAME_DATASET


# --------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------

def path_of_uri(uri: str) -> str:
    """Local path of a ``file://host/abs/path`` resource URI (a bare path passes)."""
    parsed = urlparse(uri)
    return parsed.path if parsed.scheme in ("file", "") else uri


class _SWMRFile:
    """One HDF5 file being (or having been) written: opened SWMR, refreshed on demand."""

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
                raise TimeoutError(f"{self.path}: {self.dset.shape[0]} frames, {need} expected "
                                   f"after {self.timeout} s")
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


class FrameStack:
    """Frames ``(n, rows, cols)`` of one stream, read lazily from HDF5 files.

    ``locations``: one ``(path, dataset, index)`` per frame, in event order.
    ``shape``/``dtype`` of one frame come from the descriptor (or the first file).
    """

    def __init__(self, locations: list[tuple[str, str, int]], *, frame_shape=None,
                 dtype=None, timeout: float = 60.0):
        self.locations = list(locations)
        self.timeout = float(timeout)
        self._files: dict[tuple[str, str], _SWMRFile] = {}
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

    def _file(self, path: str, ds: str) -> _SWMRFile:
        f = self._files.get((path, ds))
        if f is None:
            f = self._files[(path, ds)] = _SWMRFile(path, ds, self.timeout)
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
            while (m < len(sel) and self.locations[sel[m]][:2] == (path, ds)
                   and self.locations[sel[m]][2] == idx + (m - k) and sel[m] == sel[k] + (m - k)):
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
    relative to ``r0``), which is all :func:`~operando.callbacks.tomography.reconstruct`
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


# --------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------

class RunCollector(DocumentRouter):
    """One run's documents, kept for a reduction at its ``stop``.

    ``on_stop(collector)`` is called with the collector itself once the stop
    document has come (in the thread that routes the documents).

    Attributes: ``start_doc``, ``stop_doc``, ``descriptors`` (stream name →
    first descriptor), ``columns`` (stream → key → list, numbers and strings,
    one value per event in arrival order, plus ``seq_num`` and ``time``),
    ``frame_locations`` (stream → data key → list of ``(path, dataset, index)``
    in event order) and ``pending`` (events whose ``stream_datum`` has not come).
    """

    def __init__(self, start: dict | None = None, *, on_stop: Callable | None = None):
        super().__init__()
        self.start_doc = start or {}
        self.stop_doc: dict | None = None
        self.on_stop = on_stop
        self.descriptors: dict[str, dict] = {}
        self._stream_of: dict[str, str] = {}
        self.columns: dict[str, dict[str, list]] = {}
        self.resources: dict[str, dict] = {}
        self._datums: dict[tuple[str, str, int], tuple[str, int]] = {}
        self._external: dict[str, set] = {}
        self.frame_locations: dict[str, dict[str, list]] = {}
        self.pending: list[dict] = []

    # -- documents ---------------------------------------------------------------------
    def start(self, doc):
        self.start_doc = doc

    def descriptor(self, doc):
        name = doc.get("name", "primary")
        self._stream_of[doc["uid"]] = name
        self.descriptors.setdefault(name, doc)
        self._external[doc["uid"]] = {k for k, v in doc.get("data_keys", {}).items()
                                      if v.get("external")}

    def stream_resource(self, doc):
        self.resources[doc["uid"]] = doc

    def stream_datum(self, doc):
        res = self.resources.get(doc["stream_resource"])
        if res is None:
            logger.warning("stream_datum for unknown resource %s", doc["stream_resource"])
            return
        desc = doc.get("descriptor") or ""
        seq, idx = doc["seq_nums"], doc["indices"]
        for s, i in zip(range(seq["start"], seq["stop"]), range(idx["start"], idx["stop"])):
            self._datums[(desc, res["data_key"], int(s))] = (res["uid"], int(i))
        if self.pending:
            waiting, self.pending = self.pending, []
            for ev in waiting:
                self.event(ev)

    def event(self, doc):
        desc = doc.get("descriptor")
        stream = self._stream_of.get(desc)
        if stream is None:
            return
        seq = int(doc["seq_num"])
        locs = {}
        for key in self._external.get(desc, ()):
            loc = self._datums.get((desc, key, seq)) or self._datums.get(("", key, seq))
            if loc is None:
                self.pending.append(doc)  # its stream_datum comes later
                return
            locs[key] = loc
        for key, (res_uid, index) in locs.items():
            res = self.resources[res_uid]
            path = path_of_uri(res["uri"])
            ds = (res.get("parameters") or {}).get("dataset", DEFAULT_DATASET)
            self.frame_locations.setdefault(stream, {}).setdefault(key, []).append(
                (path, ds, index))
        cols = self.columns.setdefault(stream, {})
        row = {"seq_num": seq, "time": float(doc.get("time", math.nan))}
        for key, value in doc.get("data", {}).items():
            if key in locs:
                continue
            if isinstance(value, (bool, np.bool_)):
                row[key] = int(value)
            elif isinstance(value, (int, float, np.number, str)):
                row[key] = value
        n = len(cols.get("seq_num", []))
        for key, value in row.items():
            col = cols.setdefault(key, [])
            if len(col) < n:  # a key missing in earlier events
                col.extend([math.nan] * (n - len(col)))
            col.append(value)
        for key, col in cols.items():
            if len(col) < n + 1:
                col.append(math.nan)

    def stop(self, doc):
        self.stop_doc = doc
        for ev in self.pending:
            logger.warning("run %s: event %s of %s never got its frames",
                           self.start_doc.get("uid"), ev.get("seq_num"),
                           self._stream_of.get(ev.get("descriptor")))
        if self.on_stop is not None:
            self.on_stop(self)

    # -- access ------------------------------------------------------------------------
    def column_arrays(self, stream: str) -> dict[str, np.ndarray]:
        """A stream's columns as arrays (numbers as float64, text as object)."""
        out = {}
        for key, col in self.columns.get(stream, {}).items():
            if all(isinstance(v, (int, float, np.number)) for v in col):
                out[key] = np.asarray(col, dtype=float)
            else:
                out[key] = np.asarray(col, dtype=object)
        return out

    def configuration(self, stream: str) -> dict:
        return (self.descriptors.get(stream) or {}).get("configuration", {}) or {}

    def frames(self, stream: str, key: str, *, timeout: float = 60.0) -> FrameStack | None:
        """The stream's frames of ``key`` as a :class:`FrameStack` (None if none)."""
        locs = self.frame_locations.get(stream, {}).get(key)
        if not locs:
            return None
        dk = (self.descriptors.get(stream) or {}).get("data_keys", {}).get(key, {})
        shape = dk.get("shape") or None
        dtype = dk.get("dtype_numpy") or None
        if shape and len(shape) == 3 and shape[0] == 1:
            shape = shape[1:]
        return FrameStack(locs, frame_shape=tuple(shape) if shape else None,
                          dtype=dtype, timeout=timeout)


# --------------------------------------------------------------------------------------
# Tiled
# --------------------------------------------------------------------------------------

def json_safe(obj):
    """JSON-safe copy: numpy scalars → Python, NaN/inf → None, tuples → lists."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def replace_container(parent, key: str, metadata: dict):
    """Delete ``parent[key]`` (recursively) if it exists and create it anew."""
    if key in parent:
        parent.delete_contents(key, recursive=True, external_only=False)
    return parent.create_container(key, metadata=json_safe(metadata))


def stream_columns(stream) -> dict[str, np.ndarray]:
    """A stored stream's scalar columns (TiledWriter's ``internal`` table, one
    request; else key by key)."""
    base = getattr(stream, "base", stream)
    if "internal" in base:
        table = base["internal"].read()
        return {c: table[c].to_numpy() for c in table.columns}
    out = {}
    for key in stream:
        node = stream[key]
        if len(getattr(node, "shape", ())) == 1:
            out[key] = np.asarray(node.read())
    return out


def find_experiment_runs(raw, experiment_id_or_raw_uid: str, *,
                         accept: Callable[[dict], bool] | None = None) -> tuple[str, list]:
    """``(experiment_id, [(uid, run), ...])`` of an experiment's raw runs in
    start-time order; ``accept(start_doc)`` filters them.

    The argument is an ``experiment_id`` or the uid of any of its raw runs; the
    runs are found with ``Key("start.experiment_id") == experiment_id``.
    """
    from tiled.queries import Key

    key = str(experiment_id_or_raw_uid)
    eid, single = key, None
    if key in raw:
        single = raw[key]
        eid = str(single.metadata["start"].get("experiment_id") or "")
    if eid:
        found = list(raw.search(Key("start.experiment_id") == eid).items())
    elif single is not None:
        found = [(key, single)]
    else:
        found = []
    runs = []
    for uid, run in found:
        start = run.metadata.get("start", {})
        if accept is None or accept(start):
            runs.append((float(start.get("time", 0.0)), uid, run))
    if not runs:
        raise KeyError(f"no runs to reduce for {key!r}")
    runs.sort(key=lambda r: (r[0], r[1]))
    return eid, [(uid, run) for _, uid, run in runs]



_STOP_WORKER = object()


class QueuedReducer:
    """A bluesky callback that reduces on a worker thread, off the RunEngine's.

    ``__call__`` only copies the document onto a queue; the worker hands each
    one to :meth:`_handle` (subclasses) and survives its errors (logged, kept
    in ``errors``); :meth:`flush` waits until everything queued is done;
    :meth:`close` also stops the worker. Results go under the ``reduced``
    container of ``client`` (None: reduce without writing).
    """

    thread_name = "live-reducer"

    def __init__(self, client):
        self.client = client
        self.errors: list[tuple[str, str]] = []
        self._reduced = None
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name=self.thread_name, daemon=True)
        self._thread.start()

    def __call__(self, name: str, doc: dict) -> None:
        """Queue a document (cheap: a copy and a put)."""
        if not self._thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} is closed")
        with self._cond:
            self._pending += 1
        self._queue.put((name, copy.deepcopy(doc)))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is reduced and written; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Wait for the queue (after :meth:`_before_close`), then stop the worker."""
        if not self._thread.is_alive():
            return True
        self._before_close()
        done = self.flush(timeout)
        self._queue.put(_STOP_WORKER)
        self._thread.join(timeout=5)
        return done

    def _before_close(self) -> None:
        """Queue what must happen before the worker stops (subclasses)."""

    def _handle(self, name: str, doc: dict) -> None:
        raise NotImplementedError

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP_WORKER:
                return
            name, doc = item
            try:
                self._handle(name, doc)
            except Exception as err:  # noqa: BLE001 - the worker must survive
                logger.exception("%s failed on a %s document", type(self).__name__, name)
                self.errors.append((name, repr(err)))
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def _reduced_node(self):
        if self._reduced is None:
            from operando.tiled_server import reduced_container

            self._reduced = reduced_container(self.client)
        return self._reduced
