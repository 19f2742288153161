"""Reconstructed volumes (``reduced/<uid>/volume``, (row, y, x) float32) as TIFF and NeXus.

* :func:`serialize_tiff_scan` (container, ``image/tiff``): the volume of a
  reduced scan (``reduced/<uid>``) as a multi-page TIFF, one page per volume
  row, float32 as stored, read and written a few slices at a time (no size
  limit). The pages carry the voxel size: XResolution/YResolution in pixels per
  µm and ImageJ's metadata ``spacing`` (µm between pages), ``unit`` = ``um``,
  ``axes`` = ``ZYX``, so ImageJ/Fiji and tifffile show physical sizes.
* :func:`serialize_tiff` (array, ``image/tiff``): the same for one array with
  ``pixel_um`` in its metadata (``reduced/<uid>/volume``; Tiled reads the whole
  array first and refuses one larger than its response limit, 300 MB by
  default); any other array as Tiled's own TIFF exporter writes it.
* :func:`serialize_nexus_array` (array, ``application/x-nexus``): ``/entry/data``
  (NXdata) with the array as signal and, for a volume, axes ``z``, ``y``, ``x``
  in µm.
* :func:`serialize_nexus_scan` (container, ``application/x-nexus``): a reduced
  scan (``reduced/<uid>`` of step ``scan3d``/``postmortem``) as NXtomoproc::

      /entry                   NXentry, definition = "NXtomoproc"
        title, entry_identifier (raw uid), experiment_identifier
        instrument/source      NXsource: type, name, probe = "x-ray"
        sample                 NXsample: name (the cell), description (cycle, step)
        reconstruction         NXprocess: program, version, date,
          parameters           NXparameters: raw_file (the raw run in Tiled),
                               center (detector column), row0, pixel_size (µm)
        data                   NXdata, @signal=data, @axes=[z, y, x]
          data                 (nz, ny, nx) float32: attenuation per voxel
                               (mu times the voxel size)
          z                    µm, depth of each slice below the top detector row
          y, x                 µm from the rotation axis (the volume is the cell's
                               mirror image: y -> -y)
          profile              (nz) mean attenuation per slice
        notes                  NXnote (application/json): layers (Cu-to-Cu, top
                               Li, ... µm), electrode, particles count

  NXtomoproc types its ``data`` as integer (a volume scaled to integers, with
  ``offset`` and ``scaling`` attributes); the volume stays float32 here, with
  ``offset`` 0 and ``scaling`` 1, so that no precision is lost.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np

from ..callbacks.units import describe, nexus_units
from . import nexus as nx
from . import nodes

__all__ = [
    "voxel_axes",
    "write_tiff",
    "write_nexus_array",
    "write_nxtomoproc",
    "serialize_tiff",
    "serialize_tiff_scan",
    "serialize_nexus_array",
    "serialize_nexus_scan",
]

SCAN_STEPS = ("scan3d", "postmortem")
#: bytes of a volume read at a time
BLOCK_BYTES = 64 << 20


def _blocks(shape, itemsize: int):
    """(k0, k1) ranges of whole slices of about BLOCK_BYTES."""
    per = max(1, int(BLOCK_BYTES // max(1, int(np.prod(shape[1:])) * itemsize)))
    for k0 in range(0, int(shape[0]), per):
        yield k0, min(int(shape[0]), k0 + per)


def _pixel_um(metadata: dict | None) -> float | None:
    try:
        v = float((metadata or {}).get("pixel_um"))
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def voxel_axes(shape, metadata: dict) -> dict[str, np.ndarray]:
    """z, y, x in µm of a (row, y, x) volume: z is the depth below the top detector
    row (``row0`` is the first row's), y and x are from the rotation axis
    (``axis_voxel``)."""
    pix = _pixel_um(metadata)
    nz, ny, nxx = (int(n) for n in shape)
    row0 = int(metadata.get("row0") or 0)
    axis = metadata.get("axis_voxel")
    axis = nxx // 2 if axis is None else float(axis)
    return {
        "z": (row0 + np.arange(nz)) * pix,
        "y": (np.arange(ny) - axis) * pix,
        "x": (np.arange(nxx) - axis) * pix,
    }


def write_tiff(file, array, metadata: dict | None = None) -> None:
    """A multi-page TIFF of ``array``; a volume with ``pixel_um`` carries its voxel size
    (and is read a few slices at a time: ``array`` may be any sliceable with a shape)."""
    import tifffile

    pix = _pixel_um(metadata)
    if len(array.shape) == 3 and pix is not None:
        dtype = np.float32 if np.dtype(array.dtype) == np.float64 else np.dtype(array.dtype)

        def pages():
            for k0, k1 in _blocks(array.shape, dtype.itemsize):
                yield from np.asarray(array[k0:k1], dtype=dtype)

        tifffile.imwrite(
            file,
            pages(),
            shape=tuple(array.shape),
            dtype=dtype,
            imagej=True,
            resolution=(1.0 / pix, 1.0 / pix),
            metadata={"spacing": pix, "unit": "um", "axes": "ZYX"},
        )
        return
    arr = np.atleast_2d(np.asarray(array))
    if arr.ndim > 4:
        from tiled.utils import UnsupportedShape

        raise UnsupportedShape(arr.ndim)
    tifffile.imwrite(file, arr)


def _data_group(entry, array, metadata: dict, *, name: str = "volume", dtype=None):
    """``entry/data`` with ``array`` (any sliceable: written a few slices at a time)."""
    data = nx.group(entry, "data", "NXdata", signal="data")
    unit, text = describe(name)
    shape = tuple(int(n) for n in array.shape)
    dtype = np.dtype(dtype or array.dtype)
    if len(shape) == 3:
        dset = data.create_dataset("data", shape=shape, dtype=dtype, chunks=(1,) + shape[1:])
        for k0, k1 in _blocks(shape, dtype.itemsize):
            dset[k0:k1] = np.asarray(array[k0:k1], dtype=dtype)
    else:
        dset = data.create_dataset("data", data=np.asarray(array, dtype=dtype))
    dset.attrs["long_name"] = text or name
    if unit:
        dset.attrs["units"] = nexus_units(unit)
    if len(shape) == 3 and _pixel_um(metadata) is not None:
        axes = voxel_axes(shape, metadata)
        data.attrs["axes"] = ["z", "y", "x"]
        for i, key in enumerate(("z", "y", "x")):
            data.attrs[f"{key}_indices"] = np.int32(i)
        nx.field(data, "z", axes["z"], units="µm", long_name="depth below the top detector row")
        nx.field(
            data,
            "y",
            axes["y"],
            units="µm",
            long_name="y from the rotation axis (mirror image of the cell: y -> -y)",
        )
        nx.field(data, "x", axes["x"], units="µm", long_name="x from the rotation axis")
    return data, dset


def write_nexus_array(path, array, metadata: dict | None = None, *, name: str = "data") -> None:
    """``/entry/data`` (NXdata) holding ``array``; volumes get axes in µm."""
    import h5py

    md = dict(metadata or {})
    with h5py.File(path, "w") as f:
        f.attrs["default"] = "entry"
        f.attrs["creator"] = "operando-beamline"
        entry = nx.group(f, "entry", "NXentry", default="data")
        nx.field(entry, "title", f"{name} {tuple(np.shape(array))}")
        _data_group(entry, np.asarray(array), md, name="volume" if np.ndim(array) == 3 else name)
        notes = nx.group(entry, "notes", "NXnote")
        nx.field(notes, "type", "application/json")
        nx.field(notes, "description", "the array's metadata in the catalog")
        nx.field(notes, "data", json.dumps(md, default=str))


def write_nxtomoproc(
    path, volume, volume_metadata: dict, scan_metadata: dict, profile=None
) -> None:
    """A reduced scan's volume (any sliceable (row, y, x)) as NXtomoproc (see the module doc)."""
    import h5py

    vmd, smd = dict(volume_metadata or {}), dict(scan_metadata or {})
    red = smd.get("reduction") or {}
    uid = str(smd.get("raw_uid") or "")
    with h5py.File(path, "w") as f:
        f.attrs["default"] = "entry"
        f.attrs["creator"] = "operando-beamline"
        entry = nx.group(f, "entry", "NXentry", default="data")
        nx.field(entry, "definition", "NXtomoproc")
        title = f"reconstructed volume, XCT {smd.get('step', '')}"
        if smd.get("cycle") is not None:
            title += f" cycle {smd['cycle']}"
        if smd.get("experiment_id"):
            title += f", experiment {smd['experiment_id']}"
        nx.field(entry, "title", title)
        if uid:
            nx.field(entry, "entry_identifier", uid)
        if smd.get("experiment_id"):
            nx.field(entry, "experiment_identifier", str(smd["experiment_id"]))
        inst = nx.group(entry, "instrument", "NXinstrument")
        src = nx.group(inst, "source", "NXsource")
        nx.field(src, "type", "Fixed Tube X-ray")
        nx.field(src, "name", "micro-focus X-ray tube")
        nx.field(src, "probe", "x-ray")
        sample = nx.group(entry, "sample", "NXsample")
        nx.field(sample, "name", str(smd.get("cell") or "cell"))
        desc = ", ".join(
            f"{k} {smd[k]}" for k in ("cycle", "step", "postmortem_scan") if smd.get(k) is not None
        )
        nx.field(sample, "description", desc or "operando cell")

        rec = nx.group(entry, "reconstruction", "NXprocess")
        nx.field(rec, "program", str(red.get("name") or "operando.xct"))
        nx.field(rec, "version", str(red.get("version") or ""))
        nx.field(rec, "date", nx.iso_time(red.get("reduced_at")) or nx.iso_time(0.0))
        par = nx.group(rec, "parameters", "NXparameters")
        nx.field(par, "raw_file", f"raw/{uid} (Tiled)" if uid else "unknown")
        if vmd.get("center_column") is not None:
            nx.field(par, "center", float(vmd["center_column"]))
        if vmd.get("row0") is not None:
            nx.field(par, "row0", int(vmd["row0"]))
        if _pixel_um(vmd) is not None:
            nx.field(par, "pixel_size", _pixel_um(vmd), units="µm")

        data, dset = _data_group(entry, volume, vmd, dtype=np.float32)
        dset.attrs["transform"] = "identity"
        dset.attrs["offset"] = 0.0
        dset.attrs["scaling"] = 1.0
        if profile is not None:
            nx.field(data, "profile", np.asarray(profile, float), long_name=describe("profile")[1])

        notes = nx.group(entry, "notes", "NXnote")
        nx.field(notes, "type", "application/json")
        nx.field(
            notes,
            "description",
            "the reduced scan's results (lengths in µm, positions in detector rows)",
        )
        keep = (
            "raw_uid",
            "experiment_id",
            "step",
            "cycle",
            "cu_to_cu_um",
            "top_li_um",
            "hse_um",
            "bottom_li_um",
            "layers",
            "electrode",
            "diameter_um",
            "n_particles",
            "center",
            "row0",
            "pixel_um",
            "reduction",
        )
        nx.field(notes, "data", json.dumps({k: smd.get(k) for k in keep if k in smd}, default=str))


def serialize_tiff(mimetype, array, metadata):
    """Tiled exporter (array, ``image/tiff``)."""
    buffer = io.BytesIO()
    write_tiff(buffer, array, metadata)
    return buffer.getbuffer()


def _h5_bytes(write, *args, **kwargs) -> bytes:
    import os
    import tempfile

    fd, path = tempfile.mkstemp(prefix="operando-export-", suffix=".nxs")
    os.close(fd)
    try:
        write(path, *args, **kwargs)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.remove(path)


def serialize_nexus_array(mimetype, array, metadata):
    """Tiled exporter (array, ``application/x-nexus``)."""
    return _h5_bytes(write_nexus_array, array, metadata)


async def _reduced_scan(node, metadata, what: str):
    """The metadata, the volume's adapter and the profile of a reduced scan (406 otherwise)."""
    md = dict(metadata if metadata is not None else node.metadata())
    present = await nodes.keys(node)
    if md.get("technique") != "xct" or md.get("step") not in SCAN_STEPS or "volume" not in present:
        raise nodes.refuse(
            f"{what} export is for a reduced XCT scan with a volume "
            "(reduced/<raw uid> of a scan3d or postmortem run); for one array, "
            "export the array itself"
        )
    profile = None
    if "profile" in present:
        profile = await nodes.read_array(await nodes.child(node, "profile"))
    return md, await nodes.child(node, "volume"), profile


async def serialize_tiff_scan(mimetype, node, metadata, filter_for_access=None):
    """Tiled exporter (container, ``image/tiff``): a reduced scan's volume, streamed."""
    import anyio

    _, vol_node, _ = await _reduced_scan(node, metadata, "TIFF")
    vmd = dict(vol_node.metadata() or {})
    volume = nodes.BlockingArray(vol_node)

    async def write(path):
        await anyio.to_thread.run_sync(lambda: write_tiff(path, volume, vmd))

    return await nx.streamed_file(write, suffix=".tif")


async def serialize_nexus_scan(mimetype, node, metadata, filter_for_access=None):
    """Tiled exporter (container, ``application/x-nexus``): a reduced scan as NXtomoproc."""
    import anyio

    md, vol_node, profile = await _reduced_scan(node, metadata, "NeXus (NXtomoproc)")
    root = await nodes.root_of(node, filter_for_access)
    if root is not None and md.get("raw_uid") and not md.get("cell"):
        try:
            run = await nodes.child(root, "raw", str(md["raw_uid"]))
            md["cell"] = ((run.metadata() or {}).get("start") or {}).get("cell")
        except KeyError:
            pass
    vmd = dict(vol_node.metadata() or {})
    volume = nodes.BlockingArray(vol_node)

    async def write(path):
        await anyio.to_thread.run_sync(lambda: write_nxtomoproc(path, volume, vmd, md, profile))

    return await nx.streamed_file(write, suffix=".nxs")
