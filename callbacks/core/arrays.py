"""Arrays a long reduction keeps for its figures, kept on disk instead of in memory.

A live reduction runs for days: what it holds for the figures of the whole
experiment (an XCT scan's vertical sections, a plating's radiogram thumbnails)
grows by about 2 MB per cycle. :class:`ArraysOnDisk` is a read-only mapping
over such a dict whose arrays are written once to an ``.npy`` file each (exact:
same dtype, same values) and read back when asked for; its other values (row
numbers, factors) stay in memory. The figures read it like the dict it replaces.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["ArraysOnDisk"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class ArraysOnDisk(Mapping):
    """``values`` (a mapping of str to arrays and small values) with its arrays in
    ``directory/<name>.<key>.npy``; the directory is made readable by its owner
    only, as the data directory is."""

    def __init__(self, values: Mapping, directory, name: str):
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        stem = _UNSAFE.sub("_", str(name))
        self._keys = list(values)
        self._inline: dict = {}
        self._files: dict[str, Path] = {}
        for key, value in values.items():
            if isinstance(value, np.ndarray):
                path = self.directory / f"{stem}.{_UNSAFE.sub('_', str(key))}.npy"
                tmp = path.with_name(path.name + ".part")
                with open(tmp, "wb") as f:
                    np.save(f, value, allow_pickle=False)
                os.replace(tmp, path)
                self._files[key] = path
            else:
                self._inline[key] = value

    def __getitem__(self, key):
        if key in self._inline:
            return self._inline[key]
        path = self._files[key]  # KeyError for a key it never had
        return np.load(path, allow_pickle=False)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def nbytes_in_memory(self) -> int:
        """Bytes of arrays still held in memory (those it was given that were not arrays)."""
        return sum(getattr(v, "nbytes", 0) for v in self._inline.values())

    def remove(self) -> None:
        """Delete its files (the mapping is unusable afterwards for its arrays)."""
        for path in self._files.values():
            path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"ArraysOnDisk({sorted(self._keys)!r} in {str(self.directory)!r})"
