"""One run's documents as a reduction wants them: :class:`RunCollector`."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
from event_model import DocumentRouter

from operando.constants import FRAME_DATASET

from .frames import FrameStack, path_of_uri

__all__ = ["RunCollector"]

logger = logging.getLogger(__name__)


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
        self._external[doc["uid"]] = {
            k for k, v in doc.get("data_keys", {}).items() if v.get("external")
        }

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
        frames = {}
        for key, (res_uid, index) in locs.items():
            res = self.resources[res_uid]
            path = path_of_uri(res["uri"])
            ds = (res.get("parameters") or {}).get("dataset", FRAME_DATASET)
            frames[key] = (path, ds, index)
        self.event_frames(stream, doc, frames)
        for key, location in frames.items():
            self.frame_locations.setdefault(stream, {}).setdefault(key, []).append(location)
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
        for col in cols.values():
            if len(col) < n + 1:
                col.append(math.nan)

    def event_frames(self, stream: str, doc: dict, frames: dict) -> None:
        """Called for every event whose frames are known, before it is recorded:
        ``frames`` maps each external data key to ``(path, dataset, index)``.
        Subclasses that work event by event (integrate a frame as it comes)
        override it; by default nothing happens."""

    def stop(self, doc):
        self.stop_doc = doc
        for ev in self.pending:
            logger.warning(
                "run %s: event %s of %s never got its frames",
                self.start_doc.get("uid"),
                ev.get("seq_num"),
                self._stream_of.get(ev.get("descriptor")),
            )
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
        return FrameStack(
            locs, frame_shape=tuple(shape) if shape else None, dtype=dtype, timeout=timeout
        )
