"""Figures of the SAXS/WAXS experiment: pure functions, arrays in, PNG out.

Headless and thread-safe (a ``matplotlib.figure.Figure`` each, no pyplot state),
so the live reducer draws from its worker thread; each returns the path written.
:func:`experiment_figures` draws them all from ``ExperimentState.figure_data()``.
Which figure of the source paper each one reproduces: ``docs/reduction-saxs.md``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from operando.constants import HOUR

from ..core.store import save_png

__all__ = [
    "FIGURES",
    "voltage_capacity",
    "alignment",
    "iq_lines",
    "waterfalls",
    "li2s_maps",
    "li2s_size_series",
    "experiment_figures",
]

_DPI = 110

#: every figure of the SAXS/WAXS experiment: file stem → what it shows
FIGURES = {
    "voltage_capacity": "potential against the capacity of each half cycle, in mAh and "
    "in mAh per g of sulfur",
    "alignment": "the alignment's vertical and horizontal transmission scans with the "
    "layers found and the bounds the rasters used",
    "iq_lines": "SAXS and WAXS I(q) of the waterfall point at selected states of "
    "discharge, the half cycle named",
    "waterfall": "SAXS and WAXS I(q) of one raster point (position in mm) against cell "
    "time, beside the potential",
    "li2s_maps": "maps of the relative Li2S signal per raster, titled by half cycle and "
    "state of discharge",
    "saxs_maps": "maps of the relative SAXS change per raster, titled by half cycle and "
    "state of discharge",
    "li2s_size": "Li2S crystallite size (max and median over the map) and the mean Li2S "
    "signal against cell time",
}


def half_cycle_name(half_cycle) -> str:
    """ "discharge 1", "charge 1", ... of a half-cycle index (0: the first discharge)."""
    try:
        h = int(round(float(half_cycle)))
    except (TypeError, ValueError, OverflowError):
        return "?"
    if h < 0:
        return "OCV"
    return f"{'discharge' if h % 2 == 0 else 'charge'} {h // 2 + 1}"


def _save(fig: Figure, path) -> str:
    return save_png(fig, path, dpi=_DPI)


def _edges(v: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (for pcolormesh); works for one centre."""
    v = np.asarray(v, float)
    if v.size == 1:
        d = abs(v[0]) * 0.05 or 1.0
        return np.array([v[0] - d, v[0] + d])
    mid = 0.5 * (v[1:] + v[:-1])
    return np.concatenate(([v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]))


def voltage_capacity(
    capacity, ewe, half_cycle, path, *, sulfur_mass_g: float | None = None, title: str = ""
) -> str:
    """Ewe (V) against the capacity of the present half cycle (mAh; mAh/g S on the
    top axis when the sulfur mass is known), one line per half cycle:
    discharges blue, charges red."""
    cap = np.asarray(capacity, float)
    v = np.asarray(ewe, float)
    h = np.asarray(half_cycle, float)
    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ok = np.isfinite(cap) & np.isfinite(v) & np.isfinite(h)
    for hh in np.unique(h[ok]).astype(int):
        sel = ok & (h == hh)
        order = np.argsort(cap[sel], kind="stable")
        color = "tab:blue" if hh % 2 == 0 else "tab:red"
        ax.plot(
            cap[sel][order], v[sel][order], ".-", color=color, ms=2, lw=1, label=half_cycle_name(hh)
        )
    ax.set_xlabel("capacity (mAh)")
    ax.set_ylabel("Ewe (V vs Li–In)")
    if sulfur_mass_g is not None and math.isfinite(sulfur_mass_g) and sulfur_mass_g > 0:
        per_g = 1.0 / sulfur_mass_g
        top = ax.secondary_xaxis("top", functions=(lambda c: c * per_g, lambda q: q / per_g))
        top.set_xlabel(f"specific capacity (mAh/g S; {1000 * sulfur_mass_g:.3f} mg S)")
    ax.set_title(title or "potential vs capacity", fontsize=10)
    if ok.any():
        ax.legend(fontsize=8)
    return _save(fig, path)


