"""What every exporter shares: NeXus groups and fields with h5py, and files streamed back.

* :func:`group`, :func:`field`, :func:`link`: NeXus objects (``NX_class``,
  ``units`` attributes in the ASCII form of :func:`operando.callbacks.units.nexus_units`,
  ``target`` attributes on links).
* :func:`iso_time`: a bluesky document time (epoch seconds) as ISO 8601.
* :func:`streamed_file`: write a temporary file (an async writer, which runs
  its h5py calls in worker threads), then stream it to the client in chunks and
  remove it (an exporter may return an async generator; Tiled answers with a
  streaming response), so a full-size scan is never held in memory.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np

from ..callbacks.units import nexus_units

__all__ = ["group", "field", "link", "iso_time", "streamed_file", "CHUNK_BYTES"]

#: bytes per chunk of a streamed response
CHUNK_BYTES = 1 << 20


def group(parent, key: str, nx_class: str, **attrs):
    """Create (or open) the NeXus group ``key`` of class ``nx_class``."""
    g = parent.require_group(key)
    g.attrs["NX_class"] = nx_class
    for key, value in attrs.items():
        g.attrs[key] = value
    return g


def field(parent, key: str, value: Any, *, units: str | None = None, **attrs):
    """Write the field ``key``; ``units`` as written by people (µm, nm⁻¹) or NeXus (um);
    ``attrs`` become its attributes."""
    if isinstance(value, str):
        dset = parent.create_dataset(key, data=value)
    else:
        dset = parent.create_dataset(key, data=np.asarray(value))
    unit = nexus_units(units) if units else None
    if unit:
        dset.attrs["units"] = unit
    for key, val in attrs.items():
        dset.attrs[key] = val
    return dset


def link(parent, key: str, target) -> None:
    """Hard link ``parent/key`` to the dataset ``target``, with NeXus' ``target`` attribute."""
    parent[key] = target
    if "target" not in target.attrs:
        target.attrs["target"] = target.name


def iso_time(epoch: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 time with the UTC offset (None stays None)."""
    if epoch is None or not np.isfinite(epoch):
        return None
    return _dt.datetime.fromtimestamp(float(epoch), tz=_dt.UTC).isoformat()


async def streamed_file(
    write: Callable[[str], Awaitable[None]], *, suffix: str
) -> AsyncIterator[bytes]:
    """Await ``write(path)`` on a temporary file, then return a generator of its chunks
    that removes it at the end.

    The file is complete before the response starts, so a failure while writing
    is the client's error status (406 for Tiled's ``SerializationError``), not a
    response cut short.
    """
    import anyio

    fd, path = tempfile.mkstemp(prefix="operando-export-", suffix=suffix)
    os.close(fd)
    try:
        await write(path)
    except BaseException:
        _remove(path)
        raise

    async def chunks():
        try:
            with open(path, "rb") as f:
                while True:
                    chunk = await anyio.to_thread.run_sync(f.read, CHUNK_BYTES)
                    if not chunk:
                        break
                    yield chunk
        finally:
            _remove(path)

    return chunks()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
