"""The SAXS/WAXS results in Tiled: ``reduced/<raw uid>`` per raster,
``reduced/<experiment id>``.

:func:`write_run` and :func:`write_experiment` replace what is there (delete and
write anew, the node marked complete last); :func:`update_points` rewrites a run's ``points`` once its SODC is
final. The layout, node by node: ``docs/reduction-saxs.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

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
from .model import RUN_TECHNIQUE, RasterResult

__all__ = ["UNITS", "write_run", "update_points", "write_experiment"]

logger = logging.getLogger(__name__)


UNITS = {
    "q": "nm^-1",
    "saxs": "counts/sr (pyFAI, solid-angle corrected)",
    "time": "s (cell clock)",
    "ewe": "V",
    "current": "A",
    "capacity": "mAh (present half cycle)",
    "x": "mm",
    "y": "mm",
    "li2s": "relative (I/I_OCV - 1, 18.3-20.8 nm^-1)",
    "saxs_map": "relative to OCV (0.2-1 nm^-1)",
    "li2s_size_nm": "nm",
    "sodc": "fraction of the first discharge capacity",
}


def _run_metadata(res: RasterResult, exp: ExperimentState) -> dict:
    r = res.raster
    return json_safe(
        {
            "raw_uid": r.uid,
            "experiment_id": r.experiment_id,
            "step": r.step,
            "cycle": r.cycle,
            "raster_index": r.raster_index,
            "technique": r.technique,
            "shape": list(r.shape),
            "extents": r.extents,
            "npoints": r.n,
            "curves": "as measured"
            if r.step == "background"
            else "empty-cell background subtracted",
            "background_uid": res.background_uid,
            "reference_uids": res.reference_uids,
            "sodc_final": exp.sodc_final,
            "q1_mah": exp.q1_mah,
            "reduction": exp.reduction_metadata(),
            "units": UNITS,
        }
    )


def write_run(reduced, res: RasterResult, exp: ExperimentState):
    """Write (replace) ``reduced/<raw uid>``; returns the container client."""
    r = res.raster
    node = replace_container(reduced, r.uid, _run_metadata(res, exp))
    for role in ("saxs", "waxs"):
        if getattr(res, role) is None:
            continue
        write_array(node, np.asarray(getattr(r, f"q_{role}"), float), key=f"q_{role}", dims=["q"])
        write_array(node, np.asarray(getattr(res, role), float), key=role, dims=["point", "q"])
        write_array(
            node,
            np.asarray(getattr(res, f"{role}_sigma"), float),
            key=f"{role}_sigma",
            dims=["point", "q"],
        )
    if r.step == "operando":
        if res.waxs_norm is not None:
            write_array(
                node, np.asarray(res.waxs_norm, float), key="waxs_norm", dims=["point", "q"]
            )
        for key, m in (
            ("li2s_map", res.li2s_map),
            ("saxs_map", res.saxs_map),
            ("li2s_size_nm", res.li2s_size_map),
        ):
            if m is not None:
                write_array(node, np.asarray(m, float), key=key, dims=["row", "col"])
    write_table(node, res.points(), key="points")
    mark_complete(node)
    return node


def update_points(reduced, res: RasterResult, exp: ExperimentState) -> None:
    """Rewrite the ``points`` table (same columns) and the SODC metadata of a
    run already written (live: the first discharge has ended)."""
    node = reduced[res.uid]
    node["points"].write(res.points())
    node.update_metadata(metadata={"sodc_final": exp.sodc_final, "q1_mah": json_safe(exp.q1_mah)})


def write_experiment(reduced, exp: ExperimentState, *, figures: Iterable[str] = ()):
    """Write (replace) ``reduced/<experiment_id>``; returns the container client
    (None, with nothing written, for an empty experiment id)."""
    if not exp.experiment_id:
        logger.warning("runs without an experiment_id: no experiment container written")
        return None
    figures = list(figures)
    data = exp.figure_data()
    md = json_safe(
        {
            "experiment_id": exp.experiment_id,
            "technique": RUN_TECHNIQUE,
            "kind": "experiment",
            "runs": [
                {
                    "uid": r.uid,
                    "step": r.raster.step,
                    "cycle": r.raster.cycle,
                    "raster_index": r.raster.raster_index,
                }
                for r in exp.results.values()
            ],
            "background_uids": (exp.background or {}).get("uids", []),
            "q1_mah": exp.q1_mah,
            "sodc_final": exp.sodc_final,
            "pixel": data.get("pixel"),
            "map_uids": data.get("map_uids", []),
            "reduction": exp.reduction_metadata(),
            "figures": [Path(f).stem for f in figures],
            "units": UNITS,
        }
    )
    node = replace_container(reduced, exp.experiment_id, md)
    if data["timeseries"]:
        write_table(node, data["timeseries"], key="timeseries")
    if data["rasters"]:
        write_table(node, data["rasters"], key="rasters")
    for role in ("saxs", "waxs"):
        if f"q_{role}" in data:
            write_array(node, np.asarray(data[f"q_{role}"], float), key=f"q_{role}", dims=["q"])
            keys = [f"waterfall_{role}"] + (["waterfall_waxs_norm"] if role == "waxs" else [])
            for key in keys:
                write_array(
                    node,
                    np.asarray(data[key], float),
                    key=key,
                    dims=["raster", "q"],
                    metadata=json_safe(
                        {"pixel": data["pixel"], "time": data[f"waterfall_{role}_time"]}
                    ),
                )
    for key in ("li2s_maps", "saxs_maps", "li2s_size_maps"):
        if key in data:
            write_array(
                node,
                np.asarray(data[key], float),
                key=key,
                dims=["raster", "row", "col"],
                metadata=json_safe(
                    {"sodc": data["map_sodc"], "time": data["map_time"], "uids": data["map_uids"]}
                ),
            )
    if figures:
        from .figures import FIGURES

        write_figures(node, figures, FIGURES)
    mark_complete(node)
    return node
