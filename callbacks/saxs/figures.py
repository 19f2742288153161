"""Figures of the SAXS/WAXS experiment: pure functions, arrays in, PNG out.

Headless and thread-safe (a ``matplotlib.figure.Figure`` each, no pyplot state),
so the live reducer draws from its worker thread; each returns the path written.
:func:`experiment_figures` draws them all from ``ExperimentState.figure_data()``.
Which figure of the source paper each one reproduces: ``docs/reduction-saxs.md``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from operando.constants import HOUR

__all__ = ["voltage_capacity", "waterfalls", "li2s_maps", "li2s_size_series", "experiment_figures"]

_DPI = 110


def _save(fig: Figure, path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=_DPI)
    os.replace(tmp, path)  # readers never see half a file
    return str(path)


def _edges(v: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (for pcolormesh); works for one centre."""
    v = np.asarray(v, float)
    if v.size == 1:
        d = abs(v[0]) * 0.05 or 1.0
        return np.array([v[0] - d, v[0] + d])
    mid = 0.5 * (v[1:] + v[:-1])
    return np.concatenate(([v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]))


def voltage_capacity(capacity, ewe, half_cycle, path, *, title: str = "") -> str:
    """Ewe (V) against the capacity of the present half cycle (mAh), one line per
    half cycle: discharges (even) blue, charges (odd) red."""
    cap = np.asarray(capacity, float)
    v = np.asarray(ewe, float)
    h = np.asarray(half_cycle, float)
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ok = np.isfinite(cap) & np.isfinite(v) & np.isfinite(h)
    for hh in np.unique(h[ok]).astype(int):
        sel = ok & (h == hh)
        order = np.argsort(cap[sel], kind="stable")
        color = "tab:blue" if hh % 2 == 0 else "tab:red"
        label = f"{'discharge' if hh % 2 == 0 else 'charge'} {hh // 2 + 1}"
        ax.plot(cap[sel][order], v[sel][order], ".-", color=color, ms=3, lw=1, label=label)
    ax.set_xlabel("capacity (mAh)")
    ax.set_ylabel("Ewe (V vs Li–In)")
    ax.set_title(title or "potential vs capacity")
    if ok.any():
        ax.legend(fontsize=8)
    return _save(fig, path)


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
    waxs_norm=None,
    title: str = "",
) -> str:
    """SAXS and WAXS I(q) of one raster point against cell time (hours, upwards),
    beside the potential.  ``saxs``/``waxs``: (n_times, nq); either may be None.
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
    where = "" if pixel is None else f", pixel {tuple(pixel)}"
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
    if math.isfinite(sodc):
        return f"SODC {100 * sodc:.0f} %"
    phase = "dis" if not math.isfinite(half_cycle) or int(half_cycle) % 2 == 0 else "ch"
    return f"{phase} {capacity:.3f} mAh" if math.isfinite(capacity) else "?"


def experiment_figures(data: dict, directory, *, title: str = "") -> list[str]:
    """Write every figure of an experiment from ``data`` (arrays, as
    ``ExperimentState.figure_data()`` returns them) into ``directory``:
    ``voltage_capacity.png``, ``waterfall.png``, ``li2s_maps.png``,
    ``li2s_size.png`` (the last two once operando maps exist)."""
    d = Path(directory)
    out = []
    ts = data.get("timeseries") or {}
    if ts:
        out.append(
            voltage_capacity(
                ts["capacity"], ts["ewe"], ts["half_cycle"], d / "voltage_capacity.png", title=title
            )
        )
    if "waterfall_saxs" in data or "waterfall_waxs" in data:
        t = data.get("waterfall_waxs_time", data.get("waterfall_saxs_time"))
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
                waxs_norm=data.get("waterfall_waxs_norm"),
                title=title,
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
