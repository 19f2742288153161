"""The XCT experiment across its runs: :class:`ExperimentState`.

Time series of force, potential, charge, plated Li and pressure; one row per
plating cycle (force rise, spring height change, contact-area loss); particle
tracks across the operando scans; the failure. What each number means:
``docs/reduction-xct.md``; written by :mod:`.store`.
"""

from __future__ import annotations

import math
import time as _time
from typing import Any

import numpy as np

from ..core import json_safe
from ..core.arrays import ArraysOnDisk
from .model import (
    LAYER_LENGTHS,
    REDUCTION_NAME,
    REDUCTION_VERSION,
    PlatingResult,
    ReductionParameters,
    ScanResult,
)
from .science import cell as cellmod
from .science.particles import match_particles

__all__ = ["ExperimentState"]


class ExperimentState:
    """Everything reduced so far of one experiment.

    ``add`` takes :class:`ScanResult` and :class:`PlatingResult` in any order
    (a result of the same uid replaces the earlier one); every table is
    recomputed from them, so live (run by run) and offline (all at once) agree.
    ``keep_volumes=False`` drops each volume once added (the figures use the
    ``sections``). ``arrays_dir``: where the arrays only the figures read (a
    scan's ``sections``, a plating's radiogram ``thumbnails``) are kept once
    added, on disk (:class:`~operando.callbacks.core.arrays.ArraysOnDisk`), so
    that a live reduction of many cycles does not grow by them; None keeps them
    in memory.
    """

    def __init__(
        self,
        experiment_id: str,
        parameters: ReductionParameters | None = None,
        *,
        mode: str = "live",
        keep_volumes: bool = False,
        arrays_dir=None,
    ):
        self.experiment_id = experiment_id
        self.parameters = parameters or ReductionParameters()
        self.mode = mode
        self.keep_volumes = keep_volumes
        self.arrays_dir = arrays_dir
        self.results: dict[str, ScanResult | PlatingResult] = {}

    # -- collection ----------------------------------------------------------------------
    def add(self, result) -> None:
        if result is None:
            return
        if isinstance(result, ScanResult) and not self.keep_volumes:
            result.volume = None
        if self.arrays_dir is not None:
            if isinstance(result, ScanResult) and not isinstance(result.sections, ArraysOnDisk):
                result.sections = ArraysOnDisk(
                    result.sections, self.arrays_dir, f"{result.uid}.sections"
                )
            if isinstance(result, PlatingResult) and not isinstance(
                result.thumbnails, ArraysOnDisk
            ):
                result.thumbnails = ArraysOnDisk(
                    result.thumbnails, self.arrays_dir, f"{result.uid}.thumbnails"
                )
        self.results[result.uid] = result

    def _t(self, r) -> float:
        t = r.t_start if isinstance(r, ScanResult) else r.t_technique_start
        if not np.isfinite(t):
            t = (
                float(np.nanmin(r.cell["t"]))
                if r.cell.get("t") is not None and len(r.cell["t"])
                else math.inf
            )
        return t

    def ordered(self) -> list:
        return sorted(self.results.values(), key=lambda r: (self._t(r), r.uid))

    @property
    def scans(self) -> list[ScanResult]:
        return [r for r in self.ordered() if isinstance(r, ScanResult)]

    @property
    def operando_scans(self) -> list[ScanResult]:
        return [r for r in self.scans if r.step == "scan3d"]

    @property
    def platings(self) -> list[PlatingResult]:
        return [r for r in self.ordered() if isinstance(r, PlatingResult)]

    # -- diameter and pressure ---------------------------------------------------------
    def diameter(self) -> tuple[float, str]:
        """(mm, source) of the electrode diameter for the pressure: the latest
        measured one (post-mortem overview first), else the nominal."""
        measured = [
            s
            for s in self.scans
            if s.electrode.get("measurable")
            and np.isfinite(s.electrode.get("diameter_um", math.nan))
        ]
        if measured:
            pm = [s for s in measured if s.step == "postmortem"]
            s = (pm or measured)[-1]
            return s.electrode["diameter_um"] / 1000.0, f"measured ({s.step} {s.uid})"
        return self.parameters.nominal_diameter_mm, "nominal"

    # -- series --------------------------------------------------------------------------
    def series(self) -> dict[str, np.ndarray]:
        """The experiment's cell series (every run), time-sorted."""
        parts = []
        offset = 0.0
        plating_end: list[tuple[float, float]] = []  # (t_end, cumulative charge after)
        for k, r in enumerate(self.ordered()):
            c = r.cell
            if c.get("t") is None or len(c["t"]) == 0:
                continue
            t = np.asarray(c["t"], float)
            cum = np.empty(t.size)
            plating = np.zeros(t.size)
            if isinstance(r, PlatingResult):
                q = np.nan_to_num(np.asarray(c["charge"], float))
                t_on = r.t_technique_start if np.isfinite(r.t_technique_start) else -np.inf
                inside = t >= t_on - 1e-3
                cum[:] = offset + np.where(inside, q, 0.0)
                i = np.nan_to_num(np.asarray(c["current"], float))
                plating[:] = (np.abs(i) > 0).astype(float)
                total = (
                    r.charge_c
                    if np.isfinite(r.charge_c)
                    else (float(q[inside][-1]) if inside.any() else 0.0)
                )
                offset += total
                plating_end.append((r.t_technique_end, offset))
            else:
                cum[:] = offset
            parts.append(
                {
                    "t": t,
                    "force": np.asarray(c["force"], float),
                    "ewe": np.asarray(c["ewe"], float),
                    "current": np.asarray(c["current"], float),
                    "charge_cum": cum,
                    "cycle": np.full(t.size, -1.0 if r.cycle is None else float(r.cycle)),
                    "run": np.full(t.size, float(k)),
                    "plating": plating,
                }
            )
        keys = ("t", "force", "ewe", "current", "charge_cum", "cycle", "run", "plating")
        if not parts:
            out = {k: np.zeros(0) for k in keys}
        else:
            out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
            order = np.argsort(out["t"], kind="stable")
            out = {k: v[order] for k, v in out.items()}
        area = cellmod.electrode_area_cm2(self._faraday_diameter())
        out["plated_um"] = (
            np.asarray(cellmod.plated_thickness_um(out["charge_cum"], area), float)
            if out["t"].size
            else np.zeros(0)
        )
        d_mm, _ = self.diameter()
        out["pressure_nominal_mpa"] = (
            np.asarray(
                cellmod.pressure_mpa(out["force"], self.parameters.nominal_diameter_mm), float
            )
            if out["t"].size
            else np.zeros(0)
        )
        out["pressure_mpa"] = (
            np.asarray(cellmod.pressure_mpa(out["force"], d_mm), float)
            if out["t"].size
            else np.zeros(0)
        )
        return out

    def _faraday_diameter(self) -> float:
        ds = [
            p.electrode_diameter_mm for p in self.platings if np.isfinite(p.electrode_diameter_mm)
        ]
        return float(ds[0]) if ds else self.parameters.nominal_diameter_mm

    # -- cycles --------------------------------------------------------------------------
    def cycle_table(self) -> list[dict]:
        """One row per plating run (columns: ``docs/reduction-xct.md``)."""
        rows = []
        d_mm, _ = self.diameter()
        for p in self.platings:
            c = p.cell
            t0, t1 = p.window
            row = {
                "cycle": -1 if p.cycle is None else int(p.cycle),
                "uid": p.uid,
                "current_density_uA_cm2": p.current_density_uA_cm2,
                "t_start": t0,
                "t_end": t1,
                "duration_s": t1 - t0 if np.isfinite(t0) and np.isfinite(t1) else math.nan,
                "charge_c": p.charge_c,
                "plated_um": p.plated_um,
                "shorted": bool(p.shorted),
            }
            peaks = None
            if np.isfinite(t0) and np.isfinite(t1) and len(c["t"]):
                peaks = cellmod.cycle_peaks(c["t"], c["force"], c["ewe"], [(t0, t1)])[0]
            for key in (
                "force_start",
                "force_peak",
                "force_peak_time",
                "force_rise",
                "potential_peak",
                "potential_peak_time",
            ):
                row[key] = peaks[key] if peaks else math.nan
            sel = (
                np.flatnonzero((c["t"] <= t1 + 1e-6) & np.isfinite(c["force"]))
                if len(c["t"])
                else []
            )
            row["force_end"] = float(c["force"][sel[-1]]) if len(sel) else math.nan
            rise = row["force_rise"]
            h = (
                cellmod.height_change_um(max(rise, 0.0), self.parameters.spring_n_per_mm)
                if np.isfinite(rise)
                else math.nan
            )
            row["height_change_um"] = h
            if np.isfinite(h) and np.isfinite(p.plated_um) and p.plated_um > 0:
                row["contact_area_loss"] = cellmod.contact_area_loss(h, p.plated_um)
                row["contact_area_loss_whole"] = cellmod.contact_area_loss(
                    h, p.plated_um, whole_factor=True
                )
                row["current_factor"] = h / p.plated_um
            else:
                row["contact_area_loss"] = row["contact_area_loss_whole"] = math.nan
                row["current_factor"] = math.nan
            for key in ("force_start", "force_peak"):
                f = row[key]
                row[key.replace("force", "pressure_nominal") + "_mpa"] = (
                    cellmod.pressure_mpa(f, self.parameters.nominal_diameter_mm)
                    if np.isfinite(f)
                    else math.nan
                )
                row[key.replace("force", "pressure") + "_mpa"] = (
                    cellmod.pressure_mpa(f, d_mm) if np.isfinite(f) else math.nan
                )
            rg = p.radiograms
            for key in ("cu_to_cu_um", "top_li_um"):
                v = np.asarray(rg.get(key, []), float)
                v = v[np.isfinite(v)]
                row[f"{key}_first"] = float(v[0]) if v.size else math.nan
                row[f"{key}_last"] = float(v[-1]) if v.size else math.nan
                row[f"{key}_change"] = float(v[-1] - v[0]) if v.size else math.nan
            rows.append(row)
        return rows

    # -- particles -----------------------------------------------------------------------
    def tracking(self) -> dict:
        """Particle matches of consecutive operando scans, chained into tracks."""
        scans = [s for s in self.operando_scans if len(s.particles)]
        out: dict[str, Any] = {
            "scans": [s.uid for s in scans],
            "pairs": [],
            "rows": [],
            "trajectories": np.zeros((0, len(scans), 4)),
        }
        if len(scans) < 2:
            out["summary"] = {"n_scans": len(scans)}
            return out
        tracks: list[list] = [
            [k] + [None] * (len(scans) - 1) for k in range(len(scans[0].particles))
        ]
        open_tracks = {k: t for k, t in enumerate(tracks)}  # particle index in scan j -> track
        rows = []
        for j in range(1, len(scans)):
            a, b = scans[j - 1], scans[j]
            if abs(a.pixel_um - b.pixel_um) > 0.01 * a.pixel_um:
                open_tracks = {}
                new = {}
                for k in range(len(b.particles)):
                    tr = [None] * len(scans)
                    tr[j] = k
                    tracks.append(tr)
                    new[k] = tr
                open_tracks = new
                continue
            pairs, disp, radial = match_particles(
                a.particles,
                b.particles,
                self.parameters.match_max_voxels * max(a.pixel_um, b.pixel_um),
                center=(0.0, 0.0),
            )
            summary = {
                "from": a.uid,
                "to": b.uid,
                "cycle_from": a.cycle,
                "cycle_to": b.cycle,
                "n_from": len(a.particles),
                "n_to": len(b.particles),
                "matched": len(pairs),
                "mean_radial_um": float(np.mean(radial)) if len(radial) else math.nan,
                "median_displacement_um": float(np.median(np.linalg.norm(disp, axis=1)))
                if len(disp)
                else math.nan,
                "fraction_outward": float(np.mean(radial > 0)) if len(radial) else math.nan,
            }
            out["pairs"].append(summary)
            for (ia, _), d, rad in zip(pairs, disp, radial):
                pa = a.particles[ia]
                rows.append(
                    {
                        "scan_from": j - 1,
                        "scan_to": j,
                        "uid_from": a.uid,
                        "uid_to": b.uid,
                        "cycle_from": -1 if a.cycle is None else a.cycle,
                        "cycle_to": -1 if b.cycle is None else b.cycle,
                        "x_um": pa[0],
                        "y_um": pa[1],
                        "z_um": pa[2],
                        "r_um": pa[3],
                        "dx_um": d[0],
                        "dy_um": d[1],
                        "dz_um": d[2],
                        "radial_um": rad,
                    }
                )
            new = {}
            for ia, ib in pairs:
                tr = open_tracks.get(int(ia))
                if tr is None:
                    tr = [None] * len(scans)
                    tr[j - 1] = int(ia)
                    tracks.append(tr)
                tr[j] = int(ib)
                new[int(ib)] = tr
            for k in range(len(b.particles)):
                if k not in new:
                    tr = [None] * len(scans)
                    tr[j] = k
                    tracks.append(tr)
                    new[k] = tr
            open_tracks = new
        traj = np.full((len(tracks), len(scans), 4), np.nan)
        for n, tr in enumerate(tracks):
            for j, k in enumerate(tr):
                if k is not None:
                    traj[n, j] = scans[j].particles[k]
        out["rows"] = rows
        out["trajectories"] = traj
        both = np.all(np.isfinite(traj[:, [0, -1], 0]), axis=1)
        first, last = traj[both, 0], traj[both, -1]
        disp = last[:, :3] - first[:, :3]
        rvec = first[:, :2]
        norm = np.linalg.norm(rvec, axis=1)
        unit = np.divide(rvec, norm[:, None], out=np.zeros_like(rvec), where=norm[:, None] > 0)
        radial = np.sum(disp[:, :2] * unit, axis=1)
        out["summary"] = {
            "n_scans": len(scans),
            "first": scans[0].uid,
            "last": scans[-1].uid,
            "n_first": len(scans[0].particles),
            "tracked_first_to_last": int(both.sum()),
            "fraction_tracked": float(both.sum() / max(1, len(scans[0].particles))),
            "mean_radial_um": float(np.mean(radial)) if radial.size else math.nan,
            "median_displacement_um": float(np.median(np.linalg.norm(disp, axis=1)))
            if radial.size
            else math.nan,
            "fraction_outward": float(np.mean(radial > 0)) if radial.size else math.nan,
        }
        return out

    # -- failure -------------------------------------------------------------------------
    def failure(self) -> dict:
        """The first short circuit and the peaks of the cycle before it."""
        cycles = self.cycle_table()
        shorted = [(n, p) for n, p in enumerate(self.platings) if p.shorted]
        out: dict[str, Any] = {"shorted": bool(shorted)}
        if not shorted:
            return out
        n, p = shorted[0]
        out.update(
            {
                "uid": p.uid,
                "cycle": p.cycle,
                "t_short": p.short.get("t"),
                "method": p.short.get("method"),
                "bounds": p.short.get("bounds"),
                "reason": p.reason,
                "previous": None,
                "previous_force_rise_is_highest": None,
                "previous_potential_is_highest": None,
            }
        )
        if n >= 1:
            before = cycles[:n]
            prev = before[-1]
            out["previous"] = {
                k: prev[k]
                for k in (
                    "cycle",
                    "uid",
                    "force_start",
                    "force_peak",
                    "force_rise",
                    "potential_peak",
                    "height_change_um",
                    "contact_area_loss",
                )
            }
            rises = [c["force_rise"] for c in before if np.isfinite(c["force_rise"])]
            peaks = [c["potential_peak"] for c in before if np.isfinite(c["potential_peak"])]
            if rises and np.isfinite(prev["force_rise"]):
                out["previous_force_rise_is_highest"] = bool(prev["force_rise"] >= max(rises))
            if peaks and np.isfinite(prev["potential_peak"]):
                out["previous_potential_is_highest"] = bool(prev["potential_peak"] >= max(peaks))
        return out

    # -- tables --------------------------------------------------------------------------
    def scan_table(self) -> list[dict]:
        rows = []
        for s in self.scans:
            row = {
                "uid": s.uid,
                "step": s.step,
                "cycle": -1 if s.cycle is None else s.cycle,
                "postmortem_scan": s.postmortem_scan or "",
                "t_start": s.t_start,
                "t_mid": s.t_mid,
                "t_end": s.t_end,
                "pixel_um": s.pixel_um,
                "center": s.center,
                "n_particles": len(s.particles),
                "diameter_um": s.electrode.get("diameter_um", math.nan),
                "core_diameter_um": s.electrode.get("core_diameter_um", math.nan),
            }
            for k in LAYER_LENGTHS:
                row[k] = s.layers.get(k, math.nan)
            rows.append(row)
        return rows

    def radiogram_table(self) -> dict[str, np.ndarray]:
        parts = []
        for p in self.platings:
            rg = p.radiograms
            n = len(rg.get("t", []))
            if not n:
                continue
            part = {
                "t": np.asarray(rg["t"], float),
                "cycle": np.full(n, -1.0 if p.cycle is None else float(p.cycle)),
            }
            for k in LAYER_LENGTHS:
                part[k] = np.asarray(rg[k], float)
            parts.append(part)
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def reduction_metadata(self) -> dict:
        return json_safe(
            {
                "name": REDUCTION_NAME,
                "version": REDUCTION_VERSION,
                "mode": self.mode,
                "reduced_at": _time.time(),
                "parameters": self.parameters.as_dict(),
            }
        )

    def figure_data(self) -> dict:
        """What :mod:`~operando.callbacks.xct.figures` draws."""
        scans = []
        for s in self.scans:
            scans.append(
                {
                    "uid": s.uid,
                    "step": s.step,
                    "cycle": s.cycle,
                    "postmortem_scan": s.postmortem_scan,
                    "pixel_um": s.pixel_um,
                    "row0": s.row0,
                    "layers": s.layers,
                    "sections": s.sections,
                    "electrode": s.electrode,
                    "t_mid": s.t_mid,
                    "particles": s.particles,
                }
            )
        d_mm, source = self.diameter()
        return {
            "experiment_id": self.experiment_id,
            "series": self.series(),
            "cycles": self.cycle_table(),
            "failure": self.failure(),
            "scans": scans,
            "tracking": self.tracking(),
            "radiograms": self.radiogram_table(),
            "platings": [
                {
                    "uid": p.uid,
                    "cycle": p.cycle,
                    "pixel_um": p.pixel_um,
                    "current_density_uA_cm2": p.current_density_uA_cm2,
                    "thumbnails": p.thumbnails,
                    "shorted": p.shorted,
                }
                for p in self.platings
                if len(p.thumbnails.get("t", []))
            ],
            "diameter_mm": d_mm,
            "diameter_source": source,
        }

    def summary(self) -> dict:
        """Numbers for a report."""
        ser = self.series()
        d_mm, source = self.diameter()
        first = {}
        if ser["t"].size:
            ok = np.flatnonzero(np.isfinite(ser["force"]))
            if ok.size:
                first = {
                    "t": ser["t"][ok[0]],
                    "force_n": ser["force"][ok[0]],
                    "pressure_nominal_mpa": ser["pressure_nominal_mpa"][ok[0]],
                }
        tr = self.tracking()
        return json_safe(
            {
                "experiment_id": self.experiment_id,
                "runs": [
                    {"uid": r.uid, "kind": r.kind, "step": r.step, "cycle": r.cycle}
                    for r in self.ordered()
                ],
                "scans": self.scan_table(),
                "cycles": self.cycle_table(),
                "initial": first,
                "plated_um_total": float(ser["plated_um"][-1]) if ser["t"].size else None,
                "diameter_mm": d_mm,
                "diameter_source": source,
                "tracking": tr["summary"],
                "tracking_pairs": tr["pairs"],
                "failure": self.failure(),
            }
        )
