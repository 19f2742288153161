"""The reduced I(q) of a SAXS/WAXS raster (``reduced/<raw uid>``) as NeXus NXcanSAS.

One SASentry per point and detector, in acquisition order: ``saxs_000``,
``saxs_001``, ..., then ``waxs_000``, ... (SasView and ``sasdata`` read each as
one 1D data set)::

    /saxs_003                      NXentry, @canSAS_class=SASentry, @version=1.1
      definition = "NXcanSAS"
      title                        detector, raster, step, cycle, point and position
      run = <raw uid>              @name = "point 3"
      sasdata                      NXdata, @canSAS_class=SASdata, @signal=I, @I_axes=Q
        Q                          1/nm
        I                          arbitrary (pyFAI, solid-angle corrected counts;
                                   background subtracted as the node says), @uncertainties=Idev
        Idev                       arbitrary (Poisson)
      sasinstrument                NXinstrument (when the raw run is in the catalog)
        sassource                  NXsource: radiation (and type, probe), incident_wavelength (nm)
        sasdetector                NXdetector: name, SDD (m), pixel sizes (m),
                                   beam centre (m, untilted detectors)
      sassample                    NXsample: name (the cell), x_position, y_position
                                   (mm, the stage), transmission (diode), details
      sasprocess                   NXprocess: name, date, description of the reduction
      sasnote                      NXcollection, @canSAS_class=SASnote: cell_time (s),
                                   state_of_discharge, ewe (V), capacity (mAh),
                                   half_cycle, point, row, col, experiment_id, raster_index

Units come from :mod:`operando.callbacks.units`. The instrument's geometry
comes from the raw run's descriptor configuration (the pyFAI geometry each
detector publishes), found through the catalog's root.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np

from ..callbacks.units import describe
from . import nexus as nx
from . import nodes

__all__ = ["Raster", "write_nxcansas", "raster_from_node", "serialize_nxcansas", "ROLES"]

ROLES = ("saxs", "waxs")
CANSAS_VERSION = "1.1"
RADIATION = {"synchrotron": "Synchrotron X-ray Source", "lab": "Fixed Tube X-ray"}


@dataclass
class Raster:
    """The reduced curves of one raster, with what the points and the instrument were."""

    uid: str
    metadata: dict
    #: role -> (q nm⁻¹ (nq,), I (npoints, nq), sigma (npoints, nq))
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    #: the ``points`` table, column -> values (npoints,)
    points: dict[str, np.ndarray]
    #: the raw run's start document ({} when the raw run is not at hand)
    start: dict = dc_field(default_factory=dict)
    #: role -> pyFAI geometry (dist, poni1, poni2, rot1..3, detector_config, wavelength), SI
    geometry: dict[str, dict] = dc_field(default_factory=dict)

    @property
    def n_points(self) -> int:
        return max((c[1].shape[0] for c in self.curves.values()), default=0)


def _value(points: dict, key: str, k: int) -> float:
    col = points.get(key)
    if col is None or k >= len(col):
        return math.nan
    try:
        return float(col[k])
    except (TypeError, ValueError):
        return math.nan


def _units(name: str) -> str | None:
    return describe(name)[0] or None


def _write_instrument(entry, role: str, raster: Raster) -> None:
    geo = raster.geometry.get(role)
    if not geo:
        return
    inst = nx.group(entry, "sasinstrument", "NXinstrument", canSAS_class="SASinstrument")
    src = nx.group(inst, "sassource", "NXsource", canSAS_class="SASsource")
    source_type = RADIATION.get(str(raster.start.get("beamline")), "x-ray")
    # ``radiation`` is what NXcanSAS 1.0 asks for (and SasView reads); newer
    # definitions prefer NXsource's ``type`` and ``probe``: write all three
    nx.field(src, "radiation", source_type)
    nx.field(src, "type", source_type)
    nx.field(src, "probe", "x-ray")
    if geo.get("wavelength"):
        nx.field(src, "incident_wavelength", float(geo["wavelength"]) * 1e9, units="nm")
    det = nx.group(inst, "sasdetector", "NXdetector", canSAS_class="SASdetector")
    nx.field(det, "name", f"{role} ({geo.get('detector', 'detector')})")
    if geo.get("dist"):
        nx.field(det, "SDD", float(geo["dist"]), units="m")
    conf = geo.get("detector_config") or {}
    if conf.get("pixel2"):
        nx.field(det, "x_pixel_size", float(conf["pixel2"]), units="m")
    if conf.get("pixel1"):
        nx.field(det, "y_pixel_size", float(conf["pixel1"]), units="m")
    untilted = all(abs(float(geo.get(k) or 0.0)) < 1e-9 for k in ("rot1", "rot2"))
    if untilted and geo.get("poni1") is not None and geo.get("poni2") is not None:
        nx.field(det, "beam_center_x", float(geo["poni2"]), units="m")
        nx.field(det, "beam_center_y", float(geo["poni1"]), units="m")


def _write_entry(f, role: str, k: int, raster: Raster) -> str:
    md, pts = raster.metadata, raster.points
    q, inten, sigma = raster.curves[role]
    name = f"{role}_{k:03d}"
    x, y = _value(pts, "x", k), _value(pts, "y", k)
    entry = nx.group(
        f, name, "NXentry", canSAS_class="SASentry", version=CANSAS_VERSION, default="sasdata"
    )
    nx.field(entry, "definition", "NXcanSAS")
    step, cycle, raster_index = md.get("step"), md.get("cycle"), md.get("raster_index")
    title = f"{role.upper()}, {step} raster"
    if raster_index is not None:
        title += f" {raster_index}"
    if cycle is not None:
        title += f", cycle {cycle}"
    title += f", point {k} at x = {x:.4f} mm, y = {y:.4f} mm"
    nx.field(entry, "title", title)
    nx.field(entry, "run", raster.uid, name=f"point {k}")

    data = nx.group(
        entry,
        "sasdata",
        "NXdata",
        canSAS_class="SASdata",
        signal="I",
        I_axes="Q",
        Q_indices=np.int32(0),
    )
    nx.field(data, "Q", np.asarray(q, float), units=_units(f"q_{role}"))
    nx.field(data, "I", np.asarray(inten[k], float), units="arbitrary", uncertainties="Idev")
    nx.field(data, "Idev", np.asarray(sigma[k], float), units="arbitrary")

    _write_instrument(entry, role, raster)

    sample = nx.group(entry, "sassample", "NXsample", canSAS_class="SASsample")
    nx.field(sample, "name", str(raster.start.get("cell") or md.get("cell") or "cell"))
    if math.isfinite(x):
        nx.field(sample, "x_position", x, units=_units("x"))
    if math.isfinite(y):
        nx.field(sample, "y_position", y, units=_units("y"))
    trans = _value(pts, "diode", k)
    if math.isfinite(trans):
        nx.field(sample, "transmission", trans).attrs["units"] = ""
    t, sod = _value(pts, "time", k), _value(pts, "sodc", k)
    ewe, cap = _value(pts, "ewe", k), _value(pts, "capacity", k)
    details = (
        f"cell time {t:.1f} s, Ewe {ewe:.4f} V, capacity {cap:.4f} mAh of the present "
        "half cycle, state of discharge "
        + (f"{sod:.4f}" if math.isfinite(sod) else "not known yet")
    )
    nx.field(sample, "details", details)

    red = md.get("reduction") or {}
    proc = nx.group(entry, "sasprocess", "NXprocess", canSAS_class="SASprocess")
    nx.field(proc, "name", f"{red.get('name', 'reduction')} {red.get('version', '')}".strip())
    when = nx.iso_time(red.get("reduced_at"))
    if when:
        nx.field(proc, "date", when)
    nx.field(
        proc,
        "description",
        f"pyFAI azimuthal integration to q (nm^-1); curves {md.get('curves', 'as reduced')}"
        f" (background {md.get('background_uid')}); reduction mode {red.get('mode')}; "
        f"parameters {json.dumps(red.get('parameters') or {}, default=str)}",
    )

    note = nx.group(entry, "sasnote", "NXcollection", canSAS_class="SASnote")
    nx.field(note, "cell_time", t, units=_units("time"))
    nx.field(note, "state_of_discharge", sod)
    nx.field(note, "ewe", ewe, units=_units("ewe"))
    nx.field(note, "capacity", cap, units=_units("capacity"))
    for key in ("half_cycle", "row", "col"):
        v = _value(pts, key, k)
        if math.isfinite(v):
            nx.field(note, key, int(v))
    nx.field(note, "point", int(k))
    if md.get("experiment_id"):
        nx.field(note, "experiment_id", str(md["experiment_id"]))
    if raster_index is not None:
        nx.field(note, "raster_index", int(raster_index))
    return name


def write_nxcansas(path, raster: Raster) -> list[str]:
    """Write the NXcanSAS file; returns the entry names."""
    import h5py

    names = []
    with h5py.File(path, "w") as f:
        f.attrs["creator"] = "operando-beamline"
        for role in ROLES:
            if role not in raster.curves:
                continue
            for k in range(raster.curves[role][1].shape[0]):
                names.append(_write_entry(f, role, k, raster))
        if names:
            f.attrs["default"] = names[0]
    return names


async def _raw_context(node, raw_uid: str, filter_for_access) -> tuple[dict, dict]:
    """The raw run's start document and each detector's geometry ({} when not found)."""
    root = await nodes.root_of(node, filter_for_access)
    if root is None or not raw_uid:
        return {}, {}
    try:
        run = await nodes.child(root, "raw", raw_uid)
        stream = await nodes.child(run, "primary")
    except KeyError:
        return {}, {}
    start = dict((run.metadata() or {}).get("start") or {})
    conf = (stream.metadata() or {}).get("configuration") or {}
    geometry = {}
    for role in ROLES:
        text = ((conf.get(role) or {}).get("data") or {}).get(f"{role}_cam_geometry")
        if text:
            try:
                geometry[role] = json.loads(text) if isinstance(text, str) else dict(text)
            except ValueError:
                pass
    return start, geometry


async def raster_from_node(node, metadata: dict | None = None, filter_for_access=None) -> Raster:
    """A reduced raster from its container adapter (HTTP 406 when it is not one)."""
    md = dict(metadata if metadata is not None else node.metadata())
    if md.get("technique") != "saxs_waxs" or md.get("kind") == "experiment":
        raise nodes.refuse(
            "NXcanSAS is for a reduced SAXS/WAXS raster (reduced/<raw uid> with "
            "q_saxs, saxs, saxs_sigma, ...); this node is "
            f"{md.get('technique')!r}/{md.get('kind', md.get('step'))!r}"
        )
    present = set(await nodes.keys(node))
    curves = {}
    for role in ROLES:
        need = (f"q_{role}", role, f"{role}_sigma")
        if not all(k in present for k in need):
            continue
        q, inten, sigma = [await nodes.read_array(await nodes.child(node, k)) for k in need]
        if inten.ndim != 2 or inten.shape != sigma.shape or inten.shape[1] != q.size:
            raise nodes.refuse(
                f"{role}: I {inten.shape}, sigma {sigma.shape} and q {q.shape} do not match"
            )
        curves[role] = (q, inten, sigma)
    if not curves:
        raise nodes.refuse("no reduced curves (q_saxs/saxs/saxs_sigma or the WAXS ones) here")
    points: dict[str, Any] = {}
    if "points" in present:
        table = await nodes.read_table(await nodes.child(node, "points"))
        points = {c: np.asarray(table[c]) for c in table.columns}
    raw_uid = str(md.get("raw_uid") or "")
    start, geometry = await _raw_context(node, raw_uid, filter_for_access)
    return Raster(
        uid=raw_uid, metadata=md, curves=curves, points=points, start=start, geometry=geometry
    )


async def serialize_nxcansas(mimetype, node, metadata, filter_for_access=None):
    """Tiled exporter (container): the raster's I(q) as an NXcanSAS file, streamed."""
    import anyio

    raster = await raster_from_node(node, metadata, filter_for_access)

    async def write(path):
        await anyio.to_thread.run_sync(write_nxcansas, path, raster)

    return await nx.streamed_file(write, suffix=".h5")
