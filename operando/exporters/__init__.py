"""Exports of raw runs and reduced results in the field's standard formats, as Tiled exporters.

The Tiled server started by :class:`operando.tiled_server.TiledServer` (and so
``operando serve``) registers these media types in its configuration
(:data:`MEDIA_TYPES`, :data:`FILE_EXTENSIONS`), so any Tiled client asks for
them by name, e.g. ``client["raw"][uid].export("scan.nxs", format="nxtomo")``;
``operando export`` does the same from the command line (:mod:`.client`).

| format | node | file |
|---|---|---|
| ``nxtomo`` | ``raw/<uid>`` of a 3D scan | NeXus NXtomo (:mod:`.nxtomo`) |
| ``nxcansas`` | ``reduced/<uid>`` of a SAXS/WAXS raster | NeXus NXcanSAS (:mod:`.nxcansas`) |
| ``tiff`` | ``reduced/<uid>`` of a scan; any array | multi-page TIFF, voxel size in tags |
| ``nexus`` | ``reduced/<uid>`` of a scan | NXtomoproc: the volume, axes in µm (:mod:`.volume`) |
| ``nexus`` | any array | NeXus NXdata (axes in µm for a volume) |
| ``csv``, ``parquet`` | a table, e.g. ``reduced/<id>/cycles`` | Tiled's own exporters |

The exporters run inside the server: they read the frames, curves and tables
through the node's adapters (the detector frames from their HDF5 files) and
write with h5py and tifffile (TIFF: :mod:`.volume`). Files are written to a
temporary file, then streamed, so a full-size scan is never held in memory.
"""

from __future__ import annotations

#: media type of each exporter, by the structure family (or spec) Tiled dispatches on
MEDIA_TYPES: dict[str, dict[str, str]] = {
    "container": {
        "application/x-nxtomo": "operando.exporters.nxtomo:serialize_nxtomo",
        "application/x-nxcansas": "operando.exporters.nxcansas:serialize_nxcansas",
        "application/x-nexus": "operando.exporters.volume:serialize_nexus_scan",
        "image/tiff": "operando.exporters.volume:serialize_tiff_scan",
    },
    "array": {
        # replaces Tiled's own TIFF writer: the same pages, plus the voxel size
        # when the array's metadata has one
        "image/tiff": "operando.exporters.volume:serialize_tiff",
        "application/x-nexus": "operando.exporters.volume:serialize_nexus_array",
    },
}

#: the names a client may give as ``format`` (``tiff``, ``csv`` and ``parquet`` Tiled knows)
FILE_EXTENSIONS: dict[str, str] = {
    "nxtomo": "application/x-nxtomo",
    "nxcansas": "application/x-nxcansas",
    "nexus": "application/x-nexus",
    "nxs": "application/x-nexus",
}

#: formats of ``operando export``: the node they apply to, and the default file
#: name's ending (after the node's path)
FORMATS: dict[str, dict[str, str]] = {
    "nxtomo": {"node": "raw", "name": "-nxtomo", "suffix": ".nxs"},
    "nxcansas": {"node": "reduced", "name": "-nxcansas", "suffix": ".h5"},
    "tiff": {"node": "reduced", "name": "-volume", "suffix": ".tif"},
    "nexus": {"node": "reduced", "name": "-volume", "suffix": ".nxs"},
    "csv": {"node": "table", "suffix": ".csv"},
    "parquet": {"node": "table", "suffix": ".parquet"},
}


def server_config() -> dict:
    """The ``media_types`` and ``file_extensions`` sections of a Tiled server config."""
    return {
        "media_types": {family: dict(types) for family, types in MEDIA_TYPES.items()},
        "file_extensions": dict(FILE_EXTENSIONS),
    }
