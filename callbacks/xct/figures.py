"""Figures of the XCT experiment: pure functions, arrays in, PNG out.

Headless and thread-safe (a ``matplotlib.figure.Figure`` each, no pyplot state),
so the live reducer draws from its worker thread; each returns the path written.
:func:`experiment_figures` draws them all from ``ExperimentState.figure_data()``.
Which figure of the source paper each one reproduces: ``docs/reduction-xct.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from operando.constants import HOUR

from ..core.store import save_png

__all__ = [
    "FIGURES",
    "timeseries",
    "layers_vs_cycle",
    "radiogram_sequence",
    "cross_sections",
    "trajectories",
    "postmortem_overview",
    "select_scans",
    "experiment_figures",
]

_DPI = 110
#: the rows of a radiogram's layers drawn on it
LAYER_FACES = ("cu_top", "cu_bottom", "li_hse_top")

#: every figure of the XCT experiment: file stem → what it shows (README, Tiled metadata)
FIGURES = {
    "timeseries": "force and nominal stack pressure, plated Li and potential against cell "
    "time, plating steps shaded and numbered, the short marked",
    "layers_vs_cycle": "Cu-to-Cu and top-Li thickness against the plating cycle, from the "
    "3D scans, the radiograms and the post-mortem scan",
    "radiogram_sequence": "the radiograms of one plating, first to last, with the Cu faces "
    "and the top of the Li found in each",
    "sections_particles": "vertical sections through the axis at equal aspect (max over "
    "±2 voxels), segmented ceramic particles circled, scale and colour bars",
    "sections_layers": "vertical sections at equal aspect with the Cu-to-Cu and top-Li "
    "thicknesses marked, scale and colour bars",
    "trajectories": "ceramic particles from the first to the last operando scan: top view "
    "with displacement arrows and radial displacement against radius",
    "postmortem": "post-mortem section and the Li footprint on the top Cu with the "
    "measured electrode diameters",
}


def _save(fig: Figure, path) -> str:
    return save_png(fig, path, dpi=_DPI)


def _finite(*arrays):
    ok = np.ones(np.asarray(arrays[0]).shape, bool)
    for a in arrays:
        ok &= np.isfinite(np.asarray(a, float))
    return ok


def _scale_bar(ax, width_um: float, color: str = "white") -> None:
    """A scale bar of a round length, about a fifth of ``width_um``, lower right."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    if not np.isfinite(width_um) or width_um <= 0:
        return
    target = width_um / 5.0
    mag = 10 ** math.floor(math.log10(target))
    length = max(m * mag for m in (1, 2, 5) if m * mag <= target)
    label = f"{length / 1000:g} mm" if length >= 1000 else f"{length:g} µm"
    ax.add_artist(
        AnchoredSizeBar(
            ax.transData,
            length,
            label,
            "lower right",
            color=color,
            frameon=False,
            size_vertical=0,
            fontproperties={"size": 7},
        )
    )


# --------------------------------------------------------------------------------------
# Fig. 6c
# --------------------------------------------------------------------------------------


