"""The SAXS/WAXS experiment across its rasters: :class:`ExperimentState`.

It takes each raster as it comes (background, OCV, operando), runs the stages
of :mod:`.pipeline` that apply and keeps what later rasters need (the empty
cell, the OCV reference, the state of discharge); its tables and the figures'
data are recomputed from all results, so live and offline agree. Method:
``docs/reduction-saxs.md``; written by :mod:`.store`.
"""

from __future__ import annotations

import logging
import math
import time as _time
from typing import Any

import numpy as np

from operando.constants import S_SPECIFIC_CAPACITY_MAH_G

from ..core import json_safe
from .model import (
    REDUCED_STEPS,
    REDUCTION_NAME,
    REDUCTION_VERSION,
    AlignmentScan,
    CellRecord,
    RasterData,
    RasterResult,
    ReductionParameters,
)
from .pipeline import (
    accumulate_background,
    background_curve,
    instrument_width,
    li2s_sizes,
    ocv_reference,
    relative_maps,
    state_of_discharge,
    subtract_empty_cell,
)
from .science.electrochemistry import net_capacity, sodc
from .science.maps import normalize_to_reference

__all__ = ["ExperimentState"]

logger = logging.getLogger(__name__)


class ExperimentState:
    """Everything reduced so far of one experiment's rasters (background, OCV,
    operando), each reduced as it comes (:meth:`add`).

    ``pixel``: (row, col) of the raster point whose curves make the waterfalls
    (default: the grid centre, ``(ny // 2, nx // 2)``).
    """

    def __init__(
        self,
        experiment_id: str,
        parameters: ReductionParameters | None = None,
        *,
        pixel: tuple[int, int] | None = None,
        mode: str = "live",
    ):
        self.experiment_id = experiment_id
        self.parameters = parameters or ReductionParameters()
        self.pixel = pixel
        self.mode = mode
        self.background: dict | None = None
        self._bg_frozen = False
        self._ref_frozen = False
        self._ocv: dict[tuple, list] = {}
        self._references: dict[tuple, dict] = {}
        self.results: dict[str, RasterResult] = {}
        self.instrument_fwhm: float | None = self.parameters.instrument_fwhm
        self.instrument_fwhm_source = "parameter" if self.instrument_fwhm is not None else ""
        self.q1_mah = math.nan
        self.sodc_final = False
        #: the alignment's transmission scans, in arrival order
        self.alignments: list[AlignmentScan] = []
        #: the cell recorded between rasters (cycling runs' ``cell`` streams), by uid
        self.cell_records: dict[str, CellRecord] = {}
        self.changed_sodc: list[str] = []
        #: incremented by every :meth:`add` that reduced something (for "changed since")
        self.version = 0

    # ------------------------------------------------------------------ input
    def add(self, raster: RasterData) -> RasterResult | None:
        """Reduce one raw run; returns its result (None for steps not reduced).
        Returns also, through :attr:`changed_sodc`, the uids of earlier rasters
        whose SODC changed (the first discharge ended)."""
        self.changed_sodc: list[str] = []
        if raster.step in REDUCED_STEPS:
            self.version += 1
        if raster.step == "background":
            result = self._add_background(raster)
            self.results[raster.uid] = result
            return result
        if raster.step not in ("ocv", "operando"):
            return None
        self._bg_frozen = True
        result = subtract_empty_cell(raster, self.background, self.parameters)
        if raster.step == "ocv" and not self._ref_frozen:
            self._ocv.setdefault(tuple(raster.shape), []).append(result)
            self._rebuild_reference(tuple(raster.shape))
        if raster.step == "operando":
            self._ref_frozen = True
            self._operando(result)
        self.results[raster.uid] = result
        self.changed_sodc = [u for u in self._update_sodc() if u != raster.uid]
        return result

    def add_cell_record(self, record: CellRecord) -> list[str]:
        """Keep a cycling run's cell record (a repeated uid replaces the old): it
        joins the time series and the half cycles' capacities (Q₁); returns the
        uids of the rasters whose SODC changed (also :attr:`changed_sodc`)."""
        self.cell_records[record.uid] = record
        self.version += 1
        self.changed_sodc = self._update_sodc()
        return self.changed_sodc

    def add_alignment(self, scan: AlignmentScan) -> None:
        """Keep an alignment scan for the figures (a repeated uid replaces the old)."""
        self.alignments = [a for a in self.alignments if a.uid != scan.uid] + [scan]
        self.version += 1

    def sulfur_mass_g(self) -> float:
        """The cathode's sulfur (g), from the 1C current the potentiostat publishes."""
        values = [
            r.raster.c_rate_current_a
            for r in self.results.values()
            if math.isfinite(r.raster.c_rate_current_a)
        ]
        if not values:
            return math.nan
        return float(np.median(values)) * 1000.0 / S_SPECIFIC_CAPACITY_MAH_G

    def raster_bounds(self) -> dict | None:
        """The area the rasters covered (mm): their points' extents widened by
        half a step, as the plan derives the grid from the alignment's bounds."""
        for r in self.rasters():
            ext, shape = r.raster.extents, r.raster.shape
            if not ext or len(ext) != 2:
                continue
            (y0, y1), (x0, x1) = ext
            ny, nx = shape
            dy = (y1 - y0) / (ny - 1) / 2 if ny > 1 else 0.0
            dx = (x1 - x0) / (nx - 1) / 2 if nx > 1 else 0.0
            return {
                "y": (min(y0, y1) - dy, max(y0, y1) + dy),
                "x": (min(x0, x1) - dx, max(x0, x1) + dx),
            }
        return None

    def _add_background(self, raster: RasterData) -> RasterResult:
        result = RasterResult(
            raster, raster.saxs, raster.saxs_sigma, raster.waxs, raster.waxs_sigma
        )
        result.sodc = np.full(raster.n, np.nan)
        if self._bg_frozen:
            logger.warning("background run %s after the first raster: not used", raster.uid)
            return result
        self.background = accumulate_background(self.background, raster)
        return result

    def background_curve(self, role: str):
        """(mean I, σ of the mean) of the empty cell, or None."""
        return background_curve(self.background, role)

    def _rebuild_reference(self, shape: tuple) -> None:
        ref = ocv_reference(self._ocv[shape])
        self._references[shape] = ref
        if self.parameters.instrument_fwhm is None and "waxs" in ref:
            self.instrument_fwhm, self.instrument_fwhm_source = instrument_width(ref)

    def reference(self, shape) -> dict | None:
        return self._references.get(tuple(shape))

    def _operando(self, res: RasterResult) -> None:
        r = res.raster
        shape = tuple(r.shape)
        if shape not in self._references:
            logger.warning(
                "no OCV reference for a %s grid: the first operando raster (%s) is the "
                "initial state",
                shape,
                r.uid,
            )
            self._ocv.setdefault(shape, []).append(res)
            self._rebuild_reference(shape)
        ref = self._references[shape]
        if relative_maps(res, ref, self.parameters):
            li2s_sizes(res, ref, self.parameters, self.instrument_fwhm)

    def _update_sodc(self) -> list[str]:
        reduced = [res for res in self.results.values() if res.raster.step in ("ocv", "operando")]
        out = state_of_discharge(reduced, list(self.cell_records.values()))
        if out is None:
            return []
        changed, self.q1_mah, self.sodc_final = out
        return changed

    # ------------------------------------------------------------------ output
    def rasters(self, steps=("ocv", "operando")) -> list[RasterResult]:
        """Results of the given steps in time order."""
        out = [r for r in self.results.values() if r.raster.step in steps]
        return sorted(
            out,
            key=lambda r: (
                np.nanmin(r.raster.time) if np.any(np.isfinite(r.raster.time)) else math.inf
            ),
        )

    def chosen_pixel(self) -> tuple[int, int] | None:
        rs = self.rasters()
        if self.pixel is not None:
            return tuple(self.pixel)
        if not rs:
            return None
        ny, nx = rs[-1].raster.shape
        return ny // 2, nx // 2

    def timeseries(self) -> dict[str, np.ndarray]:
        """Every raster point and every sample of the cell record, in time order
        (``step`` ``cycling`` for the samples; their grid columns NaN or -1)."""
        cols: dict[str, list] = {}
        for res in self.rasters():
            pts = res.points()
            pts["raw_uid"] = np.array([res.uid] * res.raster.n)
            pts["step"] = np.array([res.raster.step] * res.raster.n)
            ri = res.raster.raster_index
            pts["raster_index"] = np.full(res.raster.n, -1 if ri is None else int(ri), np.int64)
            for k, v in pts.items():
                cols.setdefault(k, []).append(v)
        if not cols:
            return {}
        records = list(self.cell_records.values())
        if records:
            h = np.concatenate([r.half_cycle for r in records])
            c = np.concatenate([r.capacity for r in records])
            everything = (
                np.concatenate(cols["half_cycle"] + [h]),
                np.concatenate(cols["capacity"] + [c]),
            )
            q_net, q1, final = net_capacity(*everything)
            cell_sodc = sodc(q_net, q1, final)[-len(h) :]
            k = 0
            for r in records:
                n = r.n
                values = {
                    "seq_num": np.asarray(r.seq_num, np.int64),
                    "time": r.time,
                    "ewe": r.ewe,
                    "current": r.current,
                    "capacity": r.capacity,
                    "half_cycle": r.half_cycle,
                    "sodc": cell_sodc[k : k + n],
                    "raw_uid": np.array([r.uid] * n),
                    "step": np.array(["cycling"] * n),
                }
                k += n
                for key, parts in cols.items():
                    if key in values:
                        parts.append(values[key])
                    elif parts[0].dtype.kind in "iu":
                        parts.append(np.full(n, -1, parts[0].dtype))
                    else:
                        parts.append(np.full(n, np.nan))
        out = {k: np.concatenate(v) for k, v in cols.items()}
        order = np.argsort(out["time"], kind="stable")
        return {k: v[order] for k, v in out.items()}

    def raster_table(self) -> dict[str, np.ndarray]:
        rows = []
        for res in self.rasters():
            r = res.raster

            def stat(fn, m):
                m = None if m is None else np.asarray(m, float)
                if m is None or not np.any(np.isfinite(m)):
                    return math.nan
                return float(fn(m[np.isfinite(m)]))

            rows.append(
                {
                    "raw_uid": r.uid,
                    "step": r.step,
                    "cycle": -1 if r.cycle is None else int(r.cycle),
                    "raster_index": -1 if r.raster_index is None else int(r.raster_index),
                    "time_start": stat(np.min, r.time),
                    "time_end": stat(np.max, r.time),
                    "time_mid": stat(np.mean, r.time),
                    "capacity_mean": stat(np.mean, r.capacity),
                    "ewe_mean": stat(np.mean, r.ewe),
                    "sodc_mean": stat(np.mean, res.sodc),
                    "li2s_mean": stat(np.mean, res.li2s_map),
                    "li2s_max": stat(np.max, res.li2s_map),
                    "li2s_size_max_nm": stat(np.max, res.li2s_size_map),
                    "li2s_size_median_nm": stat(np.median, res.li2s_size_map),
                    "saxs_change_mean": stat(np.mean, res.saxs_map),
                }
            )
        if not rows:
            return {}
        return {k: np.array([row[k] for row in rows]) for k in rows[0]}

    def figure_data(self) -> dict[str, Any]:
        """Everything the figures and the experiment container need."""
        rs = self.rasters()
        ops = [r for r in rs if r.raster.step == "operando"]
        pix = self.chosen_pixel()
        out: dict[str, Any] = {
            "pixel": pix,
            "timeseries": self.timeseries(),
            "rasters": self.raster_table(),
            "sulfur_mass_g": self.sulfur_mass_g(),
            "alignments": [
                {
                    "direction": a.direction,
                    "motor": a.motor,
                    "positions": a.positions,
                    "transmission": a.transmission,
                }
                for a in self.alignments
            ],
            "bounds": self.raster_bounds(),
        }
        for role in ("saxs", "waxs"):
            have = [r for r in rs if getattr(r, role) is not None]
            if not have or pix is None:
                continue
            out[f"q_{role}"] = getattr(have[0].raster, f"q_{role}")
            wf = []
            for r in have:
                g = (
                    r.raster.to_grid(getattr(r, role))
                    if tuple(r.raster.shape)[0] > pix[0] and r.raster.shape[1] > pix[1]
                    else None
                )
                wf.append(
                    g[pix[0] * r.raster.shape[1] + pix[1]]
                    if g is not None
                    else np.full(len(out[f"q_{role}"]), np.nan)
                )
            out[f"waterfall_{role}"] = np.array(wf)
            out[f"waterfall_{role}_time"] = np.array([_point_time(r, pix) for r in have])
            out[f"waterfall_{role}_rows"] = [_point_state(r, pix) for r in have]
            if role == "waxs":
                norm = []
                for r, curve in zip(have, wf):
                    ref = self.reference(r.raster.shape)
                    k = pix[0] * r.raster.shape[1] + pix[1]
                    ok = ref is not None and "waxs" in ref and k < len(ref["waxs"])
                    norm.append(
                        normalize_to_reference(curve, ref["waxs"][k])
                        if ok
                        else np.full(len(curve), np.nan)
                    )
                out["waterfall_waxs_norm"] = np.array(norm)
        shapes = {tuple(r.raster.shape) for r in ops}
        if ops and len(shapes) == 1:
            for name, attr in (
                ("li2s_maps", "li2s_map"),
                ("saxs_maps", "saxs_map"),
                ("li2s_size_maps", "li2s_size_map"),
            ):
                if all(getattr(r, attr) is not None for r in ops):
                    out[name] = np.array([getattr(r, attr) for r in ops])
            out["map_sodc"] = np.array([_nanmean(r.sodc) for r in ops])
            out["map_capacity"] = np.array([_nanmean(r.raster.capacity) for r in ops])
            out["map_time"] = np.array([_nanmean(r.raster.time) for r in ops])
            out["map_half_cycle"] = np.array([_nanmean(r.raster.half_cycle) for r in ops])
            out["map_uids"] = [r.uid for r in ops]
            r0 = ops[-1].raster
            out["map_extents"] = r0.extents
        return out

    def reduction_metadata(self) -> dict:
        return json_safe(
            {
                "name": REDUCTION_NAME,
                "version": REDUCTION_VERSION,
                "mode": self.mode,
                "reduced_at": _time.time(),
                "parameters": self.parameters.as_dict(),
                "instrument_fwhm_nm": self.instrument_fwhm,
                "instrument_fwhm_source": self.instrument_fwhm_source,
            }
        )

    def summary(self) -> dict:
        """Numbers for a report (per raster: SODC, Li2S signal and size)."""
        return json_safe(
            {
                "experiment_id": self.experiment_id,
                "runs": [
                    {
                        "uid": r.uid,
                        "step": r.raster.step,
                        "cycle": r.raster.cycle,
                        "raster_index": r.raster.raster_index,
                        "npoints": r.raster.n,
                    }
                    for r in self.results.values()
                ],
                "background_uids": (self.background or {}).get("uids", []),
                "q1_mah": self.q1_mah,
                "sodc_final": self.sodc_final,
                "instrument_fwhm_nm": self.instrument_fwhm,
                "rasters": {k: v.tolist() for k, v in self.raster_table().items()},
            }
        )


def _nanmean(v) -> float:
    v = np.asarray(v, float) if v is not None else np.array([np.nan])
    return float(np.mean(v[np.isfinite(v)])) if np.any(np.isfinite(v)) else math.nan


def _point_state(res: RasterResult, pix) -> dict:
    """Step, half cycle, capacity and SODC of the raster at grid point ``pix``."""
    rows, cols = res.raster.grid()
    hit = np.where((rows == pix[0]) & (cols == pix[1]))[0]
    k = int(hit[0]) if hit.size else None

    def at(values):
        if values is None or k is None:
            return math.nan
        v = np.asarray(values, float).reshape(-1)
        return float(v[k]) if k < v.size else math.nan

    return {
        "step": res.raster.step,
        "half_cycle": at(res.raster.half_cycle),
        "capacity": at(res.raster.capacity),
        "sodc": at(res.sodc),
        "x": at(res.raster.x),
        "y": at(res.raster.y),
    }


def _point_time(res: RasterResult, pix) -> float:
    rows, cols = res.raster.grid()
    hit = np.where((rows == pix[0]) & (cols == pix[1]))[0]
    if hit.size:
        return float(res.raster.time[hit[0]])
    return _nanmean(res.raster.time)