def alignment(scans, bounds, path, *, title: str = "") -> str:
    """The alignment's transmission scans (diode against stage y, then x), with
    the layers' boundaries the vertical scan found (dotted) and the bounds the
    rasters used shaded."""
    scans = list(scans)
    fig = Figure(figsize=(4.0 * max(1, len(scans)) + 0.5, 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(scans))))
    for ax, scan in zip(axes, scans):
        pos = np.asarray(scan["positions"], float)
        tr = np.asarray(scan["transmission"], float)
        order = np.argsort(pos)
        ax.plot(pos[order], tr[order], ".-", ms=3, lw=1, color="k")
        axis = "y" if str(scan.get("motor", "")).endswith("y") else "x"
        if bounds and axis in bounds:
            lo, hi = bounds[axis]
            ax.axvspan(lo, hi, color="C1", alpha=0.25, lw=0, label=f"raster {lo:.2f}–{hi:.2f} mm")
            ax.legend(fontsize=8)
        if axis == "y" and tr.size > 2:
            jumps = np.abs(np.diff(tr[order]))
            big = np.flatnonzero(jumps > 0.15 * max(np.ptp(tr), 1e-12))
            for i in big:
                ax.axvline(0.5 * (pos[order][i] + pos[order][i + 1]), color="0.5", ls=":", lw=0.8)
        ax.set_xlabel(f"stage {axis} (mm)")
        ax.set_ylabel("diode transmission")
        ax.set_title(f"{scan.get('direction') or axis} scan", fontsize=9)
    fig.suptitle(title or "alignment", fontsize=10)
    return _save(fig, path)


def iq_lines(q_saxs, saxs, q_waxs, waxs, rows, path, *, max_lines: int = 7, title: str = "") -> str:
    """I(q) of one raster point at up to ``max_lines`` states, evenly chosen over
    the rasters (the first and the last always in): SAXS log–log, WAXS linear,
    each line labelled with its half cycle and state of discharge."""
    panels = [p for p in (("SAXS", q_saxs, saxs), ("WAXS", q_waxs, waxs)) if p[2] is not None]
    n = max(len(np.asarray(p[2])) for p in panels) if panels else 0
    idx = np.unique(np.round(np.linspace(0, n - 1, min(n, max_lines))).astype(int)) if n else []
    fig = Figure(figsize=(5.0 * max(1, len(panels)) + 0.5, 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(panels))))
    cmap = colormaps["viridis"]
    for ax, (role, q, curves) in zip(axes, panels):
        curves = np.asarray(curves, float)
        q = np.asarray(q, float)
        for j, k in enumerate(idx):
            if k >= len(curves):
                continue
            color = cmap(j / max(len(idx) - 1, 1))
            label = _state_label(rows[k]) if k < len(rows) else str(k)
            ok = np.isfinite(curves[k]) & np.isfinite(q)
            if role == "SAXS":
                ok &= (curves[k] > 0) & (q > 0)
            ax.plot(q[ok], curves[k][ok], lw=1, color=color, label=label)
        if role == "SAXS":
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("q (nm⁻¹)")
        ax.set_ylabel("I (background subtracted)")
        ax.set_title(role, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title or "I(q) at selected states of discharge", fontsize=10)
    return _save(fig, path)


def _state_label(row: dict) -> str:
    if row.get("step") == "ocv":
        return "OCV"
    name = half_cycle_name(row.get("half_cycle"))
    sodc = row.get("sodc", math.nan)
    if sodc is not None and math.isfinite(sodc):
        return f"{name}, SODC {100 * sodc:.0f} %"
    cap = row.get("capacity", math.nan)
    return f"{name}, {cap:.3f} mAh" if cap is not None and math.isfinite(cap) else name


def _heatmap(ax, q, t_h, curves, *, log_q: bool, log_i: bool, label: str):
    z = np.asarray(curves, float)
    order = np.argsort(t_h, kind="stable")
    t = np.asarray(t_h, float)[order]
    z = z[order]
    if log_i:
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(z > 0, np.log10(z), np.nan)
    q = np.asarray(q, float)
    good = np.isfinite(q)
    if log_q:
        good &= q > 0
    zz = z[:, good]
    fin = zz[np.isfinite(zz)]
    lims = (np.percentile(fin, 0.5), np.percentile(fin, 99.5)) if fin.size else (None, None)
    mesh = ax.pcolormesh(
        _edges(q[good]), _edges(t), zz, shading="flat", cmap="viridis", vmin=lims[0], vmax=lims[1]
    )
    if log_q:
        ax.set_xscale("log")
    ax.set_xlabel("q (nm⁻¹)")
    ax.set_title(label, fontsize=9)
    return mesh


