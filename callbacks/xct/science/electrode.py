"""The Li electrode's diameter in a volume: its full-thickness core and the
crept footprint against the Cu faces.

Method: ``docs/reduction-xct.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from operando.constants import LI_ELECTRODE_DIAMETER_MM

__all__ = ["electrode_geometry", "electrode_diameter", "electrode_measurement"]


def _radial_profile(
    img: np.ndarray, center_yx: tuple[float, float], r_max: float, mask: np.ndarray | None = None
) -> np.ndarray:
    """Mean of ``img`` in 1-pixel rings about ``center_yx`` out to ``r_max``."""
    ny, nx = img.shape
    yy, xx = np.indices((ny, nx), dtype=np.float64)
    r = np.hypot(yy - center_yx[0], xx - center_yx[1])
    sel = r < r_max
    if mask is not None:
        sel &= mask
    k = np.floor(r[sel]).astype(int)
    n = int(np.ceil(r_max))
    sums = np.bincount(k, weights=img[sel], minlength=n)[:n]
    cnt = np.bincount(k, minlength=n)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = sums / cnt
    return prof  # prof[k]: ring k <= r < k + 1, centred at k + 0.5


def _disc_edges(
    prof: np.ndarray, r_min: float, min_fraction: float = 0.1
) -> tuple[list[tuple[float, float]], float]:
    """Candidate disc edges in a radial profile: ``([(radius, step), ...], noise)``.

    The profile is cut into monotonic runs (of its lightly smoothed version);
    a run is an edge candidate when it is a step rather than a slow trend
    (most of its rise or fall within ±5 rings of its steepest point, which
    rules out the cupping of an interior scan), has the sign of the largest
    such step and at least ``min_fraction`` of its height. Radius: centroid
    of the gradient over the run (sub-pixel); sorted from the centre out.
    """
    prof = np.asarray(prof, dtype=float)
    good = np.isfinite(prof)
    if good.sum() < 8:
        return [], math.inf
    prof = np.interp(np.arange(prof.size), np.flatnonzero(good), prof[good])
    sm = ndi.gaussian_filter1d(prof, 1.0, mode="nearest")
    grad = np.diff(sm)  # grad[k] at radius k + 1 (between ring centres k+.5 and k+1.5)
    lo = int(max(1, r_min))
    g = grad[lo:]
    noise = (
        float(1.4826 * np.median(np.abs(np.diff(prof[lo:])))) / math.sqrt(2)
        if g.size > 2
        else math.inf
    )
    if g.size < 3:
        return [], noise
    runs = []
    start = 0
    for k in range(1, g.size + 1):
        if k == g.size or np.sign(g[k]) != np.sign(g[start]):
            total = float(g[start:k].sum())
            peak = start + int(np.argmax(np.abs(g[start:k])))
            local = float(g[max(start, peak - 5) : min(k, peak + 6)].sum())
            if abs(local) >= 0.4 * abs(total) and total != 0:
                w = np.abs(g[start:k])
                radius = float(np.sum(w * (np.arange(start, k) + lo + 1.0)) / w.sum())
                runs.append((radius, total))
            start = k
    if not runs:
        return [], noise
    main = max(runs, key=lambda r: abs(r[1]))
    sign = np.sign(main[1])
    cands = [
        (r, abs(st))
        for r, st in runs
        if np.sign(st) == sign and abs(st) >= min_fraction * abs(main[1])
    ]
    return sorted(cands), noise


def electrode_geometry(
    volume: Any,
    z_range: tuple[int, int] | slice,
    pixel_um: float,
    *,
    center_yx: tuple[float, float] | None = None,
    edge: str = "outermost",
    refine_center: bool = True,
    min_snr: float = 5.0,
    min_contrast: float = 0.15,
) -> dict[str, Any]:
    """Li electrode disc in the rows ``z_range``: diameter and centre.

    The slab's slices are averaged and reduced to a radial profile (ring
    means) about the axis, which beats the voxel noise by the number of
    voxels per ring: Li and the argon around it differ by ~5e-5 per voxel
    only. Edge candidates are the steps of that profile (:func:`_disc_edges`)
    at least ``min_snr`` times the ring-mean noise and ``min_contrast`` of the
    level inside (Li against argon is a step of the whole Li attenuation; a
    ripple is not); ``edge="outermost"`` takes the outermost (with rows of
    the crept Li lip against a Cu face in ``z_range``, the footprint),
    ``"strongest"`` the largest. With ``refine_center`` the centre comes from
    a circle fitted to the edge found in 16 sectors.

    Returns ``diameter_um``, ``center_yx`` (voxels), ``step`` (edge height,
    attenuation per voxel), ``snr`` (step over the ring-mean noise),
    ``contrast`` (step over the level inside: Li against argon is a step of
    the whole Li attenuation, a ripple is not), ``truncated`` (no clear
    edge inside the field of view, away from its rim: the electrode is wider
    than the field, or invisible; then ``diameter_um`` means nothing).
    """
    zs = z_range if isinstance(z_range, slice) else slice(int(z_range[0]), int(z_range[1]))
    slab = np.asarray(volume[zs], dtype=np.float32)
    img = slab.mean(axis=0) if slab.ndim == 3 else slab
    ny, nx = img.shape
    axis = (ny // 2, nx // 2)
    inside = img != 0
    yy, xx = np.indices((ny, nx))
    rr = np.hypot(yy - axis[0], xx - axis[1])
    r_fov = float(rr[inside].max()) if inside.any() else min(ny, nx) / 2.0
    cy, cx = center_yx if center_yx is not None else axis
    r_min = 3.0

    margin = max(5.0, 0.03 * r_fov)  # the rim of an interior scan is unreliable

    def measure(c):
        """(radius, step, noise, contrast, r_lim) of the chosen edge about ``c``."""
        r_lim = r_fov - math.hypot(c[0] - axis[0], c[1] - axis[1]) - margin
        prof = _radial_profile(img, c, r_lim, inside)
        cands, noise = _disc_edges(prof, r_min)
        good = []
        for radius, step in cands:
            level = float(np.nanmedian(prof[int(r_min) : max(int(radius) - 2, int(r_min) + 1)]))
            contrast = step / abs(level) if level else math.inf
            if radius <= r_lim - 2.0 and step >= min_snr * noise and contrast >= min_contrast:
                good.append((radius, step, contrast))
        if not good:
            return math.nan, 0.0, noise, 0.0, r_lim
        if edge == "outermost":
            radius, step, contrast = good[-1]
        elif edge == "strongest":
            radius, step, contrast = max(good, key=lambda t: t[1])
        else:
            raise ValueError(f"edge must be 'outermost' or 'strongest', not {edge!r}")
        return radius, step, noise, contrast, r_lim

    if refine_center and center_yx is None:
        for _ in range(2):
            r0, _, _, _, r_lim = measure((cy, cx))
            if not np.isfinite(r0):
                break
            ang = np.arctan2(yy - cy, xx - cx)
            pts = []
            for k in range(16):
                a0 = -np.pi + k * np.pi / 8
                sector = inside & (ang >= a0) & (ang < a0 + np.pi / 8)
                prof = _radial_profile(img, (cy, cx), r_lim, sector)
                # the strongest step of the sector's profile close to r0
                k0 = max(1, int(r0) - 8)
                cands, _ = _disc_edges(prof[k0 : int(r0) + 9], 0)
                if not cands:
                    continue
                rk = max(cands, key=lambda t: t[1])[0] + k0
                if abs(rk - r0) < 6:
                    mid = a0 + np.pi / 16
                    pts.append((cy + rk * np.sin(mid), cx + rk * np.cos(mid)))
            if len(pts) < 8:
                break
            p = np.asarray(pts)
            # algebraic circle fit: y² + x² + D y + E x + F = 0
            A = np.column_stack([p[:, 0], p[:, 1], np.ones(len(p))])
            rhs = -(p[:, 0] ** 2 + p[:, 1] ** 2)
            sol = np.linalg.lstsq(A, rhs, rcond=None)[0]
            cy, cx = -sol[0] / 2, -sol[1] / 2
    radius, step, noise, contrast, r_lim = measure((cy, cx))
    snr = step / noise if noise > 0 else math.inf
    truncated = not np.isfinite(radius)
    return {
        "diameter_um": 2.0 * radius * pixel_um if np.isfinite(radius) else math.nan,
        "center_yx": (float(cy), float(cx)),
        "step": step,
        "snr": snr,
        "contrast": contrast,
        "truncated": bool(truncated),
    }


def electrode_diameter(
    volume: Any, z_range: tuple[int, int] | slice, pixel_um: float, **kwargs: Any
) -> float:
    """Area-equivalent Li electrode diameter in µm (see :func:`electrode_geometry`).

    Returns NaN, with a warning, when the disc runs out of the field of view
    (the operando 3.4 mm field is narrower than a ø4–5 mm electrode: use the
    overview scan).
    """
    geo = electrode_geometry(volume, z_range, pixel_um, **kwargs)
    if geo["truncated"]:
        warnings.warn(
            "electrode reaches the edge of the field of view; diameter unknown",
            RuntimeWarning,
            stacklevel=2,
        )
        return float("nan")
    return float(geo["diameter_um"])


def _footprint_radius(
    volume,
    lip_rows: Sequence[int],
    core_rows: tuple[int, int],
    center_yx,
    r_core: float,
    r_lim: float,
    min_snr: float = 5.0,
) -> float:
    """Outer radius (voxels) of a Li lip thinner than a voxel against a Cu face.

    ``lip_rows``: the rows wholly on the Li side of the Cu face next to it
    (the lip, 15–20 µm thick, sits in them); ``core_rows``: rows of the same
    Li layer further in. ``D = Σ lip rows − n·mean(core rows)``: inside the
    core both are Li, outside both argon, and both see the same cupping of the
    interior reconstruction, so only the lip remains: a ring of height ``h``
    from the core edge to the lip's edge. Its ring means are fitted with that
    box (``h`` and the outer radius free, partial coverage of the edge ring),
    which uses every ring rather than the noisy edge alone. NaN when the ring
    is not ``min_snr`` times its noise.
    """
    rows = [int(k) for k in lip_rows if 0 <= int(k) < volume.shape[0]]
    a, b = max(0, core_rows[0]), min(volume.shape[0], core_rows[1])
    if not rows or b <= a:
        return math.nan
    ref = np.asarray(volume[a:b], dtype=np.float64).mean(axis=0)
    D = sum(np.asarray(volume[k], dtype=np.float64) for k in rows) - len(rows) * ref
    inside = np.asarray(volume[rows[0]]) != 0
    prof = _radial_profile(D, center_yx, r_lim, inside)
    ny, nx = D.shape
    yy, xx = np.indices((ny, nx), dtype=np.float64)
    rr = np.hypot(yy - center_yx[0], xx - center_yx[1])
    counts = np.bincount(np.floor(rr[inside & (rr < r_lim)]).astype(int), minlength=prof.size)[
        : prof.size
    ].astype(float)
    lo = int(math.ceil(r_core)) + 2
    hi = int(math.floor(r_lim))
    if hi - lo < 6:
        return math.nan
    k = np.arange(lo, hi)
    d, w = prof[lo:hi], counts[lo:hi]
    good = np.isfinite(d) & (w > 0)
    k, d, w = k[good], d[good], w[good]
    if k.size < 6:
        return math.nan
    best = (math.inf, math.nan, 0.0)
    for r in np.arange(lo + 1.0, hi - 0.5, 0.05):
        m = np.clip(r - k, 0.0, 1.0)  # ring k spans [k, k + 1)
        mm = float(np.sum(w * m * m))
        if mm <= 0:
            continue
        h = float(np.sum(w * m * d)) / mm
        rss = float(np.sum(w * (d - h * m) ** 2))
        if rss < best[0]:
            best = (rss, float(r), h)
    rss, radius, h = best
    if not np.isfinite(radius) or h <= 0:
        return math.nan
    # the ring means' scatter about the fit; the ring's height from its rings
    m = np.clip(radius - k, 0.0, 1.0)
    sigma = float(np.sqrt(np.sum((d - h * m) ** 2) / max(1, k.size - 2)))
    n_in = max(1.0, float(np.sum(m)))
    return float(radius) if h > min_snr * sigma / math.sqrt(n_in) else math.nan


def electrode_measurement(
    volume,
    layers_vol: dict,
    pixel_um: float,
    *,
    nominal_diameter_um: float = 1000.0 * LI_ELECTRODE_DIAMETER_MM,
    max_edge_fraction: float = 0.85,
) -> dict:
    """Li electrode diameters in a volume whose layers (rows of this volume) are known.

    ``core_diameter_um``: the full-thickness core (:func:`electrode_geometry`
    on the middle rows of the top, then the bottom, Li layer). ``footprint``:
    the crept lip against each Cu face (:func:`_footprint_radius`), the
    electrode's outer diameter (the core's when there is no lip).
    ``diameter_um``: the mean footprint of the two electrodes. Not
    ``measurable`` (NaN) when the core's edge is not inside the field of view
    or is implausibly small (< half the nominal diameter: an artefact, the
    electrode does not shrink), or beyond ``max_edge_fraction`` of the field's
    radius (the cupping of an interior scan near its rim makes false steps).
    """
    out = {
        "diameter_um": math.nan,
        "core_diameter_um": math.nan,
        "top_um": math.nan,
        "bottom_um": math.nan,
        "center_yx": None,
        "measurable": False,
        "reason": "",
    }
    need = ("cu_top", "li_hse_top", "hse_li_bottom", "cu_bottom")
    if not all(np.isfinite(layers_vol.get(k, math.nan)) for k in need):
        out["reason"] = "layers not found"
        return out
    nz, ny, nx = volume.shape
    ct, lt, hb, cb = (layers_vol[k] for k in need)
    # rows wholly inside each Li layer (row k spans k ± 0.5), from the Cu face
    # in: the first one or two hold the lip, the others are the core
    top_rows = list(range(int(math.ceil(ct + 0.5)), int(math.floor(lt - 0.5)) + 1))
    bot_rows = list(range(int(math.floor(cb - 0.5)), int(math.ceil(hb + 0.5)) - 1, -1))
    electrodes = {}
    for name, li_rows in (("top", top_rows), ("bottom", bot_rows)):
        n_lip = 2 if len(li_rows) >= 3 else 1
        core = sorted(li_rows[n_lip:])
        electrodes[name] = ((core[0], core[-1] + 1) if core else (0, 0), li_rows[:n_lip])
    axis = (ny // 2, nx // 2)
    inside = np.asarray(volume[min(max(int(round(lt)), 0), nz - 1)]) != 0
    yy, xx = np.indices((ny, nx))
    r_fov = float(np.hypot(yy - axis[0], xx - axis[1])[inside].max()) if inside.any() else nx / 2
    reasons = []
    cores = []
    for name, (core_rows, face_rows) in electrodes.items():
        a, b = max(0, core_rows[0]), min(nz, core_rows[1])
        if b <= a:
            reasons.append(f"{name}: Li layer thinner than 2 voxels")
            continue
        geo = electrode_geometry(volume, (a, b), pixel_um, edge="strongest")
        d = geo["diameter_um"]
        if geo["truncated"] or not np.isfinite(d) or d < 0.5 * nominal_diameter_um:
            reasons.append(f"{name}: electrode edge not inside the field of view")
            continue
        if d / 2.0 / pixel_um > max_edge_fraction * r_fov:
            # an interior reconstruction cups toward the rim of its field: a
            # step there is not trusted (the 3.4 mm operando field shows one at
            # ~0.9 of its radius with a ø4 mm electrode wider than the field)
            reasons.append(
                f"{name}: edge within {1 - max_edge_fraction:.0%} of the rim of the field of view"
            )
            continue
        cores.append(d)
        r_core = d / 2.0 / pixel_um
        c = geo["center_yx"]
        r_lim = r_fov - math.hypot(c[0] - axis[0], c[1] - axis[1]) - max(3.0, 0.02 * r_fov)
        r_lip = _footprint_radius(volume, face_rows, (a, b), c, r_core, r_lim)
        foot = 2.0 * r_lip * pixel_um if np.isfinite(r_lip) else d
        out[f"{name}_um"] = float(max(foot, d))
        if out["center_yx"] is None:
            out["center_yx"] = [float(c[0]), float(c[1])]
    if cores:
        out["core_diameter_um"] = float(np.mean(cores))
        vals = [out[k] for k in ("top_um", "bottom_um") if np.isfinite(out[k])]
        out["diameter_um"] = float(np.mean(vals))
        out["measurable"] = True
    out["reason"] = "; ".join(reasons)
    return out