def timeseries(
    series: dict, cycles: Sequence[dict], path, *, failure: dict | None = None, title: str = ""
) -> str:
    """Force (N, with the nominal stack pressure in MPa on the right axis), plated
    Li (µm) and potential (V) against cell time (h), the plating steps shaded and
    numbered by cycle, the OCV rests between them white.

    ``series``: ``t``, ``force``, ``plated_um``, ``ewe``, optionally
    ``pressure_nominal_mpa`` (arrays); ``cycles``: rows with ``t_start``,
    ``t_end``, ``cycle``; ``failure``: ``t_short`` marked in red.
    """
    t = np.asarray(series.get("t", []), float) / HOUR
    fig = Figure(figsize=(8.0, 6.5), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    panels = (
        ("force", "force (N)", "C0"),
        ("plated_um", "plated Li (µm)", "C2"),
        ("ewe", "potential (V)", "C3"),
    )
    for ax, (key, label, color) in zip(axes, panels):
        v = np.asarray(series.get(key, np.full(t.shape, np.nan)), float)
        ok = _finite(t, v)
        if key == "ewe":
            ax.plot(t[ok], v[ok], ".-", ms=2, lw=0.8, color=color)
        else:
            ax.plot(t[ok], v[ok], "-", lw=1.0, color=color)
        ax.set_ylabel(label)
        for c in cycles:
            t0, t1 = c.get("t_start"), c.get("t_end")
            if t0 is not None and t1 is not None and np.isfinite(t0) and np.isfinite(t1):
                ax.axvspan(t0 / HOUR, t1 / HOUR, color="C1", alpha=0.12, lw=0)
        if failure and failure.get("t_short") is not None:
            ax.axvline(failure["t_short"] / HOUR, color="red", lw=1.2)
    force = np.asarray(series.get("force", np.full(t.shape, np.nan)), float)
    pressure = np.asarray(series.get("pressure_nominal_mpa", np.full(t.shape, np.nan)), float)
    ok = _finite(force, pressure) & (np.abs(force) > 0)
    if ok.any():
        # pressure is proportional to force: a second scale on the same axis
        mpa_per_n = float(np.median(pressure[ok] / force[ok]))
        sec = axes[0].secondary_yaxis(
            "right", functions=(lambda f: f * mpa_per_n, lambda p: p / mpa_per_n)
        )
        sec.set_ylabel("nominal pressure (MPa)")
    for c in cycles:
        t0, t1 = c.get("t_start"), c.get("t_end")
        if t0 is not None and t1 is not None and np.isfinite(t0) and np.isfinite(t1):
            axes[0].text(
                0.5 * (t0 + t1) / HOUR,
                1.0,
                str(c.get("cycle", "")),
                ha="center",
                va="bottom",
                fontsize=8,
                transform=axes[0].get_xaxis_transform(),
            )
    if failure and failure.get("t_short") is not None:
        axes[2].text(
            failure["t_short"] / HOUR,
            0.95,
            " short",
            color="red",
            va="top",
            fontsize=8,
            transform=axes[2].get_xaxis_transform(),
        )
    axes[-1].set_xlabel("cell time (h)")
    fig.suptitle(title or "force, plated Li and potential (plating shaded, cycle numbers on top)")
    return _save(fig, path)


def layers_vs_cycle(scans: Sequence[dict], radiograms: dict, path, *, title: str = "") -> str:
    """Cu-to-Cu and top-Li thickness (µm) against the plating cycle: from the 3D
    scans (the scan of cycle k + 1, after plating k, drawn at k; the first at 0)
    and from the radiograms of plating k, spread from k − 1 (its first) to k
    (its last); the post-mortem scan half a cycle after the last."""
    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    keys = (("cu_to_cu_um", "Cu-to-Cu (µm)"), ("top_li_um", "top Li (µm)"))
    rg = radiograms or {}
    rg_cycle = np.asarray(rg.get("cycle", []), float)
    for ax, (key, label) in zip(axes, keys):
        if rg_cycle.size and key in rg:
            v = np.asarray(rg[key], float)
            x = np.full(rg_cycle.size, np.nan)
            for c in np.unique(rg_cycle[rg_cycle >= 0]):
                sel = np.flatnonzero(rg_cycle == c)
                x[sel] = c - 1 + np.linspace(0.0, 1.0, sel.size) if sel.size > 1 else c
            ok = _finite(x, v)
            ax.plot(x[ok], v[ok], ".", ms=3, color="0.55", label="radiograms (during plating)")
        ops = [s for s in scans if s.get("step") == "scan3d" and s.get("cycle") is not None]
        xs = np.array([float(s["cycle"]) - 1 for s in ops])
        vs = np.array([float(s.get("layers", {}).get(key, math.nan)) for s in ops])
        ok = _finite(xs, vs) if xs.size else np.zeros(0, bool)
        ax.plot(
            xs[ok], vs[ok], "o-", color="C0" if key == "cu_to_cu_um" else "C2", label="3D scans"
        )
        pm = [s for s in scans if s.get("step") == "postmortem"]
        if pm and xs.size:
            v = float(pm[-1].get("layers", {}).get(key, math.nan))
            if math.isfinite(v):
                ax.plot([np.nanmax(xs) + 0.5], [v], "s", color="C3", label="post-mortem")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel("plating cycle (0: before the first plating)")
    fig.suptitle(title or "layer thicknesses against cycle")
    return _save(fig, path)


def radiogram_sequence(plating: dict, path, *, title: str = "") -> str:
    """A plating's radiograms (transmission, reduced in size), first to last, one
    above the other at equal aspect, cropped to the stack between the Cu faces
    (orange) with the top of the Li (green) found in each; heights from the bottom Cu."""
    th = plating["thumbnails"]
    imgs = np.asarray(th["images"], float)
    n, h, w = imgs.shape
    factor = float(th.get("factor", 1))
    pix_full = float(plating.get("pixel_um", 1.0))
    pix = pix_full * factor
    rows = {k: np.asarray(th.get(k, np.full(n, np.nan)), float) / factor for k in LAYER_FACES}
    top, bottom = np.nanmin(rows["cu_top"]), np.nanmax(rows["cu_bottom"])
    if np.isfinite(top) and np.isfinite(bottom) and bottom > top:
        margin = 0.6 * (bottom - top)
        r0, r1 = max(0, int(top - margin)), min(h, int(math.ceil(bottom + margin)) + 1)
        z_ref = bottom
    else:
        r0, r1, z_ref = 0, h, h
    crop = imgs[:, r0:r1]
    x_mm = w * pix / 1000.0
    extent = [0, x_mm, (z_ref - r1) * pix, (z_ref - r0) * pix]
    aspect_h = (r1 - r0) / max(w, 1)
    fig = Figure(figsize=(8.0, 1.0 + n * (6.5 * aspect_h + 0.45)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n, 1, sharex=True))
    lo, hi = np.nanpercentile(crop, [1, 99.5])
    im = None
    t = np.asarray(th["t"], float)
    for k, ax in enumerate(axes):
        im = ax.imshow(crop[k], cmap="gray", vmin=lo, vmax=hi, extent=extent, aspect="auto")
        for key, color in (("cu_top", "C1"), ("cu_bottom", "C1"), ("li_hse_top", "C2")):
            r = rows[key][k]
            if np.isfinite(r):
                ax.axhline((z_ref - r) * pix, color=color, lw=0.8)
        dt = (t[k] - t[0]) / HOUR if np.isfinite(t[k]) and np.isfinite(t[0]) else math.nan
        ax.set_title(f"+{dt:.2f} h", fontsize=8, loc="left")
        ax.set_ylabel("z (µm)", fontsize=8)
        # equal aspect in physical units: x in mm, z in µm
        ax.set_aspect(1.0 / 1000.0)
    axes[-1].set_xlabel("detector column (mm)")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="transmission I/I₀")
    cyc = plating.get("cycle")
    fig.suptitle(
        title
        or f"radiograms of plating {cyc} ({plating.get('current_density_uA_cm2', math.nan):.0f} µA/cm²)"
    )
    return _save(fig, path)


