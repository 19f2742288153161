"""The XCT results in Tiled: ``reduced/<raw uid>`` per run, ``reduced/<experiment id>``.

:func:`write_run` (a scan or a plating run) and :func:`write_experiment` replace
what is there (delete and write anew) and mark the node complete last;
:func:`read_run` reads a run's results back (a reduction worker resuming). The layout, node by node:
``docs/reduction-xct.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..core import (
    json_safe,
    mark_complete,
    replace_container,
    write_array,
    write_figures,
    write_table,
)
from .experiment import ExperimentState
from .model import LAYER_LENGTHS, LAYER_ROWS, RUN_TECHNIQUE, PlatingResult, ScanResult

__all__ = ["UNITS", "write_scan", "write_plating", "write_run", "write_experiment", "read_run"]


UNITS = {
    "lengths": "µm",
    "positions": "detector rows (0 = top of the image)",
    "t": "s (cell clock)",
    "force": "N",
    "ewe": "V",
    "current": "A",
    "charge": "C",
    "pressure": "MPa",
    "volume": "attenuation per voxel (mu * voxel size)",
    "particles": "µm: x, y from the rotation axis (mirror image of the cell, y -> -y), "
    "z above the bottom Cu face, r equivalent-sphere radius",
}


def _base_metadata(res, state: ExperimentState) -> dict:
    return {
        "raw_uid": res.uid,
        "experiment_id": res.experiment_id,
        "step": res.step,
        "cycle": res.cycle,
        "technique": RUN_TECHNIQUE,
        "kind": res.kind,
        "postmortem_scan": res.start.get("postmortem_scan"),
        "detector": res.detector,
        "reduction": state.reduction_metadata(),
        "units": UNITS,
        "timings_s": res.timings,
    }


def _columns_table(cols: dict) -> Any:
    import pandas as pd

    return pd.DataFrame({k: np.asarray(v) for k, v in cols.items()})


def _rows_table(rows: list[dict]) -> Any:
    import pandas as pd

    return pd.DataFrame(
        [
            {k: (json_safe(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()}
            for r in rows
        ]
    )


def write_scan(
    reduced, res: ScanResult, state: ExperimentState, *, volume: np.ndarray | None = None
):
    """Write (replace) ``reduced/<raw uid>`` of a scan; returns the container."""
    md = _base_metadata(res, state)
    md.update(
        {
            "center": res.center,
            "row0": res.row0,
            "pixel_um": res.pixel_um,
            "n_projections": res.n_projections,
            "t_start": res.t_start,
            "t_mid": res.t_mid,
            "t_end": res.t_end,
            "layers": {k: res.layers.get(k) for k in LAYER_ROWS},
            "projection_layers": {
                k: res.projection_layers.get(k) for k in LAYER_LENGTHS + LAYER_ROWS
            },
            "electrode": res.electrode,
            "n_particles": int(len(res.particles)),
            "z_reference": res.z_reference,
            "diameter_um": res.electrode.get("diameter_um"),
        }
    )
    for k in LAYER_LENGTHS:
        md[k] = res.layers.get(k)
    node = replace_container(reduced, res.uid, md)
    vol = volume if volume is not None else res.volume
    if vol is not None:
        import dask.array as da

        per = max(
            1, min(vol.shape[0], int(state.parameters.volume_chunk_bytes // max(1, vol[0].nbytes)))
        )
        write_array(
            node,
            da.from_array(np.ascontiguousarray(vol, dtype=np.float32), chunks=(per, -1, -1)),
            key="volume",
            dims=["row", "y", "x"],
            metadata=json_safe(
                {
                    "row0": res.row0,
                    "pixel_um": res.pixel_um,
                    "axis_voxel": vol.shape[-1] // 2,
                    "center_column": res.center,
                }
            ),
        )
    if res.profile is not None:
        write_array(
            node,
            np.asarray(res.profile, float),
            key="profile",
            dims=["row"],
            metadata={"row0": res.row0},
        )
    write_array(
        node,
        np.asarray(res.particles, float).reshape(-1, 4),
        key="particles",
        dims=["particle", "column"],
        metadata=json_safe(
            {
                "columns": ["x_um", "y_um", "z_um", "r_um"],
                "to_voxels": "x_vox = x_um / pixel_um + axis_voxel; "
                "y_vox = y_um / pixel_um + axis_voxel; "
                "volume row = (cu_bottom - row0) - z_um / pixel_um",
                "axis_voxel": (vol.shape[-1] // 2) if vol is not None else None,
                "cu_bottom": res.layers.get("cu_bottom"),
                "row0": res.row0,
                "pixel_um": res.pixel_um,
            }
        ),
    )
    mark_complete(node)
    return node


def write_plating(reduced, res: PlatingResult, state: ExperimentState):
    """Write (replace) ``reduced/<raw uid>`` of a plating run; returns the container."""
    md = _base_metadata(res, state)
    md.update(
        {
            "current_density_uA_cm2": res.current_density_uA_cm2,
            "current_A": res.current_a,
            "electrode_diameter_mm": res.electrode_diameter_mm,
            "duration_s": res.duration_s,
            "t_technique_start": res.t_technique_start,
            "t_technique_end": res.t_technique_end,
            "charge_c": res.charge_c,
            "plated_um": res.plated_um,
            "shorted": res.shorted,
            "short": res.short,
            "reason": res.reason,
            "pixel_um": res.pixel_um,
            "n_radiograms": int(len(res.radiograms.get("t", []))),
        }
    )
    node = replace_container(reduced, res.uid, md)
    if len(res.radiograms.get("t", [])):
        write_table(node, _columns_table(res.radiograms), key="radiograms")
    if len(res.cell.get("t", [])):
        write_table(node, _columns_table(res.cell), key="cell")
    mark_complete(node)
    return node


def write_run(reduced, res, state: ExperimentState, **kwargs):
    """Write (replace) ``reduced/<raw uid>`` of a scan or a plating run."""
    if isinstance(res, ScanResult):
        return write_scan(reduced, res, state, **kwargs)
    return write_plating(reduced, res, state)


def write_experiment(reduced, state: ExperimentState, *, figures: Iterable[str] = ()):
    """Write (replace) ``reduced/<experiment_id>``; returns the container."""
    figures = list(figures)
    d_mm, source = state.diameter()
    tr = state.tracking()
    md = {
        "experiment_id": state.experiment_id,
        "technique": RUN_TECHNIQUE,
        "kind": "experiment",
        "runs": [
            {"uid": r.uid, "kind": r.kind, "step": r.step, "cycle": r.cycle}
            for r in state.ordered()
        ],
        "diameter_mm": d_mm,
        "diameter_source": source,
        "failure": state.failure(),
        "tracking": tr["summary"],
        "tracking_pairs": tr["pairs"],
        "figures": [Path(f).stem for f in figures],
        "reduction": state.reduction_metadata(),
        "units": UNITS,
    }
    node = replace_container(reduced, state.experiment_id or "unnamed", md)

    def write(data, *, key):
        return write_table(node, data, key=key)

    ser = state.series()
    if ser["t"].size:
        write(_columns_table(ser), key="timeseries")
    cycles = state.cycle_table()
    if cycles:
        write(_rows_table(cycles), key="cycles")
    scans = state.scan_table()
    if scans:
        write(_rows_table(scans), key="scans")
    rg = state.radiogram_table()
    if rg:
        write(_columns_table(rg), key="radiograms")
    if tr["rows"]:
        write(_rows_table(tr["rows"]), key="displacements")
    if tr["trajectories"].size:
        write_array(
            node,
            np.asarray(tr["trajectories"], float),
            key="trajectories",
            dims=["track", "scan", "column"],
            metadata=json_safe({"columns": ["x_um", "y_um", "z_um", "r_um"], "scans": tr["scans"]}),
        )
    if figures:
        from .figures import FIGURES

        write_figures(node, figures, FIGURES)
    mark_complete(node)
    return node


# --------------------------------------------------------------------------------------
# reading back
# --------------------------------------------------------------------------------------


def _nan(value):
    """JSON's null back to NaN (:func:`json_safe` wrote NaN as null), recursively."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _nan(v) for k, v in value.items()}
    return value


