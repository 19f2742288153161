"""The XCT reduction of one run, one function per stage.

A 3D scan (:func:`reduce_scan`): :func:`dark_flat`, :func:`projection_layers`
and :func:`stack_window` (which rows), :func:`rotation_center`,
:func:`reconstruct_volume`, :func:`volume_layers`, the electrode
(:func:`~.science.electrode.electrode_measurement`), :func:`particles`. A plating
run (:func:`reduce_plating`): :func:`radiogram_layers`, :func:`cell_columns`,
:func:`technique_times`, :func:`detect_short`. What each stage does and why:
``docs/reduction-xct.md``; across runs: :mod:`.experiment`.
"""

from __future__ import annotations

import logging
import math
import time as _time

import numpy as np

from ..core import RowWindow
from .model import (
    LAYER_LENGTHS,
    LAYER_ROWS,
    PlatingResult,
    ReductionParameters,
    RunData,
    ScanResult,
    accepts,
)
from .science import cell as cellmod
from .science import radiography
from .science import reconstruction as tomo_rec
from .science.center import find_center_projections
from .science.electrode import electrode_measurement
from .science.layers import find_layers, layer_profile
from .science.particles import segment_particles
from .science.projections import minus_log, normalize

__all__ = [
    "dark_flat",
    "projection_layers",
    "stack_window",
    "electrolyte_rows",
    "read_rows",
    "rotation_center",
    "reconstruct_volume",
    "volume_layers",
    "particles",
    "reduce_scan",
    "radiogram_layers",
    "cell_columns",
    "technique_times",
    "detect_short",
    "reduce_plating",
    "reduce_run",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _mean_frame(frames, indices=None) -> np.ndarray | None:
    """Mean of frames (read one by one: a full-size stack need not fit in memory)."""
    if frames is None:
        return None
    n = int(frames.shape[0])
    if n == 0:
        return None
    idx = range(n) if indices is None else indices
    acc = None
    k = 0
    for i in idx:
        f = np.asarray(frames[int(i)], dtype=np.float64)
        acc = f if acc is None else acc + f
        k += 1
    return (acc / k).astype(np.float32)


def _layers_or_nan(profile, pixel_um, **kwargs) -> dict:
    try:
        return find_layers(profile, pixel_um, **kwargs)
    except ValueError as err:
        logger.warning("layers not found: %s", err)
        keys = (
            "cu_top",
            "cu_bottom",
            "li_hse_top",
            "hse_li_bottom",
            "cu_to_cu_um",
            "top_li_um",
            "hse_um",
            "bottom_li_um",
        )
        out = {k: math.nan for k in keys}
        out["pixel_um"] = float(pixel_um)
        out["error"] = str(err)
        return out


def _shift_rows(layers: dict, r0: int) -> dict:
    out = dict(layers)
    for k in ("cu_top", "cu_bottom", "li_hse_top", "hse_li_bottom"):
        if k in out:
            out[k] = out[k] + r0
    return out


def _sections(volume: np.ndarray, layers_vol: dict) -> dict:
    nz, ny, nx = volume.shape
    ay = ny // 2
    out = {
        "xz": np.array(volume[:, ay, :]),
        "xz_mip": np.array(volume[:, max(0, ay - 2) : ay + 3, :].max(axis=1)),
        "ncol": nx,
    }
    lt, hb, ct = (layers_vol.get(k, math.nan) for k in ("li_hse_top", "hse_li_bottom", "cu_top"))
    if np.isfinite(lt) and np.isfinite(hb):
        k = int(round(0.5 * (lt + hb)))
        if 0 <= k < nz:
            out["xy_hse"] = np.array(volume[k])
            out["xy_hse_row"] = k
    if np.isfinite(ct) and np.isfinite(lt):
        k = int(round(ct))
        rows = [r for r in (k, k + 1) if 0 <= r < nz]
        a, b = int(math.ceil(ct)) + 1, int(math.floor(lt))
        if rows and b > a:
            # the Li against the Cu face minus the core rows: the crept lip (see
            # _footprint_radius), the core and argon cancel
            ref = np.asarray(volume[a:b], dtype=np.float32).mean(axis=0)
            out["xy_lip"] = np.array(
                sum(np.asarray(volume[r], np.float32) for r in rows) - len(rows) * ref
            ) * (volume[rows[0]] != 0)
            out["xy_lip_row"] = rows[0]
    return out


# --------------------------------------------------------------------------------------
# 3D scans
# --------------------------------------------------------------------------------------


def dark_flat(run: RunData) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Stage 1: the mean flat and dark frames of the run's own ``flat``/``dark`` streams."""
    return _mean_frame(run.frames.get("flat")), _mean_frame(run.frames.get("dark"))


def projection_layers(frames, flat, dark, pixel_um: float, params: ReductionParameters) -> dict:
    """Stage 2a: the layers of the mean of 16 projections, read as a radiogram."""
    n = int(frames.shape[0])
    views = np.unique(np.linspace(0, n - 1, min(16, n)).astype(int))
    mean_proj = _mean_frame(frames, views)
    return _layers_or_nan(
        radiography.vertical_profile(normalize(mean_proj, flat, dark), kind="absorbed"),
        pixel_um,
        **({} if params.cu_peaks else {"cu_snr": math.inf}),
    )


def stack_window(layers: dict, nrow: int, params: ReductionParameters) -> tuple[int, int]:
    """Stage 2b: the detector rows to reconstruct, ``(r0, r1)``: the stack and a margin."""
    top, bot = layers.get("cu_top", math.nan), layers.get("cu_bottom", math.nan)
    if params.rows == "all" or not (np.isfinite(top) and np.isfinite(bot)) or bot <= top:
        return 0, nrow
    margin = max(float(params.min_margin_rows), params.stack_margin * (bot - top))
    r0 = max(0, int(math.floor(top - margin)))
    r1 = min(nrow, int(math.ceil(bot + margin)) + 1)
    return (r0, r1) if r1 - r0 >= 12 else (0, nrow)


def electrolyte_rows(layers: dict, r0: int, r1: int) -> tuple[int, int]:
    """The detector rows inside the electrolyte (where the particles are), within
    ``r0:r1``; the middle 8 rows of the window when the layers are not known."""
    lt, hb = layers.get("li_hse_top", math.nan), layers.get("hse_li_bottom", math.nan)
    if np.isfinite(lt) and np.isfinite(hb) and hb - lt >= 2:
        a, b = int(math.floor(lt)) + 1, int(math.ceil(hb))
    else:
        a, b = r0 + (r1 - r0) // 2 - 4, r0 + (r1 - r0) // 2 + 4
    return max(a, r0), min(b, r1)


def read_rows(frames, r0: int, r1: int, params: ReductionParameters):
    """Rows ``r0:r1`` of every projection: in one read when they take no more than
    ``params.prefetch_bytes``, else lazily (:class:`~operando.callbacks.core.RowWindow`)."""
    n, _, ncol = (int(s) for s in frames.shape)
    source = RowWindow(frames, r0, r1)
    if (
        n * (r1 - r0) * ncol * np.dtype(getattr(frames, "dtype", np.uint16)).itemsize
        <= params.prefetch_bytes
    ):
        source = np.asarray(source[:, :, :])
    return source


def _find_center(frames, angles, flat, dark, rows: tuple[int, int]) -> float:
    """Axis column from the electrolyte's rows (where the particles are)."""
    a, b = rows
    block = np.asarray(frames[:, a:b, :], dtype=np.float32)
    li = minus_log(normalize(block, flat[a:b], dark[a:b] if dark is not None else None))
    return float(find_center_projections(li, angles, n_rows=min(8, b - a)))


def rotation_center(source, angles, flat, dark, rows: tuple[int, int], uid: str = "") -> float:
    """Stage 3: the axis column from the electrolyte's ``rows`` (relative to the
    window ``source``; ``flat``/``dark`` of the window), else the whole window."""
    a, b = rows
    try:
        return _find_center(source, angles, flat, dark, (a, b))
    except Exception as err:  # noqa: BLE001 - fall back on the whole window
        logger.warning("scan %s: centre from the electrolyte rows failed (%s)", uid, err)
        return _find_center(source, angles, flat, dark, (0, int(source.shape[1])))


def reconstruct_volume(
    source, angles, flat, dark, center: float, params: ReductionParameters
) -> np.ndarray:
    """Stage 4: the volume (row, y, x) of the window (DFI, rings suppressed)."""
    return tomo_rec.reconstruct(
        source,
        angles,
        flats=flat,
        darks=dark,
        center=center,
        stripes=params.stripes,
        filter_name=params.filter_name,
        pad_rate=params.pad_rate,
        chunk_rows=params.chunk_rows,
        workers=params.workers,
    )


def volume_layers(volume: np.ndarray, pixel_um: float) -> tuple[np.ndarray, dict]:
    """Stage 5: the layer profile of the volume and its layers (rows of the volume),
    the Cu coatings always at the spacer step."""
    profile = layer_profile(volume)
    return profile, _layers_or_nan(profile, pixel_um, cu_snr=math.inf)


def particles(
    volume: np.ndarray,
    layers_vol: dict,
    pixel_um: float,
    row0: int,
    nrow: int,
    params: ReductionParameters,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Stage 7: the electrolyte's particles: ``(voxels, µm in the cell frame, z reference)``."""
    lt, hb, cb = (layers_vol.get(k, math.nan) for k in ("li_hse_top", "hse_li_bottom", "cu_bottom"))
    if np.isfinite(lt) and np.isfinite(hb):
        zr = (max(0, int(math.floor(lt)) - 1), min(volume.shape[0], int(math.ceil(hb)) + 2))
    else:
        zr = (0, volume.shape[0])
    vox = segment_particles(
        volume, z_range=zr, snr=params.particle_snr, min_voxels=params.particle_min_voxels
    )
    axis = volume.shape[-1] // 2
    z_reference = "bottom Cu face"
    if np.isfinite(cb):
        z_um = (cb - vox[:, 2]) * pixel_um
    else:
        z_reference = "detector centre"
        z_um = (0.5 * (nrow - 1) - (vox[:, 2] + row0)) * pixel_um
    um = (
        np.column_stack(
            [
                (vox[:, 0] - axis) * pixel_um,
                (vox[:, 1] - axis) * pixel_um,
                z_um,
                vox[:, 3] * pixel_um,
            ]
        )
        if len(vox)
        else np.zeros((0, 4))
    )
    return vox, um, z_reference


def reduce_scan(run: RunData, params: ReductionParameters | None = None) -> ScanResult:
    """Reduce a 3D scan, stage by stage (see the module doc)."""
    params = params or ReductionParameters()
    timings: dict[str, float] = {}
    t0 = _time.perf_counter()
    det = run.detector()
    pix = float(det["pixel_um"])
    frames = run.frames.get("primary")
    if frames is None or int(frames.shape[0]) < 2:
        raise ValueError(f"scan {run.uid} has no projections")
    angles = run.numeric("primary", "stage_th")
    times = run.numeric("primary", "clock_time")
    n, nrow, ncol = (int(s) for s in frames.shape)
    if angles.size != n:
        raise ValueError(f"scan {run.uid}: {angles.size} angles for {n} projections")
    flat, dark = dark_flat(run)
    if flat is None:
        raise ValueError(f"scan {run.uid} has no flat fields")
    timings["darks_flats"] = _time.perf_counter() - t0

    t1 = _time.perf_counter()
    proj_layers = projection_layers(frames, flat, dark, pix, params)
    timings["projection_layers"] = _time.perf_counter() - t1

    res = ScanResult(
        uid=run.uid,
        experiment_id=run.experiment_id,
        step=run.step,
        cycle=run.cycle,
        start=dict(run.start),
        stop=dict(run.stop),
        detector=det,
        pixel_um=pix,
        n_projections=n,
        t_start=float(np.nanmin(times)) if times.size else math.nan,
        t_end=float(np.nanmax(times)) if times.size else math.nan,
        t_mid=float(np.nanmean(times)) if times.size else math.nan,
        projection_layers=proj_layers,
        cell=cell_columns(run, ("cell",)),
        parameters=params.as_dict(),
        timings=timings,
    )
    if not params.reconstruct:
        res.layers = dict(proj_layers)
        res.timings["total"] = _time.perf_counter() - t0
        return res

    r0, r1 = stack_window(proj_layers, nrow, params)
    res.row0 = r0
    t1 = _time.perf_counter()
    a, b = electrolyte_rows(proj_layers, r0, r1)
    source = read_rows(frames, r0, r1, params)
    timings["read"] = _time.perf_counter() - t1
    flat_w, dark_w = flat[r0:r1], dark[r0:r1] if dark is not None else None

    t1 = _time.perf_counter()
    res.center = center = rotation_center(source, angles, flat_w, dark_w, (a - r0, b - r0), run.uid)
    timings["center"] = _time.perf_counter() - t1

    t1 = _time.perf_counter()
    volume = reconstruct_volume(source, angles, flat_w, dark_w, center, params)
    timings["reconstruct"] = _time.perf_counter() - t1
    res.volume = volume

    t1 = _time.perf_counter()
    res.profile, layers_vol = volume_layers(volume, pix)
    res.layers = _shift_rows(layers_vol, r0)
    res.electrode = electrode_measurement(
        volume, layers_vol, pix, nominal_diameter_um=1000.0 * params.nominal_diameter_mm
    )
    timings["layers"] = _time.perf_counter() - t1

    t1 = _time.perf_counter()
    res.particles_vox, res.particles, res.z_reference = particles(
        volume, layers_vol, pix, r0, nrow, params
    )
    res.sections = _sections(volume, layers_vol)
    timings["particles"] = _time.perf_counter() - t1
    timings["total"] = _time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------------------
# Plating
# --------------------------------------------------------------------------------------


#: radiograms kept (as thumbnails) per plating for the radiogram-sequence figure
THUMBNAILS_PER_PLATING = 6
#: their height in pixels at most (block means of the transmission)
THUMBNAIL_HEIGHT = 160


def _thumbnail(trans: np.ndarray) -> tuple[np.ndarray, int]:
    """A block-mean reduced copy of a transmission image (float32) and its factor."""
    from skimage.measure import block_reduce

    f = max(1, int(math.ceil(trans.shape[0] / THUMBNAIL_HEIGHT)))
    return block_reduce(np.asarray(trans, np.float32), (f, f), np.mean), f


def radiogram_layers(
    run: RunData,
    flat,
    dark,
    pixel_um: float,
    params: ReductionParameters,
    thumbnails: dict | None = None,
) -> dict[str, np.ndarray]:
    """The layers of every radiogram against cell time (one column per layer).

    ``thumbnails`` (a dict, filled): ``t``, ``images`` (n, h, w) and ``factor`` of
    up to :data:`THUMBNAILS_PER_PLATING` radiograms evenly spread over the run.
    """
    frames = run.frames.get("primary")
    rows = []
    times = run.numeric("primary", "clock_time")
    cu_kw = {} if params.cu_peaks else {"cu_snr": math.inf}
    keep: set[int] = set()
    thumbs: list[tuple[int, np.ndarray]] = []
    if frames is not None and flat is not None:
        n = int(frames.shape[0])
        if thumbnails is not None and n:
            keep = set(np.round(np.linspace(0, n - 1, min(n, THUMBNAILS_PER_PLATING))).astype(int))
        for k in range(n):
            trans = normalize(np.asarray(frames[k]), flat, dark)
            if k in keep:
                img, factor = _thumbnail(trans)
                thumbs.append((k, img))
                thumbnails["factor"] = factor
            try:
                # radiography.analyze, with the Cu choice of the parameters
                lay = find_layers(
                    radiography.vertical_profile(trans, kind="absorbed"), pixel_um, **cu_kw
                )
            except ValueError as err:
                logger.warning("plating %s radiogram %d: %s", run.uid, k, err)
                lay = {key: math.nan for key in LAYER_LENGTHS + LAYER_ROWS}
            rows.append(lay)
    cols = {"t": times[: len(rows)] if times.size else np.full(len(rows), np.nan)}
    for key in LAYER_LENGTHS + LAYER_ROWS:
        cols[key] = np.array([r.get(key, math.nan) for r in rows], dtype=float)
    if thumbnails is not None and thumbs:
        idx = [k for k, _ in thumbs]
        thumbnails["t"] = np.array([cols["t"][k] for k in idx], float)
        thumbnails["images"] = np.stack([img for _, img in thumbs])
        thumbnails["index"] = np.array(idx)
        for key in LAYER_ROWS:
            thumbnails[key] = cols[key][idx]
    return cols


def cell_columns(run: RunData, streams=("cell", "primary")) -> dict[str, np.ndarray]:
    """The cell readings of a run merged in time: t, force, ewe, current, charge, elapsed."""
    keys = {
        "force": "force_force",
        "ewe": "pstat_ewe",
        "current": "pstat_current",
        "charge": "pstat_charge",
        "elapsed": "pstat_elapsed",
    }
    parts = []
    for stream in streams:
        t = run.numeric(stream, "clock_time")
        if t.size == 0 or "force_force" not in (run.columns.get(stream) or {}):
            continue
        cols = {"t": t}
        for name, key in keys.items():
            v = run.numeric(stream, key)
            cols[name] = v if v.size == t.size else np.full(t.size, np.nan)
        parts.append(cols)
    if not parts:
        return {k: np.zeros(0) for k in ("t", *keys)}
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(out["t"], kind="stable")
    out = {k: v[order] for k, v in out.items()}
    # the same instant read twice (radiogram + cell sample): keep one
    keep = (
        np.concatenate([[True], np.diff(out["t"]) > 1e-6]) if out["t"].size else np.zeros(0, bool)
    )
    return {k: v[keep] for k, v in out.items()}


def technique_times(cell: dict) -> tuple[float, float, float]:
    """(start, end, final charge) of the current step from elapsed/charge samples."""
    t, cur, el, q = cell["t"], cell["current"], cell["elapsed"], cell["charge"]
    on = np.isfinite(cur) & (np.abs(cur) > 0) & np.isfinite(el)
    if not on.any():
        return math.nan, math.nan, math.nan
    t0 = float(np.median(t[on] - el[on]))
    after = (t >= t0 - 1e-3) & np.isfinite(el)
    k = int(np.argmax(np.where(after, el, -np.inf)))
    t1 = t0 + float(el[k])
    qa = np.where(after & np.isfinite(q), q, np.nan)
    charge = float(qa[np.nanargmax(np.abs(qa))]) if np.any(np.isfinite(qa)) else math.nan
    return t0, t1, charge


def detect_short(
    cell: dict, t_on: float, t_off: float, duration: float, reason: str
) -> tuple[bool, dict]:
    """Whether (and where) the plating run shorted: the potential collapsing under
    current, else the end of an early-stopped current step with the potential
    gone (see ``docs/reduction-xct.md``)."""
    t, e, i = cell["t"], cell["ewe"], cell["current"]
    out = {"t": None, "method": None, "bounds": None}
    by_reason = "short circuit" in (reason or "").lower()
    ok = np.isfinite(t) & np.isfinite(e) & np.isfinite(i)
    if ok.sum() >= 4:
        ts = cellmod.locate_short(t[ok], e[ok], i[ok])
        if ts is not None:
            out.update(
                t=float(ts),
                method="potential collapse under current",
                bounds=[float(ts), float(ts)],
            )
            return True, out
    if not (np.isfinite(t_on) and np.isfinite(t_off)):
        return by_reason, out
    early = (t_off - t_on) < duration - max(60.0, 0.01 * duration)
    before = np.flatnonzero(ok & (t <= t_off + 1e-6) & (np.abs(i) > 0))
    after = np.flatnonzero(ok & (t >= t_off - 1e-6) & (np.abs(i) == 0))
    collapsed = False
    if before.size and after.size:
        e_last = abs(float(e[before[-1]]))
        e_next = abs(float(e[after[0]]))
        collapsed = e_last > 5e-3 and e_next < 0.05 * e_last
    if by_reason or (early and collapsed):
        out.update(
            t=float(t_off),
            method="end of the current step (lower potential limit)",
            bounds=[
                float(t[before[-1]]) if before.size else float(t_on),
                float(t[after[0]]) if after.size else float(t_off),
            ],
        )
        return True, out
    return False, out


def reduce_plating(run: RunData, params: ReductionParameters | None = None) -> PlatingResult:
    """Reduce a plating run (see the module doc)."""
    params = params or ReductionParameters()
    t0 = _time.perf_counter()
    det = run.detector()
    pix = float(det["pixel_um"])
    s = run.start
    diameter = float(s.get("electrode_diameter_mm") or params.nominal_diameter_mm)
    res = PlatingResult(
        uid=run.uid,
        experiment_id=run.experiment_id,
        cycle=run.cycle,
        start=dict(s),
        stop=dict(run.stop),
        detector=det,
        pixel_um=pix,
        current_density_uA_cm2=float(s.get("current_density_uA_cm2", math.nan)),
        current_a=float(s.get("current_A", math.nan)),
        electrode_diameter_mm=diameter,
        duration_s=float(s.get("duration_s", math.nan)),
        reason=str(run.stop.get("reason", "")),
    )
    flat, dark = dark_flat(run)
    res.radiograms = radiogram_layers(run, flat, dark, pix, params, thumbnails=res.thumbnails)
    res.cell = cell_columns(run)
    t_on, t_off, charge = technique_times(res.cell)
    res.t_technique_start, res.t_technique_end, res.charge_c = t_on, t_off, charge
    if np.isfinite(charge):
        res.plated_um = float(
            cellmod.plated_thickness_um(charge, cellmod.electrode_area_cm2(diameter))
        )
    res.shorted, res.short = detect_short(res.cell, t_on, t_off, res.duration_s, res.reason)
    res.timings["total"] = _time.perf_counter() - t0
    return res


def reduce_run(run: RunData, params: ReductionParameters | None = None):
    """:func:`reduce_scan` or :func:`reduce_plating` by the run's ``step``; None for
    runs the XCT reduction does not reduce."""
    if not accepts(run.start):
        return None
    if run.step == "plating":
        return reduce_plating(run, params)
    return reduce_scan(run, params)