# --------------------------------------------------------------------------------------
# Fig. 6a/6b
# --------------------------------------------------------------------------------------


def select_scans(
    scans: Sequence[dict], after_cycles: Iterable[int] = (1, 2, 3, 6, 9), max_panels: int = 5
) -> list[tuple[str, dict]]:
    """(label, scan) of the operando scans after the given plating cycles (the
    scan of cycle k + 1 follows plating k); when fewer than two of those exist,
    up to ``max_panels`` operando scans evenly spread, the first labelled
    "before plating"."""
    ops = [s for s in scans if s.get("step") == "scan3d" and s.get("sections")]
    by_cycle = {s.get("cycle"): s for s in ops}
    chosen = [(f"after plating {k}", by_cycle[k + 1]) for k in after_cycles if (k + 1) in by_cycle]
    if len(chosen) >= 2:
        return chosen
    if not ops:
        return []
    idx = np.unique(np.linspace(0, len(ops) - 1, min(max_panels, len(ops))).astype(int))
    out = []
    for i in idx:
        c = ops[i].get("cycle")
        label = "before plating" if c in (None, 1) else f"after plating {c - 1}"
        out.append((label, ops[i]))
    return out


def _extent(scan: dict, img: np.ndarray) -> tuple[list, str]:
    pix = float(scan["pixel_um"])
    nz, nx = img.shape
    axis = nx // 2
    cb = scan.get("layers", {}).get("cu_bottom", math.nan)
    row0 = scan.get("row0", 0)
    x0, x1 = (-axis - 0.5) * pix, (nx - axis - 0.5) * pix
    if cb is not None and np.isfinite(cb):
        ztop = (cb - (row0 - 0.5)) * pix
        zbot = (cb - (row0 + nz - 0.5)) * pix
        return [x0, x1, zbot, ztop], "height above bottom Cu (µm)"
    return [x0, x1, row0 + nz - 0.5, row0 - 0.5], "detector row"


