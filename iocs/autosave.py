"""EPICS-autosave-like persistence of a station simulator's state.

A station IOC that is killed and restarted with the same prefix continues where
it was, as a real IOC with autosave/restore does: cell time, the physics model
objects (cell state, charge passed, creep, layers), the potentiostat's running
technique and its progress, motor positions, source and beam state, detector
settings and the HDF5 file being captured.

The state is written atomically (pickle to a temporary file, then
``os.replace``) on every change that matters (a technique starting or ending, the
source switching, a file opened or closed, a motor move ending, a beam dump),
and periodically in cell time (virtual time: at a clock advance once
``period`` cell seconds have passed since the last save; scaled time: every
``wall_period`` wall seconds). At start (``--restore``, default on when the file
exists) :meth:`Station.restore` brings it back before the PVs are served.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from pathlib import Path

__all__ = ["Autosave", "default_autosave_path", "read_state"]

logger = logging.getLogger(__name__)

#: Format of the file (bumped when the layout changes; an older file is ignored).
VERSION = 1


def default_autosave_path(data_dir, prefix: str) -> Path:
    """``DATA_DIR/autosave-<prefix>.pkl`` (the prefix's ``:`` become ``_``)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in prefix).strip("_") or "ioc"
    return Path(data_dir) / f"autosave-{safe}.pkl"


def read_state(path) -> dict | None:
    """The saved state at ``path``, or None if absent, unreadable or of another version."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            state = pickle.load(fh)
    except Exception:
        logger.exception("autosave file %s is unreadable; starting fresh", path)
        return None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        logger.warning("autosave file %s is of another version; starting fresh", path)
        return None
    return state


class Autosave:
    """Writes ``collect()`` to ``path`` atomically, on request and periodically.

    ``collect`` is a callable returning a picklable dict (the station's state).
    """

    #: cell seconds between periodic saves on virtual time
    period = 60.0
    #: wall seconds between periodic saves on scaled time
    wall_period = 1.0

    def __init__(self, path, collect):
        self.path = Path(path)
        self.collect = collect
        self.saves = 0
        self._last_t: float | None = None
        self._last_wall = 0.0

    def save(self, t: float | None = None) -> None:
        """Write the state now (tmp file + ``os.replace``: never a half-written file)."""
        try:
            state = dict(self.collect(), version=VERSION, saved_wall=time.time())
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "wb") as fh:
                pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.path)
        except Exception:  # a failed save must not stop the simulator
            logger.exception("autosave to %s failed", self.path)
            return
        self.saves += 1
        self._last_t = t if t is not None else state.get("t")
        self._last_wall = time.monotonic()

    def request(self) -> None:
        """A state change that matters: save now."""
        self.save()

    async def on_step(self, t: float) -> None:
        """Virtual time: a clock step hook; saves once ``period`` cell s have passed."""
        if self._last_t is None or t - self._last_t >= self.period:
            self.save(t)

    def due_wall(self) -> bool:
        return time.monotonic() - self._last_wall >= self.wall_period
