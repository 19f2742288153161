"""Units and descriptions of every reduced array and table column (pure, no project imports).

``UNITS[name] = (unit, description)`` for the names of the ``reduced/`` nodes
(README, "Data layout"): arrays such as ``volume``, ``q_saxs``, ``waxs`` and the
columns of the tables ``timeseries``, ``cycles``, ``scans``, ``radiograms``,
``displacements``, ``cell``, ``points``, ``rasters``. A name means the same
thing in every table that has it (``t`` and ``time`` are the cell clock, in
seconds, in both experiments). Units are written as people read them (µm,
nm⁻¹); :func:`nexus_units` gives the ASCII form that NeXus ``units`` attributes
and UDUNITS-style parsers expect (``um``, ``1/nm``). ``""`` means dimensionless,
a count, an index or a label.

* :func:`describe` — ``(unit, description)`` of a name, falling back on the
  unit its suffix says (``_um``, ``_mm``, ``_nm``, ``_mpa``, ``_s``, ...).
* :func:`column_metadata` — what to attach to a table node's metadata.
* :func:`array_metadata` — what to attach to an array node's metadata.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["UNITS", "describe", "nexus_units", "column_metadata", "array_metadata"]

_CELL_TIME = "cell time (simulator or station clock)"

UNITS: dict[str, tuple[str, str]] = {
    # ---------------------------------------------------------------- XCT arrays
    "volume": (
        "",
        "reconstructed linear attenuation per voxel (mu times the voxel size), "
        "(row, y, x); the voxel size is the node's pixel_um",
    ),
    "figures": ("", "the experiment's figures, each an RGBA image (height, width, 4) of its PNG"),
    "profile": ("", "mean attenuation per voxel of each volume row inside the field of view"),
    "particles": (
        "µm",
        "particles: x, y from the rotation axis (mirror image of the cell, "
        "y -> -y), z above the bottom Cu face, r equivalent-sphere radius",
    ),
    "trajectories": ("µm", "tracked particles (track, scan, [x, y, z, r])"),
    # ---------------------------------------------------------------- XCT cell series
    "t": ("s", _CELL_TIME),
    "force": ("N", "stack force (load cell)"),
    "ewe": ("V", "working-electrode potential"),
    "current": ("A", "cell current"),
    "charge": ("C", "charge passed by the present technique"),
    "charge_cum": ("C", "charge passed by the plating steps so far"),
    "elapsed": ("s", "time since the present technique started"),
    "plating": ("", "1 while a plating current flows, else 0"),
    "plated_um": ("µm", "Li thickness plated (Faraday, homogeneous over the electrode)"),
    "pressure_mpa": ("MPa", "pressure on the electrode of the measured diameter"),
    "pressure_nominal_mpa": ("MPa", "pressure on the nominal ø4 mm electrode"),
    "run": ("", "index of the run in the experiment, in time order"),
    "cycle": ("", "cycle number (-1: post-mortem; SAXS/WAXS: 0 at open circuit)"),
    # ---------------------------------------------------------------- XCT layers
    "cu_to_cu_um": ("µm", "distance between the two Cu current collectors"),
    "top_li_um": ("µm", "top Li layer: top Cu to the top Li/electrolyte interface"),
    "hse_um": ("µm", "hybrid solid electrolyte thickness"),
    "bottom_li_um": ("µm", "bottom Li layer (less reliable)"),
    "cu_top": ("", "top Cu face, detector row (0 = top of the image)"),
    "cu_bottom": ("", "bottom Cu face, detector row"),
    "li_hse_top": ("", "top Li/electrolyte interface, detector row"),
    "hse_li_bottom": ("", "bottom electrolyte/Li interface, detector row"),
    "cu_to_cu_um_first": ("µm", "Cu-to-Cu at the cycle's first radiogram"),
    "cu_to_cu_um_last": ("µm", "Cu-to-Cu at the cycle's last radiogram"),
    "cu_to_cu_um_change": ("µm", "Cu-to-Cu change over the cycle"),
    "top_li_um_first": ("µm", "top Li at the cycle's first radiogram"),
    "top_li_um_last": ("µm", "top Li at the cycle's last radiogram"),
    "top_li_um_change": ("µm", "top Li change over the cycle"),
    # ---------------------------------------------------------------- XCT cycles
    "uid": ("", "raw run uid"),
    "current_density_uA_cm2": ("µA/cm²", "plating current density"),
    "t_start": ("s", "start (cell time)"),
    "t_end": ("s", "end (cell time)"),
    "t_mid": ("s", "middle (cell time)"),
    "duration_s": ("s", "duration"),
    "charge_c": ("C", "charge passed"),
    "shorted": ("", "true when the cell short-circuited"),
    "force_start": ("N", "force at the start of plating"),
    "force_peak": ("N", "highest force during plating"),
    "force_peak_time": ("s", "cell time of the highest force"),
    "force_rise": ("N", "force peak minus force at start"),
    "force_end": ("N", "force at the end of plating"),
    "potential_peak": ("V", "highest |potential| during plating"),
    "potential_peak_time": ("s", "cell time of the potential peak"),
    "height_change_um": ("µm", "stack height change the force rise means through the spring"),
    "contact_area_loss": ("", "fraction of contact area lost that explains the height change"),
    "contact_area_loss_whole": (
        "",
        "the same with the current-density factor rounded up to a whole number",
    ),
    "current_factor": ("", "local current-density factor: height change over plated thickness"),
    "pressure_nominal_start_mpa": ("MPa", "nominal pressure at the start of plating"),
    "pressure_start_mpa": ("MPa", "pressure on the measured electrode at the start of plating"),
    "pressure_nominal_peak_mpa": ("MPa", "nominal pressure at the force peak"),
    "pressure_peak_mpa": ("MPa", "pressure on the measured electrode at the force peak"),
    # ---------------------------------------------------------------- XCT scans
    "step": ("", "step of the protocol (scan3d, plating, postmortem, ocv, operando, ...)"),
    "postmortem_scan": ("", "post-mortem scan name (overview, highres)"),
    "pixel_um": ("µm", "voxel (pixel) size at the sample"),
    "center": ("", "detector column of the rotation axis"),
    "n_particles": ("", "particles found in the electrolyte"),
    "diameter_um": ("µm", "Li electrode footprint diameter"),
    "core_diameter_um": ("µm", "Li electrode core diameter"),
    "diameter_mm": ("mm", "electrode diameter used for the pressure"),
    # ---------------------------------------------------------------- XCT displacements
    "scan_from": ("", "index of the earlier scan"),
    "scan_to": ("", "index of the later scan"),
    "uid_from": ("", "raw run uid of the earlier scan"),
    "uid_to": ("", "raw run uid of the later scan"),
    "cycle_from": ("", "cycle of the earlier scan"),
    "cycle_to": ("", "cycle of the later scan"),
    "x_um": ("µm", "x from the rotation axis"),
    "y_um": ("µm", "y from the rotation axis (mirror image: y -> -y)"),
    "z_um": ("µm", "height above the bottom Cu face"),
    "r_um": ("µm", "equivalent-sphere radius"),
    "dx_um": ("µm", "displacement in x"),
    "dy_um": ("µm", "displacement in y"),
    "dz_um": ("µm", "displacement in z"),
    "radial_um": ("µm", "radial displacement (positive toward the edge)"),
    # ---------------------------------------------------------------- SAXS/WAXS arrays
    "q_saxs": ("nm⁻¹", "scattering vector of the SAXS curves"),
    "q_waxs": ("nm⁻¹", "scattering vector of the WAXS curves"),
    "saxs": (
        "",
        "SAXS intensity per point (pyFAI, solid-angle corrected counts, arbitrary "
        "scale), empty-cell background subtracted",
    ),
    "saxs_sigma": ("", "standard uncertainty of saxs (Poisson)"),
    "waxs": ("", "WAXS intensity per point (arbitrary scale), empty-cell background subtracted"),
    "waxs_sigma": ("", "standard uncertainty of waxs (Poisson)"),
    "waxs_norm": ("", "WAXS over the open-circuit reference of the same pixel, minus 1"),
    "li2s_map": ("", "Li2S signal (I/I_OCV - 1 over 18.3-20.8 nm⁻¹) per grid pixel (ny, nx)"),
    "saxs_map": ("", "SAXS change relative to open circuit (0.2-1 nm⁻¹) per grid pixel"),
    "li2s_size_nm": ("nm", "Li2S crystallite size (Scherrer)"),
    "waterfall_saxs": ("", "SAXS of the chosen pixel, one row per raster"),
    "waterfall_waxs": ("", "WAXS of the chosen pixel, one row per raster"),
    "waterfall_waxs_norm": ("", "WAXS over its open-circuit reference, one row per raster"),
    "li2s_maps": ("", "li2s_map of every operando raster (raster, ny, nx)"),
    "saxs_maps": ("", "saxs_map of every operando raster"),
    "li2s_size_maps": ("nm", "li2s_size_nm of every operando raster"),
    # ---------------------------------------------------------------- SAXS/WAXS points
    "seq_num": ("", "event number in the raw run"),
    "time": ("s", _CELL_TIME),
    "x": ("mm", "stage x (along the stack)"),
    "y": ("mm", "stage y (across the stack)"),
    "row": ("", "grid row (0 = first y of the raster)"),
    "col": ("", "grid column (0 = first x of the raster)"),
    "capacity": ("mAh", "capacity of the present half cycle"),
    "half_cycle": ("", "half cycle of the GCPL technique (0 = first discharge)"),
    "diode": ("", "transmission (beam-stop diode)"),
    "sodc": ("", "state of discharge: net discharged capacity over the first discharge's"),
    "li2s": ("", "Li2S signal (I/I_OCV - 1 over 18.3-20.8 nm⁻¹)"),
    "li2s_q111": ("nm⁻¹", "fitted Li2S (111) peak centre"),
    "raw_uid": ("", "raw run uid"),
    "raster_index": ("", "raster number in the experiment"),
    # ---------------------------------------------------------------- SAXS/WAXS rasters
    "time_start": ("s", "first point (cell time)"),
    "time_end": ("s", "last point (cell time)"),
    "time_mid": ("s", "mean point time (cell time)"),
    "capacity_mean": ("mAh", "mean capacity of the present half cycle"),
    "ewe_mean": ("V", "mean potential"),
    "sodc_mean": ("", "mean state of discharge"),
    "li2s_mean": ("", "mean Li2S signal"),
    "li2s_max": ("", "highest Li2S signal"),
    "li2s_size_max_nm": ("nm", "largest Li2S crystallite size"),
    "li2s_size_median_nm": ("nm", "median Li2S crystallite size"),
    "saxs_change_mean": ("", "mean SAXS change relative to open circuit"),
}

#: units a name's suffix says, for names not in UNITS (longest suffix first)
_SUFFIX_UNITS = (
    ("_ua_cm2", "µA/cm²"),
    ("_mpa", "MPa"),
    ("_mah", "mAh"),
    ("_um", "µm"),
    ("_mm", "mm"),
    ("_nm", "nm"),
    ("_s", "s"),
    ("_c", "C"),
    ("_v", "V"),
    ("_n", "N"),
    ("_a", "A"),
)

_NEXUS = {"µm": "um", "nm⁻¹": "1/nm", "µA/cm²": "uA/cm^2", "mAh": "mA*h", "°": "deg"}


def describe(name: str) -> tuple[str, str]:
    """``(unit, description)`` of a reduced array or column name.

    Unknown names get the unit their suffix says (``"_um"`` → ``"µm"``) and an
    empty description; anything else ``("", "")``.
    """
    if name in UNITS:
        return UNITS[name]
    low = name.lower()
    for suffix, unit in _SUFFIX_UNITS:
        if low.endswith(suffix):
            return unit, ""
    return "", ""


def nexus_units(unit: str) -> str | None:
    """The ASCII form of ``unit`` for a NeXus ``units`` attribute (None when dimensionless)."""
    if not unit:
        return None
    return _NEXUS.get(unit, unit.replace("µ", "u").replace("⁻¹", "^-1").replace("²", "^2"))


def column_metadata(columns: Iterable[str]) -> dict:
    """Metadata for a table node: ``{"units": {col: unit}, "descriptions": {col: text}}``
    (dimensionless columns have unit ``""``)."""
    cols = list(columns)
    return {
        "units": {c: describe(c)[0] for c in cols},
        "descriptions": {c: describe(c)[1] for c in cols},
    }


def array_metadata(name: str) -> dict:
    """Metadata for an array node: ``{"units": unit, "description": text}``."""
    unit, text = describe(name)
    return {"units": unit, "description": text}