def _layer_clim(scan: dict, img: np.ndarray) -> tuple[float, float]:
    """Grey levels from the Li (dark) to twice the PEEK spacer: the electrolyte saturates."""
    inside = img != 0
    ct = scan.get("layers", {}).get("cu_top", math.nan)
    row0 = scan.get("row0", 0)
    if ct is not None and np.isfinite(ct) and int(ct) - row0 > 2:
        top = img[: int(ct) - row0 - 1]
        peek = float(np.median(top[inside[: int(ct) - row0 - 1]]))
    else:
        peek = float(np.percentile(img[inside], 60)) if inside.any() else 1.0
    low = float(np.percentile(img[inside], 2)) if inside.any() else 0.0
    return low, low + 2.0 * max(peek - low, 1e-9)


def _z_of(scan: dict, row: float) -> float:
    cb = scan.get("layers", {}).get("cu_bottom", math.nan)
    if cb is not None and np.isfinite(cb):
        return (cb - row) * float(scan["pixel_um"])
    return row


def cross_sections(
    scans: Sequence[tuple[str, dict]], path_particles, path_layers, *, title: str = ""
) -> list[str]:
    """Two figures of vertical sections (``docs/reduction-xct.md``); ``scans`` as from
    :func:`select_scans`. Returns the paths written."""
    if not scans:
        return []
    n = len(scans)
    paths = []
    for kind, path in (("particles", path_particles), ("layers", path_layers)):
        fig = Figure(figsize=(9.0, 2.0 * n + 1.0), layout="constrained")
        axes = np.atleast_1d(fig.subplots(n, 1, sharex=True))
        heights = []
        image = None
        for ax, (label, s) in zip(axes, scans):
            sec = s["sections"]
            img = np.asarray(sec["xz_mip" if kind == "particles" else "xz"], float)
            ext, zlabel = _extent(s, img)
            lay = s.get("layers", {})
            row0 = s.get("row0", 0)
            inside = img != 0
            lt, hb, ct = (lay.get(k, math.nan) for k in ("li_hse_top", "hse_li_bottom", "cu_top"))
            if kind == "particles":
                if np.isfinite(lt) and np.isfinite(hb):
                    rows = slice(max(0, int(lt) - row0), max(1, int(math.ceil(hb)) - row0 + 1))
                    vals = img[rows][inside[rows]]
                else:
                    vals = img[inside]
                vals = vals if vals.size else np.array([0.0, 1.0])
                vmin, vmax = np.percentile(vals, 50), np.percentile(vals, 99.9)
                cmap = "magma"
            else:
                vmin, vmax = _layer_clim(s, img)
                cmap = "gray"
            # equal aspect: a µm is as long across as up (the cell is ~7x wider than tall)
            image = ax.imshow(
                img,
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                extent=ext,
                aspect="equal",
                interpolation="nearest",
            )
            if kind == "particles":
                cb_ = lay.get("cu_bottom", math.nan)
                if np.isfinite(ct) and np.isfinite(cb_) and ext[2] < ext[3]:
                    pad = 3 * float(s["pixel_um"])
                    ax.set_ylim(_z_of(s, cb_) - pad, _z_of(s, ct) + pad)
                parts = np.asarray(s.get("particles", np.zeros((0, 4))), float).reshape(-1, 4)
                near = np.abs(parts[:, 1]) <= 2.5 * float(s["pixel_um"]) + parts[:, 3]
                for x, _, z, r in parts[near]:
                    ax.add_patch(
                        Circle(
                            (x, z), max(r, float(s["pixel_um"])), fill=False, color="cyan", lw=0.6
                        )
                    )
            ax.set_title(label, fontsize=9, loc="left")
            ax.set_ylabel("z (µm)")
            _scale_bar(ax, ext[1] - ext[0])
            y0, y1 = ax.get_ylim()
            heights.append(abs(y1 - y0) / max(abs(ext[1] - ext[0]), 1e-9))
            if kind == "layers" and all(
                np.isfinite(lay.get(k, math.nan)) for k in ("cu_top", "cu_bottom", "li_hse_top")
            ):
                z_ct, z_lt = _z_of(s, lay["cu_top"]), _z_of(s, lay["li_hse_top"])
                z_cb = _z_of(s, lay["cu_bottom"])
                for z, col in ((z_ct, "C1"), (z_lt, "C2"), (z_cb, "C1")):
                    ax.axhline(z, color=col, lw=0.8, ls="--")
                xa, xb = ext[0] + 0.15 * (ext[1] - ext[0]), ext[0] + 0.65 * (ext[1] - ext[0])
                ax.annotate(
                    "",
                    (xa, z_cb),
                    (xa, z_ct),
                    arrowprops=dict(arrowstyle="<->", color="C1", lw=1.0),
                )
                ax.annotate(
                    "",
                    (xb, z_lt),
                    (xb, z_ct),
                    arrowprops=dict(arrowstyle="<->", color="C2", lw=1.0),
                )
                ax.text(
                    xa,
                    0.5 * (z_ct + z_cb),
                    f" Cu–Cu\n {lay.get('cu_to_cu_um', math.nan):.0f} µm",
                    color="C1",
                    fontsize=8,
                    va="center",
                )
                ax.text(
                    xb,
                    0.5 * (z_ct + z_lt),
                    f" top Li\n {lay.get('top_li_um', math.nan):.0f} µm",
                    color="C2",
                    fontsize=8,
                    va="center",
                )
        axes[-1].set_xlabel("x (µm, from the rotation axis)")
        fig.colorbar(
            image,
            ax=list(axes),
            shrink=0.9,
            label=(
                "attenuation per voxel (µ·voxel), max over ±2 voxels"
                if kind == "particles"
                else "attenuation per voxel (µ·voxel)"
            ),
        )
        zlabel = _extent(scans[0][1], np.asarray(scans[0][1]["sections"]["xz"]))[1]
        fig.supxlabel(f"z: {zlabel}", fontsize=8)
        # panels as tall as their data at equal aspect on a 7-inch-wide plot
        fig.set_size_inches(9.0, 1.2 + sum(7.0 * max(h, 0.05) + 0.45 for h in heights))
        fig.suptitle(
            title
            or (
                "particles (max over ±2 voxels; circles: segmented)"
                if kind == "particles"
                else "layers: top Li and Cu-to-Cu"
            )
        )
        paths.append(_save(fig, path))
    return paths


