"""The SAXS/WAXS reduction of one raster, one function per stage.

The frames are integrated first (:func:`~.science.integration.reduce_frames`;
live, one event at a time). Then: the empty cell accumulated
(:func:`accumulate_background`) and subtracted (:func:`subtract_empty_cell`);
the OCV reference of every raster point (:func:`ocv_reference`) and the
instrumental width from it (:func:`instrument_width`); the operando maps
(:func:`relative_maps`) and Li2S sizes (:func:`li2s_sizes`); the state of
discharge of every point (:func:`state_of_discharge`). Which stage runs when:
:mod:`.experiment`; the method: ``docs/reduction-saxs.md``.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .model import RasterData, RasterResult, ReductionParameters
from .science.electrochemistry import net_capacity, sodc
from .science.maps import li2s_map, normalize_to_reference, saxs_map
from .science.peaks import LI2S_Q111, instrument_fwhm_from_reference, li2s_fit

__all__ = [
    "accumulate_background",
    "background_curve",
    "subtract_empty_cell",
    "ocv_reference",
    "instrument_width",
    "relative_maps",
    "li2s_sizes",
    "state_of_discharge",
]

logger = logging.getLogger(__name__)


def _nan_mean(stack) -> np.ndarray:
    arr = np.asarray(stack, float)
    with np.errstate(invalid="ignore"):
        cnt = np.sum(np.isfinite(arr), axis=0)
        tot = np.nansum(arr, axis=0)
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def _nan_sigma_of_mean(stack) -> np.ndarray:
    arr = np.asarray(stack, float)
    cnt = np.sum(np.isfinite(arr), axis=0)
    with np.errstate(invalid="ignore"):
        return np.where(cnt > 0, np.sqrt(np.nansum(arr * arr, axis=0)) / np.maximum(cnt, 1), np.nan)


# --------------------------------------------------------------------------------------
# the empty cell
# --------------------------------------------------------------------------------------


def accumulate_background(background: dict | None, raster: RasterData) -> dict:
    """The empty-cell measurements so far with this background run's added: its
    uids, every frame's curves per detector (I, σ) and the diode readings."""
    prev = background
    frames = {"saxs": raster.saxs, "waxs": raster.waxs}
    sig = {"saxs": raster.saxs_sigma, "waxs": raster.waxs_sigma}
    bg = {
        "uids": (prev["uids"] if prev else []) + [raster.uid],
        "curves": dict(prev["curves"]) if prev else {},
        "diode": list(prev["diode"]) if prev else [],
    }
    for role in ("saxs", "waxs"):
        if frames[role] is None:
            continue
        old = bg["curves"].get(role, ([], []))
        bg["curves"][role] = (list(old[0]) + list(frames[role]), list(old[1]) + list(sig[role]))
    bg["diode"] += [float(v) for v in raster.diode if np.isfinite(v)]
    return bg


def background_curve(background: dict | None, role: str):
    """(mean I, σ of the mean) of the empty cell, or None."""
    if not background or role not in background["curves"]:
        return None
    curves, sigmas = background["curves"][role]
    return _nan_mean(curves), _nan_sigma_of_mean(sigmas)


def subtract_empty_cell(
    raster: RasterData, background: dict | None, params: ReductionParameters
) -> RasterResult:
    """I − s·I_bg per point, s the diode transmission at the point over the empty
    cell's (1 when unknown); σ = √(σ² + (s σ_bg)²)."""
    bg_uid = None
    scale = np.ones(raster.n)
    if background:
        bg_uid = background["uids"][0]
        t_bg = float(np.mean(background["diode"])) if background["diode"] else math.nan
        if params.background_transmission_scale and t_bg > 0:
            s = raster.diode / t_bg
            scale = np.where(np.isfinite(s) & (s >= 0), s, 1.0)
    out = {}
    for role in ("saxs", "waxs"):
        cur, sig = getattr(raster, role), getattr(raster, f"{role}_sigma")
        bg = background_curve(background, role)
        if cur is None or bg is None:
            out[role], out[f"{role}_sigma"] = cur, sig
            continue
        out[role] = cur - scale[:, None] * bg[0][None, :]
        out[f"{role}_sigma"] = np.sqrt(sig**2 + (scale[:, None] * bg[1][None, :]) ** 2)
    res = RasterResult(
        raster,
        out["saxs"],
        out["saxs_sigma"],
        out["waxs"],
        out["waxs_sigma"],
        background_uid=bg_uid,
    )
    return res


# --------------------------------------------------------------------------------------
# the OCV reference
# --------------------------------------------------------------------------------------


def ocv_reference(results: list[RasterResult]) -> dict:
    """Per raster point (grid order), the mean background-subtracted curves of
    ``results`` (the OCV rasters of one grid) and their σ; ``uids``, ``q_*``."""
    ref = {"uids": [r.uid for r in results]}
    for role in ("saxs", "waxs"):
        if any(getattr(r, role) is None for r in results):
            continue
        curves = [r.raster.to_grid(getattr(r, role)) for r in results]
        sigmas = [r.raster.to_grid(getattr(r, f"{role}_sigma")) for r in results]
        ref[role] = _nan_mean(curves)
        ref[f"{role}_sigma"] = _nan_sigma_of_mean(sigmas)
        ref[f"q_{role}"] = getattr(results[0].raster, f"q_{role}")
    return ref


