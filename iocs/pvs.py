"""PV building blocks of the station simulators: clipped puts, long strings, noise, truth.

* :class:`ClippedDouble`, :class:`ClippedInteger` — PVs that clip puts to their
  ctrl limits like an instrument front panel.
* :func:`char_pv` — a long string as a char waveform.
* :func:`keyed_normal` — reading noise as a function of the cell time.
* :class:`TruthLog` — ground truth as JSON lines (tests only, never via PVs).
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from pathlib import Path

import numpy as np
from caproto import ChannelType
from caproto.server import pvproperty
from caproto.server.server import PvpropertyDouble, PvpropertyInteger

__all__ = ["ClippedDouble", "ClippedInteger", "TruthLog", "char_pv", "keyed_normal"]


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
        value = int(_clip(int(round(float(value))), self.lower_ctrl_limit, self.upper_ctrl_limit))
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


def char_pv(
    name: str, value: str = "", *, max_length: int = 256, read_only: bool = False, doc: str = ""
):
    """A long-string PV as a char waveform (a DBR_STRING holds only 40 characters)."""
    return pvproperty(
        name=name,
        value=value,
        max_length=max_length,
        dtype=ChannelType.CHAR,
        string_encoding="utf-8",
        read_only=read_only,
        doc=doc,
    )


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