# --------------------------------------------------------------------------------------
# Fig. 7
# --------------------------------------------------------------------------------------


def trajectories(
    traj: np.ndarray,
    path,
    *,
    fov_radius_um: float | None = None,
    title: str = "",
    exaggerate: float | None = None,
) -> str:
    """Particles from the first to the last scan of ``traj`` (track, scan, 4) µm.

    Left: top view (x, y from the axis) of the first (grey) and last (blue)
    positions, arrows for the tracked ones, scaled by ``exaggerate`` (default:
    so that the median displacement draws as 1/20 of the field). Right: radial
    displacement against the starting radius.
    """
    traj = np.asarray(traj, float)
    fig = Figure(figsize=(10.0, 4.6), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1.0]})
    first, last = traj[:, 0], traj[:, -1]
    f_ok, l_ok = np.isfinite(first[:, 0]), np.isfinite(last[:, 0])
    both = f_ok & l_ok
    ax.scatter(first[f_ok, 0], first[f_ok, 1], s=12, color="0.6", label="first scan")
    ax.scatter(last[l_ok, 0], last[l_ok, 1], s=12, color="C0", label="last scan")
    d = last[both, :2] - first[both, :2]
    r0 = np.linalg.norm(first[both, :2], axis=1)
    unit = np.divide(first[both, :2], r0[:, None], out=np.zeros_like(d), where=r0[:, None] > 0)
    radial = np.sum(d * unit, axis=1)
    extent = fov_radius_um or (
        float(np.nanmax(np.abs(traj[..., :2]))) if np.isfinite(traj[..., :2]).any() else 1.0
    )
    if both.any():
        med = float(np.median(np.linalg.norm(d, axis=1))) or 1.0
        scale = exaggerate or max(1.0, 0.05 * 2 * extent / med)
        ax.quiver(
            first[both, 0],
            first[both, 1],
            d[:, 0] * scale,
            d[:, 1] * scale,
            angles="xy",
            scale_units="xy",
            scale=1.0,
            color="C3",
            width=0.004,
            label=f"displacement x{scale:.0f}",
        )
        ax2.scatter(r0, radial, s=12, color="C3")
    if fov_radius_um:
        ax.add_patch(Circle((0, 0), fov_radius_um, fill=False, ls=":", color="0.5"))
    ax.plot([0], [0], "k+")
    ax.set_aspect("equal")
    ax.set_xlim(-1.05 * extent, 1.05 * extent)
    ax.set_ylim(-1.05 * extent, 1.05 * extent)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.legend(fontsize=8, loc="upper right")
    ax2.axhline(0, color="0.5", lw=0.8)
    ax2.set_xlabel("distance from the axis, first scan (µm)")
    ax2.set_ylabel("radial displacement (µm, + outward)")
    if both.any():
        ax2.set_title(
            f"{both.sum()} tracked, mean {np.mean(radial):+.1f} µm, "
            f"{100 * np.mean(radial > 0):.0f} % outward",
            fontsize=9,
        )
    fig.suptitle(title or "ceramic particles, first to last scan")
    return _save(fig, path)