def waterfalls(
    time_s,
    q_saxs,
    saxs,
    q_waxs,
    waxs,
    path,
    *,
    ewe_time_s=None,
    ewe=None,
    pixel=None,
    position_mm=None,
    waxs_norm=None,
    title: str = "",
) -> str:
    """SAXS and WAXS I(q) of one raster point against cell time (hours, upwards),
    beside the potential.  ``saxs``/``waxs``: (n_times, nq); either may be None.
    ``position_mm`` (x, y) names the point; else ``pixel`` (row, col) does.
    With ``waxs_norm`` (I/I_OCV, same shape) the WAXS panel shows it (linear),
    where Li2S stands out, instead of log I."""
    t_h = np.asarray(time_s, float) / HOUR
    panels = [p for p in (("saxs", q_saxs, saxs), ("waxs", q_waxs, waxs)) if p[2] is not None]
    fig = Figure(figsize=(4 + 3.6 * len(panels), 4.5), layout="constrained")
    widths = [1.0] + [2.2] * len(panels)
    axes = fig.subplots(1, 1 + len(panels), sharey=True, gridspec_kw={"width_ratios": widths})
    axes = np.atleast_1d(axes)
    ax0 = axes[0]
    if ewe is not None and ewe_time_s is not None:
        et = np.asarray(ewe_time_s, float) / HOUR
        order = np.argsort(et)
        ax0.plot(np.asarray(ewe, float)[order], et[order], ".-", ms=2, lw=1, color="k")
    ax0.set_xlabel("Ewe (V)")
    ax0.set_ylabel("cell time (h)")
    if position_mm is not None and all(math.isfinite(float(v)) for v in position_mm):
        where = f" at x = {float(position_mm[0]):.2f} mm, y = {float(position_mm[1]):.2f} mm"
    elif pixel is not None:
        where = f", grid point {tuple(int(p) for p in pixel)}"
    else:
        where = ""
    for ax, (role, q, curves) in zip(axes[1:], panels):
        if role == "waxs" and waxs_norm is not None:
            mesh = _heatmap(
                ax, q, t_h, waxs_norm, log_q=False, log_i=False, label=f"WAXS I/I_OCV{where}"
            )
        else:
            mesh = _heatmap(
                ax,
                q,
                t_h,
                curves,
                log_q=(role == "saxs"),
                log_i=True,
                label=f"{role.upper()} log10 I{where}",
            )
        fig.colorbar(mesh, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def li2s_maps(
    maps,
    labels,
    path,
    *,
    extents=None,
    title: str = "",
    max_panels: int = 8,
    label_name: str = "relative Li2S (18.3–20.8 nm⁻¹)",
) -> str:
    """A row of maps (n, ny, nx) on one colour scale, each titled by ``labels[k]``
    (e.g. "SODC 45 %"); at most ``max_panels``, evenly chosen, the last always in.
    ``extents`` [[y0, y1], [x0, x1]] (mm) labels the axes; row 0 at the bottom."""
    m = np.asarray(maps, float)
    if m.ndim == 2:
        m = m[None]
    n = m.shape[0]
    idx = np.unique(np.round(np.linspace(0, n - 1, min(n, max_panels))).astype(int))
    fig = Figure(figsize=(1.2 + 2.3 * len(idx), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(idx), sharey=True))
    finite = m[np.isfinite(m)]
    vmin, vmax = (
        (0.0, 1.0) if finite.size == 0 else (min(0.0, float(finite.min())), float(finite.max()))
    )
    if vmax <= vmin:
        vmax = vmin + 1e-6
    kw = {}
    if extents is not None:
        (y0, y1), (x0, x1) = extents
        ny, nx = m.shape[1:]
        dx = (x1 - x0) / max(nx - 1, 1) / 2 if nx > 1 else 0.5
        dy = (y1 - y0) / max(ny - 1, 1) / 2 if ny > 1 else 0.05
        kw["extent"] = (x0 - dx, x1 + dx, y0 - dy, y1 + dy)
    im = None
    for ax, k in zip(axes, idx):
        im = ax.imshow(
            m[k],
            origin="lower",
            aspect="auto",
            vmin=vmin,
            vmax=vmax,
            cmap="magma",
            interpolation="nearest",
            **kw,
        )
        ax.set_title(str(labels[k]), fontsize=9)
        ax.set_xlabel("x (mm)" if extents is not None else "column")
    axes[0].set_ylabel("y (mm)" if extents is not None else "row")
    fig.colorbar(im, ax=list(axes), shrink=0.85, label=label_name)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def li2s_size_series(
    time_s, size_max_nm, size_median_nm, li2s_mean, path, *, sodc=None, title: str = ""
) -> str:
    """Li2S crystallite size (max and median over the map) and the mean relative
    Li2S signal against cell time (h); SODC (%) annotated when given."""
    t = np.asarray(time_s, float) / HOUR
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax, ax2 = fig.subplots(2, 1, sharex=True)
    ax.plot(t, size_max_nm, "o-", ms=3, label="max")
    ax.plot(t, size_median_nm, "s--", ms=3, label="median")
    ax.set_ylabel("Li2S size (nm)")
    ax.legend(fontsize=8)
    ax2.plot(t, li2s_mean, "o-", ms=3, color="tab:purple")
    ax2.set_ylabel("mean relative Li2S")
    ax2.set_xlabel("cell time (h)")
    if sodc is not None:
        for tt, s in zip(t, np.asarray(sodc, float)):
            if math.isfinite(s) and math.isfinite(tt):
                ax2.annotate(
                    f"{100 * s:.0f}%",
                    (tt, 0),
                    textcoords="offset points",
                    xytext=(0, 2),
                    fontsize=6,
                    ha="center",
                    xycoords=("data", "axes fraction"),
                )
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _sodc_label(sodc, capacity, half_cycle) -> str:
    name = half_cycle_name(half_cycle) if math.isfinite(half_cycle) else "?"
    if math.isfinite(sodc):
        return f"{name}\nSODC {100 * sodc:.0f} %"
    return f"{name}\n{capacity:.3f} mAh" if math.isfinite(capacity) else name


def _position_mm(data: dict):
    rows = data.get("waterfall_waxs_rows") or data.get("waterfall_saxs_rows") or []
    xs = [r.get("x", math.nan) for r in rows]
    ys = [r.get("y", math.nan) for r in rows]
    if not rows or not np.isfinite(xs).any():
        return None
    return float(np.nanmedian(xs)), float(np.nanmedian(ys))


def experiment_figures(data: dict, directory, *, title: str = "") -> list[str]:
    """Write every figure of an experiment the data allow (:data:`FIGURES`) from
    ``data`` (as ``ExperimentState.figure_data()`` returns it) into ``directory``."""
    d = Path(directory)
    out = []
    ts = data.get("timeseries") or {}
    if ts:
        out.append(
            voltage_capacity(
                ts["capacity"],
                ts["ewe"],
                ts["half_cycle"],
                d / "voltage_capacity.png",
                sulfur_mass_g=data.get("sulfur_mass_g"),
                title=title,
            )
        )
    if data.get("alignments"):
        out.append(
            alignment(
                data["alignments"],
                data.get("bounds"),
                d / "alignment.png",
                title=f"{title}: alignment",
            )
        )
    if "waterfall_saxs" in data or "waterfall_waxs" in data:
        t = data.get("waterfall_waxs_time", data.get("waterfall_saxs_time"))
        position = _position_mm(data)
        out.append(
            waterfalls(
                t,
                data.get("q_saxs"),
                data.get("waterfall_saxs"),
                data.get("q_waxs"),
                data.get("waterfall_waxs"),
                d / "waterfall.png",
                ewe_time_s=ts.get("time"),
                ewe=ts.get("ewe"),
                pixel=data.get("pixel"),
                position_mm=position,
                waxs_norm=data.get("waterfall_waxs_norm"),
                title=title,
            )
        )
        rows = data.get("waterfall_waxs_rows") or data.get("waterfall_saxs_rows") or []
        where = (
            f" at x = {position[0]:.2f}, y = {position[1]:.2f} mm" if position is not None else ""
        )
        out.append(
            iq_lines(
                data.get("q_saxs"),
                data.get("waterfall_saxs"),
                data.get("q_waxs"),
                data.get("waterfall_waxs"),
                rows,
                d / "iq_lines.png",
                title=f"{title}: I(q){where}",
            )
        )
    if "li2s_maps" in data:
        labels = [
            _sodc_label(s, c, h)
            for s, c, h in zip(data["map_sodc"], data["map_capacity"], data["map_half_cycle"])
        ]
        out.append(
            li2s_maps(
                data["li2s_maps"],
                labels,
                d / "li2s_maps.png",
                extents=data.get("map_extents"),
                title=title,
            )
        )
        if "saxs_maps" in data:
            out.append(
                li2s_maps(
                    data["saxs_maps"],
                    labels,
                    d / "saxs_maps.png",
                    extents=data.get("map_extents"),
                    title=title,
                    label_name="relative SAXS change",
                )
            )
        r = data.get("rasters") or {}
        op = np.asarray(r.get("step", [])) == "operando"
        if op.any():
            out.append(
                li2s_size_series(
                    r["time_mid"][op],
                    r["li2s_size_max_nm"][op],
                    r["li2s_size_median_nm"][op],
                    r["li2s_mean"][op],
                    d / "li2s_size.png",
                    sodc=r["sodc_mean"][op],
                    title=title,
                )
            )
    return out
