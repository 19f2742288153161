"""Reading Tiled nodes from inside the server (the adapters an exporter is handed).

An exporter gets the node's adapter, not a client: children are looked up
with ``lookup_adapter``, arrays read with ``read(slices)`` (external detector
files included: the adapter opens the HDF5 file), tables with ``read()`` (a
pandas DataFrame). A Bluesky stream written by TiledWriter is a container
(spec ``composite``) of its external arrays (e.g. ``ct_det_image``) and one
table, ``internal``, holding every scalar column (``time``, ``seq_num``,
``stage_th``, ...).

Everything here also accepts Tiled's in-memory adapters (``MapAdapter``,
``ArrayAdapter``, ``TableAdapter``), so exporters can be tried on a tree built
in a test.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "child",
    "keys",
    "structure_family",
    "read_array",
    "read_table",
    "array_shape",
    "stream_columns",
    "asset_paths",
    "file_attributes",
    "root_of",
    "refuse",
    "BlockingArray",
]

#: the table of a Bluesky stream that holds its scalar columns
INTERNAL = "internal"


def refuse(message: str) -> Exception:
    """The exception that makes Tiled answer HTTP 406 with ``message`` (this node
    cannot be exported in the format asked for)."""
    from tiled.utils import SerializationError

    return SerializationError(message)


async def _maybe_await(value):
    if hasattr(value, "__await__"):
        return await value
    return value


async def child(node, *path: str):
    """The adapter at ``path`` below ``node`` (KeyError if there is none)."""
    if not path:
        return node
    if hasattr(node, "lookup_adapter"):
        try:
            found = await node.lookup_adapter(list(path))
        except Exception as err:  # tiled's NoEntry, or a broken link
            raise KeyError("/".join(path)) from err
        if found is None:
            raise KeyError("/".join(path))
        return found
    for key in path:
        value = node.get(key) if hasattr(node, "get") else node[key]
        if value is None:
            raise KeyError(key)
        node = value
    return node


async def keys(node) -> list[str]:
    """The keys of a container."""
    if hasattr(node, "keys_range"):
        return list(await _maybe_await(node.keys_range(0, None)))
    return list(node.keys())


def structure_family(node) -> str:
    family = getattr(node, "structure_family", "")
    return str(getattr(family, "value", family))


def array_shape(node) -> tuple[int, ...]:
    return tuple(int(n) for n in node.structure().shape)


async def read_array(node, *slices) -> np.ndarray:
    """Read an array adapter, or a slice of it (``read_array(node, slice(0, 8))``)."""
    if slices:
        try:  # Tiled's adapters take an NDSlice (its zarr adapter composes them)
            from tiled.ndslice import NDSlice

            where = NDSlice(*slices)
        except ImportError:  # pragma: no cover - older Tiled: a tuple
            where = tuple(slices)
        return np.asarray(await _maybe_await(node.read(where)))
    return np.asarray(await _maybe_await(node.read()))


async def read_table(node):
    """A table adapter as a pandas DataFrame."""
    return await _maybe_await(node.read())


async def stream_columns(run, stream: str):
    """A Bluesky stream's scalar columns (its ``internal`` table), sorted by ``seq_num``."""
    table = await read_table(await child(run, stream, INTERNAL))
    if "seq_num" in table.columns:
        table = table.sort_values("seq_num", kind="stable").reset_index(drop=True)
    return table


async def asset_paths(node) -> list[str]:
    """Local paths of the files behind an array adapter (external HDF5 assets)."""
    if not hasattr(node, "data_sources"):
        return []
    try:
        sources = await _maybe_await(node.data_sources(include_assets=True))
    except TypeError:
        sources = await _maybe_await(node.data_sources())
    paths = []
    for source in sources or []:
        for asset in getattr(source, "assets", []) or []:
            uri = getattr(asset, "data_uri", "") or ""
            parsed = urlparse(uri)
            if parsed.scheme in ("file", ""):
                paths.append(parsed.path)
    return paths


def file_attributes(path: str, group: str = "/entry") -> dict[str, Any]:
    """Attributes of ``group`` in an HDF5 file (the detector writer's, e.g. pixel size)."""
    import h5py

    try:
        with h5py.File(path, "r", swmr=True) as f:
            attrs = dict(f[group].attrs) if group in f else {}
    except OSError:
        try:
            with h5py.File(path, "r") as f:
                attrs = dict(f[group].attrs) if group in f else {}
        except OSError as err:
            logger.warning("cannot read the attributes of %s: %s", path, err)
            return {}
    out = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


async def root_of(node, filter_for_access=None):
    """The root of the catalog ``node`` belongs to (as its own access filter sees it),
    or None when ``node`` is not a catalog adapter."""
    context = getattr(node, "context", None)
    if context is None:
        return None
    try:
        from tiled.catalog.adapter import CatalogContainerAdapter, RootNode
    except ImportError:  # pragma: no cover
        return None
    root = CatalogContainerAdapter(context, RootNode(None, None, None))
    if filter_for_access is not None:
        root = await filter_for_access(root)
    return root


class BlockingArray:
    """An array adapter sliced from a worker thread (one started by
    ``anyio.to_thread.run_sync``): ``block[k0:k1]`` reads those slices through
    the server's event loop. A writer running in the thread reads a volume a
    few slices at a time, as it writes them."""

    def __init__(self, node):
        self.node = node
        self.shape = array_shape(node)
        self.dtype = np.dtype(node.structure().data_type.to_numpy_dtype())
        self.ndim = len(self.shape)

    def __getitem__(self, item) -> np.ndarray:
        import anyio.from_thread

        item = item if isinstance(item, tuple) else (item,)
        return anyio.from_thread.run(read_array, self.node, *item)