# --------------------------------------------------------------------------------------
# Fig. 8a
# --------------------------------------------------------------------------------------


def postmortem_overview(scan: dict, path, *, title: str = "") -> str:
    """Vertical section and the top Li rows against the Cu face of a scan, with
    the measured diameters (core dashed, footprint solid)."""
    sec = scan["sections"]
    pix = float(scan["pixel_um"])
    fig = Figure(figsize=(10.0, 4.6), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1.0]})
    img = np.asarray(sec["xz"], float)
    ext, zlabel = _extent(scan, img)
    lo, hi = _layer_clim(scan, img)
    ax.imshow(
        img, cmap="gray", vmin=lo, vmax=hi, extent=ext, aspect="auto", interpolation="nearest"
    )
    ax.set_xlabel("x (µm)")
    ax.set_ylabel(zlabel)
    lay = scan.get("layers", {})
    ax.set_title(
        f"Cu–Cu {lay.get('cu_to_cu_um', math.nan):.0f} µm, top Li "
        f"{lay.get('top_li_um', math.nan):.0f} µm",
        fontsize=9,
    )
    top = sec.get("xy_lip")
    el = scan.get("electrode", {})
    if top is not None:
        top = np.asarray(top, float)
        n = top.shape[-1]
        axis = n // 2
        e = [
            (-axis - 0.5) * pix,
            (n - axis - 0.5) * pix,
            (n - axis - 0.5) * pix,
            (-axis - 0.5) * pix,
        ]
        ins = top != 0
        lo, hi = np.percentile(top[ins], [5, 99]) if ins.any() else (0, 1)
        ax2.imshow(top, cmap="gray", vmin=lo, vmax=hi, extent=e, interpolation="nearest")
        c = el.get("center_yx")
        cx, cy = ((c[1] - axis) * pix, (c[0] - axis) * pix) if c else (0.0, 0.0)
        for key, ls in (("core_diameter_um", "--"), ("diameter_um", "-")):
            d = el.get(key)
            if d is not None and np.isfinite(d):
                ax2.add_patch(Circle((cx, cy), d / 2, fill=False, ls=ls, color="C1", lw=1.0))
        ax2.set_title(
            f"Li at the top Cu minus core rows: ø {el.get('diameter_um', math.nan) / 1000:.2f}"
            f" mm (core {el.get('core_diameter_um', math.nan) / 1000:.2f})",
            fontsize=9,
        )
        ax2.set_xlabel("x (µm)")
        ax2.set_ylabel("y (µm)")
    fig.suptitle(title or "post-mortem overview")
    return _save(fig, path)