def instrument_width(reference: dict) -> tuple[float, str]:
    """``(FWHM nm⁻¹, source)``: from the Li6PS5Cl reflections of the summed WAXS
    reference, 0 when none can be fitted."""
    total = np.nansum(reference["waxs"], axis=0)
    sig = np.sqrt(np.nansum(reference["waxs_sigma"] ** 2, axis=0))
    fwhm = instrument_fwhm_from_reference(reference["q_waxs"], total, sig)
    if np.isfinite(fwhm):
        return fwhm, "Li6PS5Cl reflections (OCV)"
    return 0.0, "none found (0 used)"


# --------------------------------------------------------------------------------------
# operando rasters
# --------------------------------------------------------------------------------------


def relative_maps(res: RasterResult, ref: dict, params: ReductionParameters) -> bool:
    """The SAXS map, WAXS over the reference and the Li2S map of an operando raster
    (set on ``res``); True when there is a Li2S map to size."""
    r = res.raster
    p = params
    shape = tuple(r.shape)
    res.reference_uids = list(ref["uids"])
    flat = r.flat_index()
    if res.saxs is not None and "saxs" in ref:
        try:
            res.saxs_map = saxs_map(
                r.q_saxs, r.to_grid(res.saxs), shape, window=p.saxs_window, reference=ref["saxs"]
            )
        except ValueError as err:  # the window outside this detector's q range
            logger.warning("no SAXS map for %s: %s", r.uid, err)
    if res.waxs is None or "waxs" not in ref:
        return False
    q = r.q_waxs
    ref_pts = ref["waxs"][flat]
    res.waxs_norm = normalize_to_reference(res.waxs, ref_pts)
    try:
        res.li2s_map = li2s_map(q, r.to_grid(res.waxs), ref["waxs"], shape, window=p.li2s_window)
    except ValueError as err:
        logger.warning("no Li2S map for %s: %s", r.uid, err)
        return False
    return True


def li2s_sizes(
    res: RasterResult, ref: dict, params: ReductionParameters, instrument_fwhm: float | None
) -> None:
    """Scherrer size and (111) position of Li2S at every point whose Li2S signal
    exceeds ``size_min_signal``, from I − I_ref (set on ``res`` as maps)."""
    r = res.raster
    p = params
    flat = r.flat_index()
    q = r.q_waxs
    ref_pts = ref["waxs"][flat]
    ref_sig = ref["waxs_sigma"][flat]
    sizes = np.full(r.n, np.nan)
    centres = np.full(r.n, np.nan)
    instr = instrument_fwhm or 0.0
    lm = res.li2s_map.reshape(-1)
    for k in range(r.n):
        if not (np.isfinite(lm[flat[k]]) and lm[flat[k]] > p.size_min_signal):
            continue
        diff = res.waxs[k] - ref_pts[k]
        sig = np.hypot(res.waxs_sigma[k], ref_sig[k])
        ok = np.isfinite(diff) & np.isfinite(sig) & (sig > 0)
        try:
            fit = li2s_fit(q[ok], diff[ok], sigma=sig[ok])
        except (RuntimeError, ValueError):
            continue
        if not (
            fit.success
            and fit.area > 0
            and np.isfinite(fit.fwhm_err)
            and fit.fwhm_err < 0.25 * fit.fwhm
            and abs(fit.center - LI2S_Q111) < 1.0
        ):
            continue
        w2 = fit.fwhm**2 - instr**2
        sizes[k] = 2 * math.pi * p.scherrer_k / math.sqrt(w2) if w2 > 0 else math.inf
        centres[k] = fit.center
    res.li2s_size_map = r.map_of(sizes)
    res.li2s_q111_map = r.map_of(centres)


# --------------------------------------------------------------------------------------
# state of discharge
# --------------------------------------------------------------------------------------


def state_of_discharge(
    results: list[RasterResult], cell=()
) -> tuple[list[str], float, bool] | None:
    """The SODC of every point of ``results`` (OCV and operando rasters), from all
    their capacities and those of the cell record ``cell`` (``CellRecord`` objects of
    the cycling runs: the half cycles' ends, Q₁ included, as the cell reached
    them) at once, set on each result: ``(uids whose SODC changed, Q₁ mAh,
    whether Q₁ is final)``; None without any such raster."""
    if not results:
        return None
    h = np.concatenate([res.raster.half_cycle for res in results] + [r.half_cycle for r in cell])
    c = np.concatenate([res.raster.capacity for res in results] + [r.capacity for r in cell])
    q_net, q1_mah, final = net_capacity(h, c)
    values = sodc(q_net, q1_mah, final)
    changed = []
    k = 0
    for res in results:
        new = values[k : k + res.raster.n]
        k += res.raster.n
        if res.sodc is None or not np.array_equal(res.sodc, new, equal_nan=True):
            if res.sodc is not None:
                changed.append(res.uid)
            res.sodc = new
    return changed, q1_mah, final