def _table(node, key: str, columns) -> dict[str, np.ndarray]:
    if key not in node:
        return {k: np.zeros(0) for k in columns}
    df = node[key].read()
    return {c: df[c].to_numpy() for c in df.columns}


def read_run(node, raw_run):
    """The :class:`ScanResult` or :class:`PlatingResult` of a complete
    ``reduced/<raw uid>`` (``node``) and its raw run (start, stop, cell stream),
    as :mod:`.experiment` needs it; a scan's volume stays on the server (the
    figures' sections are read from it, a few slices)."""
    from .offline import load_run
    from .pipeline import _sections, cell_columns

    md = dict(node.metadata)
    start = dict(raw_run.metadata["start"])
    stop = dict(raw_run.metadata.get("stop") or {})
    common = dict(
        uid=md["raw_uid"],
        experiment_id=md.get("experiment_id") or "",
        cycle=md.get("cycle"),
        start=start,
        stop=stop,
        detector=dict(md.get("detector") or {}),
        pixel_um=float(md["pixel_um"]),
    )
    if md.get("kind") == "plating":
        layer_cols = ("t", *LAYER_LENGTHS, *LAYER_ROWS)
        cell_cols = ("t", "force", "ewe", "current", "charge", "elapsed")
        return PlatingResult(
            **common,
            current_density_uA_cm2=_nan(md.get("current_density_uA_cm2")),
            current_a=_nan(md.get("current_A")),
            electrode_diameter_mm=_nan(md.get("electrode_diameter_mm")),
            duration_s=_nan(md.get("duration_s")),
            radiograms=_table(node, "radiograms", layer_cols),
            cell=_table(node, "cell", cell_cols),
            t_technique_start=_nan(md.get("t_technique_start")),
            t_technique_end=_nan(md.get("t_technique_end")),
            charge_c=_nan(md.get("charge_c")),
            plated_um=_nan(md.get("plated_um")),
            shorted=bool(md.get("shorted")),
            short=dict(md.get("short") or {}),
            reason=str(md.get("reason") or ""),
            timings=dict(md.get("timings_s") or {}),
        )
    layers = {k: v for k, v in _nan(dict(md.get("layers") or {})).items()}
    for k in LAYER_LENGTHS:
        layers[k] = _nan(md.get(k))
    row0 = int(md.get("row0") or 0)
    res = ScanResult(
        **common,
        step=md.get("step") or start.get("step", ""),
        n_projections=int(md.get("n_projections") or 0),
        t_start=_nan(md.get("t_start")),
        t_end=_nan(md.get("t_end")),
        t_mid=_nan(md.get("t_mid")),
        row0=row0,
        center=_nan(md.get("center")),
        profile=np.asarray(node["profile"].read()) if "profile" in node else None,
        layers=layers,
        projection_layers=_nan(dict(md.get("projection_layers") or {})),
        electrode=_nan(dict(md.get("electrode") or {})),
        particles=np.asarray(node["particles"].read(), float).reshape(-1, 4)
        if "particles" in node
        else np.zeros((0, 4)),
        z_reference=md.get("z_reference") or "bottom Cu face",
        cell=cell_columns(load_run(raw_run), ("cell",)),
        timings=dict(md.get("timings_s") or {}),
        parameters=dict((md.get("reduction") or {}).get("parameters") or {}),
    )
    if "volume" in node:
        rows = {k: layers[k] - row0 for k in LAYER_ROWS if k in layers}
        res.sections = _sections(node["volume"], rows)
    return res