# --------------------------------------------------------------------------------------
# All
# --------------------------------------------------------------------------------------


def experiment_figures(data: dict, directory, *, after_cycles=(1, 2, 3, 6, 9)) -> list[str]:
    """Every figure the data allow, into ``directory``; returns the paths."""
    directory = Path(directory)
    eid = data.get("experiment_id") or ""
    paths = []
    series = data.get("series") or {}
    if len(series.get("t", [])):
        paths.append(
            timeseries(
                series,
                data.get("cycles") or [],
                directory / "timeseries.png",
                failure=data.get("failure"),
                title=f"{eid}: force, plated Li, potential",
            )
        )
    scans = data.get("scans") or []
    if any(s.get("step") == "scan3d" for s in scans) or len(
        (data.get("radiograms") or {}).get("t", [])
    ):
        paths.append(
            layers_vs_cycle(
                scans,
                data.get("radiograms") or {},
                directory / "layers_vs_cycle.png",
                title=f"{eid}: layer thicknesses against cycle",
            )
        )
    platings = [p for p in data.get("platings") or [] if len(p["thumbnails"].get("t", [])) >= 2]
    if platings:
        intact = [p for p in platings if not p.get("shorted")] or platings
        paths.append(
            radiogram_sequence(
                intact[-1],
                directory / "radiogram_sequence.png",
                title=f"{eid}: radiograms of plating {intact[-1].get('cycle')}",
            )
        )
    chosen = select_scans(scans, after_cycles)
    if chosen:
        paths += cross_sections(
            chosen, directory / "sections_particles.png", directory / "sections_layers.png"
        )
    tr = data.get("tracking") or {}
    traj = tr.get("trajectories")
    if (
        traj is not None
        and np.asarray(traj).ndim == 3
        and np.asarray(traj).shape[1] >= 2
        and np.asarray(traj).shape[0]
    ):
        ops = [s for s in scans if s.get("step") == "scan3d" and s.get("sections")]
        fov = None
        if ops:
            fov = 0.5 * ops[0]["sections"]["ncol"] * float(ops[0]["pixel_um"])
        paths.append(
            trajectories(
                traj,
                directory / "trajectories.png",
                fov_radius_um=fov,
                title=f"{eid}: particles, first to last operando scan",
            )
        )
    pm = [s for s in scans if s.get("step") == "postmortem" and s.get("sections")]
    if pm:
        overview = [s for s in pm if s.get("postmortem_scan") == "overview"] or pm
        paths.append(
            postmortem_overview(
                overview[-1],
                directory / "postmortem.png",
                title=f"{eid}: post-mortem {overview[-1].get('postmortem_scan') or ''}",
            )
        )
    return paths
