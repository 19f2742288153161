"""Reduction of a scanning operando SAXS/WAXS experiment, shared by the live
callback (:mod:`operando.callbacks.saxs_live`) and the offline re-reduction
(:mod:`operando.callbacks.saxs_offline`).

Nothing here imports the simulators: every number comes from the frames, the
geometry recorded in the run, the electrochemistry recorded in the events and
public crystallography.  The maths is :mod:`operando.callbacks.scattering`; this
module organises it per raster and per experiment and writes it to Tiled.

What is computed (SPEC "Experiment 2", Reduction)
-------------------------------------------------
Per frame
    Azimuthal integration with pyFAI, q in nm⁻¹, ``npt`` bins, Poisson errors
    (:func:`reduce_frames`).  SAXS pixels behind the beamstop (radius from the
    descriptor's ``saxs_cam_beamstop_radius``) and detector gaps (< 0) are
    masked.
Background (``step="background"``)
    Mean I(q) of the empty-cell frames, and the mean diode transmission.
Background subtraction (every OCV / operando point)
    I − s·I_bg with s = T_point / T_bg, the diode transmission at the point over
    that of the empty cell: the windows' scattering reaches the detector
    attenuated by whatever else is in the beam.  ``s = 1`` when a diode reading
    is missing.  σ = √(σ² + (s σ_bg)²).
OCV reference (``step="ocv"``)
    Per raster point (= per pixel of the map), the mean background-subtracted
    curve over the OCV rasters received *before the first operando raster*
    (later OCV rasters are reduced but do not change the reference, so live and
    offline agree).  Points are matched by their grid index, computed from the
    stage positions and the start document's ``extents`` (falls back on the
    acquisition order and ``snaking``).  Without any OCV raster the first
    operando raster of the same grid is the reference.
Operando rasters
    * ``waxs_norm``: WAXS divided, q bin by q bin, by the point's OCV reference.
    * ``li2s_map``: mean of I/I_ref − 1 over 18.3–20.8 nm⁻¹
      (:func:`scattering.li2s_map`), 0 at the initial state.
    * ``saxs_map``: ∫ I dq over 0.2–1 nm⁻¹ relative to the same integral of the
      OCV reference (ratio − 1; 0 = unchanged).
    * ``li2s_size_nm``: Scherrer size of Li2S at every point whose ``li2s_map``
      exceeds ``size_min_signal``: the difference I − I_ref is fitted with the
      Li2S (111) reflection and its (200), (220), (311), (222) satellites sharing
      one width (:func:`scattering.li2s_fit`); L = 2πK/√(Δq² − Δq_instr²).
      ``li2s_q111`` (fitted (111) centre) is kept per point.
Instrumental width (choice)
    Estimated from the data: the Li6PS5Cl (argyrodite, a = 9.85 Å) reflections in
    the summed OCV reference are fitted (Gaussian + line, ±0.4 nm⁻¹) and the
    median FWHM of the well-determined ones is taken.  This is an upper bound of
    the instrumental width (it contains the argyrodite's own size broadening,
    ≈0.11 nm⁻¹ for 50 nm grains) and includes the parallax of the 1 mm deep
    sample, which dominates and which the pixel size alone would miss (pyFAI's
    per-pixel q width near 19 nm⁻¹ is only ≈0.045 nm⁻¹).  For 1–2 nm Li2S
    (FWHM 3–7 nm⁻¹) removing 0.15 or 0.19 nm⁻¹ in quadrature changes the size by
    < 0.2 %.  ``ReductionParameters.instrument_fwhm`` overrides it; when no
    reflection can be fitted 0 is used and the metadata say so.
State of discharge (SODC)
    Q_net / Q₁: Q_net the net discharged capacity at the point, built from the
    events' ``pstat_capacity`` (capacity in the present half cycle) and
    ``pstat_half_cycle`` (0 = first discharge; even = discharge, odd = charge):
    Q_net = Σ_{h<H} ±Q_end(h) ± capacity, with Q_end(h) the largest capacity seen
    in half cycle h; Q₁ = Q_end(0), the first discharge's capacity.  Q₁ is known
    only once the first discharge has ended, i.e. once an event with
    ``half_cycle ≥ 1`` has been seen.  **Live**, until then the SODC of every
    point with Q_net > 0 is NaN (points at Q_net = 0, e.g. the OCV rasters, are
    0); when the first charge event arrives the live reducer recomputes the SODC
    of all earlier points and rewrites their ``points`` tables (metadata
    ``sodc_final`` turns true).  **Offline** sees all runs at once and gives the
    same numbers as live at the end of the experiment.  The events sample the
    electrochemistry only at raster points: Q₁ is the last first-discharge
    capacity a raster saw (rasters back to back miss the end of the discharge by
    less than one raster's duration), and every half cycle must be seen by at
    least one raster.

Tiled layout (``reduced`` container, see :func:`write_raster`,
:func:`write_experiment`)
---------------------------------------------------------------------
``reduced/<raw uid>`` — one container per reduced raw run; metadata ``raw_uid``,
``experiment_id``, ``step``, ``cycle``, ``raster_index``, ``technique``,
``shape``, ``extents``, ``npoints``, ``reduction`` (``name``, ``version``,
``mode`` live/offline, ``reduced_at``, ``parameters``, ``instrument_fwhm_nm``
and its source), ``background_uid``, ``reference_uids``, ``sodc_final``,
``q1_mah``, ``units``.  Arrays: ``q_saxs`` (nq), ``saxs`` (npoints, nq), ``saxs_sigma``,
``q_waxs``, ``waxs``, ``waxs_sigma`` (background-subtracted for OCV and operando
rasters, as measured for the background), and for operando rasters
``waxs_norm`` (npoints, nq), ``li2s_map``, ``saxs_map``, ``li2s_size_nm``
(ny, nx; row 0 = the first y of the raster, column 0 = the first x).  Table
``points`` (acquisition order): ``seq_num``, ``time``, ``x``, ``y``, ``row``,
``col``, ``ewe``, ``current``, ``capacity``, ``half_cycle``, ``diode``,
``sodc``, ``li2s``, ``li2s_size_nm``, ``li2s_q111``.

``reduced/<experiment_id>`` — the time series and the figures' data: tables
``timeseries`` (every OCV/operando point: the columns above plus ``raw_uid``,
``step``, ``raster_index``) and ``rasters`` (one row per OCV/operando raster:
times, mean SODC, mean/max Li2S signal, Li2S size max/median, SAXS change);
arrays ``q_saxs``, ``q_waxs``, ``waterfall_saxs``, ``waterfall_waxs``,
``waterfall_waxs_norm`` (rasters x nq: the chosen pixel's background-subtracted
curves, and its WAXS over its OCV reference; metadata ``pixel``, ``time``),
``li2s_maps``, ``saxs_maps``, ``li2s_size_maps`` (operando rasters x ny x nx;
metadata ``sodc``, ``time``, ``uids``).  Metadata: ``runs``, ``q1_mah``,
``sodc_final``, ``pixel``, ``figures`` (paths), ``reduction``.  Live, it is
rewritten after every operando raster and at the end of the experiment.

Writing replaces: a run's container is deleted and written anew (one create,
≤ 11 array/table writes), the experiment container likewise; the ``reduction``
metadata (``mode`` live/offline, ``reduced_at``) tell which reduction is there.
"""

from __future__ import annotations

import json
import logging
import math
import time as _time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np

from .core import json_safe, replace_container

from . import scattering as sc

__all__ = [
    "REDUCTION_NAME",
    "REDUCTION_VERSION",
    "LPSC_A_NM",
    "ReductionParameters",
    "DetectorConfig",
    "RasterData",
    "RasterResult",
    "ExperimentReduction",
    "reduce_frames",
    "integrate_frame",
    "detector_configs",
    "grid_indices",
    "instrument_fwhm_from_reference",
    "net_capacity",
    "write_raster",
    "write_experiment",
    "update_points",
]

logger = logging.getLogger(__name__)

REDUCTION_NAME = "operando.saxs_waxs"
REDUCTION_VERSION = "1.0"
#: Li6PS5Cl argyrodite lattice parameter (nm), F-43m: the stable reflections
LPSC_A_NM = 0.985
REDUCED_STEPS = ("background", "ocv", "operando")


# --------------------------------------------------------------------------------------
# parameters and detector configuration
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReductionParameters:
    """Every choice of the reduction (recorded in each node's ``reduction`` metadata)."""

    npt: int = 1000
    li2s_window: tuple[float, float] = sc.LI2S_WINDOW
    saxs_window: tuple[float, float] = sc.SAXS_WINDOW
    scherrer_k: float = 0.9
    #: nm⁻¹; None: estimated from the Li6PS5Cl reflections of the OCV reference
    instrument_fwhm: float | None = None
    #: relative Li2S signal (li2s_map) above which a point's size is fitted
    size_min_signal: float = 0.02
    #: scale the empty-cell background by the diode transmission ratio
    background_transmission_scale: bool = True

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(unit="q_nm^-1", method=["full", "csr", "cython"], error_model="poisson")
        return json_safe(d)


@dataclass(frozen=True)
class DetectorConfig:
    """What the reduction needs of one detector: its pyFAI geometry and beamstop."""

    geometry: dict
    beamstop_radius: float = 0.0
    poni_file: str = ""

    def mask(self):
        return sc.beamstop_mask(self.geometry, self.beamstop_radius) if self.beamstop_radius > 0 else None

    def warm_up(self, npt: int) -> None:
        """Build pyFAI's integrator and CSR engine (0.2–1 s the first time)."""
        ai = sc._integrator(self.geometry)
        integrate_frame(np.zeros(ai.detector.shape, np.int32), self, npt)


def _parse_geometry(value) -> dict | None:
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return dict(value)
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return None


def detector_configs(configuration: dict) -> dict[str, DetectorConfig]:
    """``{"saxs": DetectorConfig, "waxs": ...}`` from a descriptor's ``configuration``
    (``configuration[role]["data"][f"{role}_cam_geometry"]`` etc.).  A detector
    whose geometry is missing falls back on its PONI file; absent detectors are
    left out."""
    out = {}
    for role in ("saxs", "waxs"):
        data = (configuration or {}).get(role, {}).get("data", {})
        geo = _parse_geometry(data.get(f"{role}_cam_geometry"))
        poni = str(data.get(f"{role}_cam_poni_file") or "")
        if geo is None and poni:
            import pyFAI

            geo = json_safe(pyFAI.load(poni).get_config())
        if geo is None:
            continue
        radius = float(data.get(f"{role}_cam_beamstop_radius") or 0.0)
        out[role] = DetectorConfig(geometry=geo, beamstop_radius=radius, poni_file=poni)
    return out


# --------------------------------------------------------------------------------------
# frames → curves
# --------------------------------------------------------------------------------------

def integrate_frame(frame, detector: DetectorConfig, npt: int):
    """One frame → ``(q, I, σ)`` (q in nm⁻¹), beamstop masked."""
    return sc.integrate(np.asarray(frame), detector.geometry, npt, mask=detector.mask())


def _as_config(geometry, beamstop_radius) -> DetectorConfig:
    if isinstance(geometry, DetectorConfig):
        return geometry
    geo = _parse_geometry(geometry) if not isinstance(geometry, str) or geometry.lstrip().startswith("{") \
        else None
    if geo is None:  # a PONI file path
        import pyFAI

        geo = json_safe(pyFAI.load(str(geometry)).get_config())
    return DetectorConfig(geometry=geo, beamstop_radius=float(beamstop_radius or 0.0))


def _stack(frames, det: DetectorConfig | None, npt: int):
    if det is None or frames is None:
        return None, None, None
    rows = [integrate_frame(f, det, npt) for f in frames]
    if not rows:
        return np.empty(0), np.empty((0, npt)), np.empty((0, npt))
    return rows[0][0], np.array([r[1] for r in rows]), np.array([r[2] for r in rows])


def reduce_frames(saxs_frames, waxs_frames, saxs_geometry, waxs_geometry, *,
                  beamstop_radius=0.0, npt: int = 1000):
    """Integrate SAXS and WAXS frames: ``(q_s, I_s, σ_s, q_w, I_w, σ_w)``.

    ``*_frames``: iterables of 2-D frames (or an (n, rows, cols) array); None
    skips that detector (its three outputs are None).  ``*_geometry``: a pyFAI
    geometry dict, its JSON, a PONI file path or a :class:`DetectorConfig`.
    ``beamstop_radius`` (m): the SAXS beamstop, or ``(saxs, waxs)``.  Curves are
    (n, npt); q in nm⁻¹.
    """
    if isinstance(beamstop_radius, (tuple, list)):
        r_s, r_w = beamstop_radius
    else:
        r_s, r_w = beamstop_radius, 0.0
    s = _as_config(saxs_geometry, r_s) if saxs_frames is not None else None
    w = _as_config(waxs_geometry, r_w) if waxs_frames is not None else None
    return (*_stack(saxs_frames, s, npt), *_stack(waxs_frames, w, npt))


# --------------------------------------------------------------------------------------
# one raster
# --------------------------------------------------------------------------------------

def grid_indices(x, y, shape, extents=None, snaking=None) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of every point, from the stage positions and the grid's
    ``extents`` [[y0, y1], [x0, x1]] (bluesky ``grid_scan``); if positions or
    extents are missing, or two points land on one cell, from the acquisition
    order (rows first, ``snaking[1]`` reversing odd rows)."""
    ny, nx = (int(v) for v in shape)
    n = len(x)
    x = np.asarray(x, float)
    y = np.asarray(y, float)

    def axis(v, lo, hi, m):
        if m <= 1 or hi == lo:
            return np.zeros(len(v), int)
        return np.clip(np.rint((v - lo) / (hi - lo) * (m - 1)), 0, m - 1).astype(int)

    if extents is not None and len(extents) == 2 and np.all(np.isfinite(x)) and np.all(np.isfinite(y)):
        (y0, y1), (x0, x1) = (tuple(map(float, e)) for e in extents)
        rows, cols = axis(y, y0, y1, ny), axis(x, x0, x1, nx)
        if len(set(zip(rows.tolist(), cols.tolist()))) == n:
            return rows, cols
    k = np.arange(n)
    rows, cols = k // nx, k % nx
    if snaking is not None and len(snaking) > 1 and snaking[1]:
        odd = rows % 2 == 1
        cols = np.where(odd, nx - 1 - cols, cols)
    return rows, cols


_POINT_KEYS = {
    "time": "clock_time", "x": "stage_x", "y": "stage_y", "ewe": "pstat_ewe",
    "current": "pstat_current", "capacity": "pstat_capacity", "half_cycle": "pstat_half_cycle",
    "diode": "diode_trans",
}


@dataclass
class RasterData:
    """One raw run, integrated: per point I(q) of both detectors and the point's
    position, cell time, electrochemistry and transmission (acquisition order)."""

    uid: str
    experiment_id: str
    step: str
    cycle: int | None
    raster_index: int | None
    shape: tuple[int, int]
    q_saxs: np.ndarray | None
    saxs: np.ndarray | None
    saxs_sigma: np.ndarray | None
    q_waxs: np.ndarray | None
    waxs: np.ndarray | None
    waxs_sigma: np.ndarray | None
    x: np.ndarray
    y: np.ndarray
    time: np.ndarray
    ewe: np.ndarray
    current: np.ndarray
    capacity: np.ndarray
    half_cycle: np.ndarray
    diode: np.ndarray
    seq_num: np.ndarray
    extents: list | None = None
    snaking: list | None = None
    technique: str = "saxs_waxs"

    @property
    def n(self) -> int:
        return len(self.time)

    @classmethod
    def from_columns(cls, start: dict, columns: dict, curves) -> "RasterData":
        """Build from a start document, event columns (data keys → arrays, as in
        the primary stream) and ``reduce_frames`` output."""
        q_s, i_s, s_s, q_w, i_w, s_w = curves
        n = len(i_s) if i_s is not None else len(i_w)
        cols = {}
        for name, key in _POINT_KEYS.items():
            v = columns.get(key)
            arr = np.full(n, np.nan) if v is None else np.asarray(v, float).reshape(-1)[:n]
            if len(arr) < n:
                arr = np.concatenate([arr, np.full(n - len(arr), np.nan)])
            cols[name] = arr
        seq = columns.get("seq_num")
        seq = np.arange(1, n + 1) if seq is None else np.asarray(seq, int)[:n]
        shape = start.get("shape")
        if shape is None or len(shape) != 2 or int(shape[0]) * int(shape[1]) < n:
            shape = (1, n)
        return cls(
            uid=start["uid"], experiment_id=str(start.get("experiment_id") or ""),
            step=str(start.get("step") or ""), cycle=start.get("cycle"),
            raster_index=start.get("raster_index"), shape=(int(shape[0]), int(shape[1])),
            q_saxs=q_s, saxs=i_s, saxs_sigma=s_s, q_waxs=q_w, waxs=i_w, waxs_sigma=s_w,
            seq_num=seq, extents=start.get("extents"), snaking=start.get("snaking"),
            technique=str(start.get("technique") or "saxs_waxs"), **cols,
        )

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of each point (:func:`grid_indices`)."""
        return grid_indices(self.x, self.y, self.shape, self.extents, self.snaking)

    def flat_index(self) -> np.ndarray:
        rows, cols = self.grid()
        return rows * self.shape[1] + cols

    def to_grid(self, curves: np.ndarray) -> np.ndarray:
        """Per-point curves (n, nq) → grid order (ny·nx, nq), NaN where not measured."""
        out = np.full((self.shape[0] * self.shape[1],) + curves.shape[1:], np.nan)
        out[self.flat_index()] = curves
        return out

    def map_of(self, values) -> np.ndarray:
        """Per-point values → (ny, nx) map, NaN where not measured."""
        out = np.full(self.shape[0] * self.shape[1], np.nan)
        out[self.flat_index()] = np.asarray(values, float)
        return out.reshape(self.shape)


@dataclass
class RasterResult:
    """A reduced raster: background-subtracted curves (acquisition order), the
    per-point values and, for operando rasters, the maps."""

    raster: RasterData
    saxs: np.ndarray | None
    saxs_sigma: np.ndarray | None
    waxs: np.ndarray | None
    waxs_sigma: np.ndarray | None
    background_uid: str | None = None
    reference_uids: list = field(default_factory=list)
    waxs_norm: np.ndarray | None = None
    li2s_map: np.ndarray | None = None
    saxs_map: np.ndarray | None = None
    li2s_size_map: np.ndarray | None = None
    li2s_q111_map: np.ndarray | None = None
    sodc: np.ndarray | None = None

    @property
    def uid(self) -> str:
        return self.raster.uid

    def points(self) -> dict[str, np.ndarray]:
        """The ``points`` table (acquisition order)."""
        r = self.raster
        rows, cols = r.grid()
        flat = rows * r.shape[1] + cols

        def at(m):
            return np.full(r.n, np.nan) if m is None else np.asarray(m, float).reshape(-1)[flat]

        return {
            "seq_num": np.asarray(r.seq_num, np.int64), "time": r.time, "x": r.x, "y": r.y,
            "row": rows.astype(np.int64), "col": cols.astype(np.int64), "ewe": r.ewe,
            "current": r.current, "capacity": r.capacity, "half_cycle": r.half_cycle,
            "diode": r.diode,
            "sodc": np.full(r.n, np.nan) if self.sodc is None else np.asarray(self.sodc, float),
            "li2s": at(self.li2s_map), "li2s_size_nm": at(self.li2s_size_map),
            "li2s_q111": at(self.li2s_q111_map),
        }


# --------------------------------------------------------------------------------------
# electrochemistry
# --------------------------------------------------------------------------------------

def net_capacity(half_cycle, capacity) -> tuple[np.ndarray, float, bool]:
    """Net discharged capacity (mAh) at each sample, the first discharge's
    capacity Q₁ and whether Q₁ is final (see the module doc, "State of
    discharge").  Independent of the samples' order; half cycles never sampled
    count as 0."""
    h = np.asarray(half_cycle, float)
    c = np.asarray(capacity, float)
    ok = np.isfinite(h) & np.isfinite(c)
    hs = h[ok].astype(int)
    ends: dict[int, float] = {}
    for hh, cc in zip(hs, c[ok]):
        ends[hh] = max(ends.get(hh, 0.0), float(cc))
    final = bool(len(hs) and hs.max() >= 1)
    q1 = ends.get(0, math.nan)
    offsets = {}
    acc = 0.0
    for hh in range(int(hs.max()) + 1 if len(hs) else 0):
        offsets[hh] = acc
        acc += (1.0 if hh % 2 == 0 else -1.0) * ends.get(hh, 0.0)
    out = np.full(len(h), np.nan)
    for k in np.where(ok)[0]:
        hh = int(h[k])
        out[k] = offsets[hh] + (1.0 if hh % 2 == 0 else -1.0) * c[k]
    return out, q1, final


def _sodc(q_net, q1, final) -> np.ndarray:
    q_net = np.asarray(q_net, float)
    out = np.full(q_net.shape, np.nan)
    out[q_net == 0] = 0.0
    if final and q1 > 0:
        out = q_net / q1
    return out


# --------------------------------------------------------------------------------------
# instrumental width
# --------------------------------------------------------------------------------------

def lpsc_reflections(q_lo: float, q_hi: float, a_nm: float = LPSC_A_NM) -> list[float]:
    """q (nm⁻¹) of the F-centred cubic reflections of Li6PS5Cl in [q_lo, q_hi]."""
    out = set()
    for h in range(0, 12):
        for k in range(0, h + 1):
            for l in range(0, k + 1):
                if (h + k + l) == 0 or len({h % 2, k % 2, l % 2}) != 1:
                    continue
                q = 2 * math.pi * math.sqrt(h * h + k * k + l * l) / a_nm
                if q_lo <= q <= q_hi:
                    out.add(round(q, 6))
    return sorted(out)


def instrument_fwhm_from_reference(q, intensity, sigma=None, *, a_nm: float = LPSC_A_NM,
                                   half_window: float = 0.4) -> float:
    """Instrumental FWHM (nm⁻¹) from the Li6PS5Cl reflections of a (summed) OCV
    WAXS curve: median fitted FWHM of the isolated, well-determined reflections;
    NaN if none could be fitted.  See the module doc for why this is the choice."""
    q = np.asarray(q, float)
    y = np.asarray(intensity, float)
    fin = q[np.isfinite(y) & (y > 0)]
    if fin.size < 20:
        return math.nan
    peaks = lpsc_reflections(fin[0] + half_window, fin[-1] - half_window, a_nm)
    widths = []
    for k, q0 in enumerate(peaks):
        near = [p for j, p in enumerate(peaks) if j != k and abs(p - q0) < 2 * half_window]
        if near:
            continue
        try:
            fit = sc.fit_peak(q, y, (q0 - half_window, q0 + half_window), sigma=sigma,
                              center_guess=q0, fwhm_guess=0.2, fwhm_bounds=(0.01, 0.6))
        except (ValueError, RuntimeError):
            continue
        if (fit.success and abs(fit.center - q0) < 0.1 and fit.area > 0
                and np.isfinite(fit.fwhm_err) and fit.fwhm_err < 0.1 * fit.fwhm):
            widths.append(fit.fwhm)
    return float(np.median(widths)) if widths else math.nan


# --------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------

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


class ExperimentReduction:
    """Accumulates one experiment's rasters (background, OCV, operando) and
    reduces each as it comes (:meth:`add`); see the module doc for the maths.

    ``pixel``: (row, col) of the raster point whose curves make the waterfalls
    (default: the grid centre, ``(ny // 2, nx // 2)``).
    """

    def __init__(self, experiment_id: str, parameters: ReductionParameters | None = None, *,
                 pixel: tuple[int, int] | None = None, mode: str = "live"):
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
        result = self._subtract(raster)
        if raster.step == "ocv" and not self._ref_frozen:
            self._ocv.setdefault(tuple(raster.shape), []).append(result)
            self._rebuild_reference(tuple(raster.shape))
        if raster.step == "operando":
            self._ref_frozen = True
            self._operando(result)
        self.results[raster.uid] = result
        self.changed_sodc = [u for u in self._update_sodc() if u != raster.uid]
        return result

    def _add_background(self, raster: RasterData) -> RasterResult:
        result = RasterResult(raster, raster.saxs, raster.saxs_sigma, raster.waxs, raster.waxs_sigma)
        result.sodc = np.full(raster.n, np.nan)
        if self._bg_frozen:
            logger.warning("background run %s after the first raster: not used", raster.uid)
            return result
        prev = self.background
        frames = {"saxs": raster.saxs, "waxs": raster.waxs}
        sig = {"saxs": raster.saxs_sigma, "waxs": raster.waxs_sigma}
        bg = {"uids": (prev["uids"] if prev else []) + [raster.uid],
              "curves": dict(prev["curves"]) if prev else {},
              "diode": list(prev["diode"]) if prev else []}
        for role in ("saxs", "waxs"):
            if frames[role] is None:
                continue
            old = bg["curves"].get(role, ([], []))
            bg["curves"][role] = (list(old[0]) + list(frames[role]), list(old[1]) + list(sig[role]))
        bg["diode"] += [float(v) for v in raster.diode if np.isfinite(v)]
        self.background = bg
        return result

    def background_curve(self, role: str):
        """(mean I, σ of the mean) of the empty cell, or None."""
        if not self.background or role not in self.background["curves"]:
            return None
        curves, sigmas = self.background["curves"][role]
        return _nan_mean(curves), _nan_sigma_of_mean(sigmas)

    def _subtract(self, raster: RasterData) -> RasterResult:
        bg_uid = None
        scale = np.ones(raster.n)
        if self.background:
            bg_uid = self.background["uids"][0]
            t_bg = float(np.mean(self.background["diode"])) if self.background["diode"] else math.nan
            if self.parameters.background_transmission_scale and t_bg > 0:
                s = raster.diode / t_bg
                scale = np.where(np.isfinite(s) & (s >= 0), s, 1.0)
        out = {}
        for role in ("saxs", "waxs"):
            cur, sig = getattr(raster, role), getattr(raster, f"{role}_sigma")
            bg = self.background_curve(role)
            if cur is None or bg is None:
                out[role], out[f"{role}_sigma"] = cur, sig
                continue
            out[role] = cur - scale[:, None] * bg[0][None, :]
            out[f"{role}_sigma"] = np.sqrt(sig**2 + (scale[:, None] * bg[1][None, :]) ** 2)
        res = RasterResult(raster, out["saxs"], out["saxs_sigma"], out["waxs"], out["waxs_sigma"],
                           background_uid=bg_uid)
        return res

    def _rebuild_reference(self, shape: tuple) -> None:
        results = self._ocv[shape]
        ref = {"uids": [r.uid for r in results]}
        for role in ("saxs", "waxs"):
            if any(getattr(r, role) is None for r in results):
                continue
            curves = [r.raster.to_grid(getattr(r, role)) for r in results]
            sigmas = [r.raster.to_grid(getattr(r, f"{role}_sigma")) for r in results]
            ref[role] = _nan_mean(curves)
            ref[f"{role}_sigma"] = _nan_sigma_of_mean(sigmas)
            ref[f"q_{role}"] = getattr(results[0].raster, f"q_{role}")
        self._references[shape] = ref
        if self.parameters.instrument_fwhm is None and "waxs" in ref:
            total = np.nansum(ref["waxs"], axis=0)
            sig = np.sqrt(np.nansum(ref["waxs_sigma"] ** 2, axis=0))
            fwhm = instrument_fwhm_from_reference(ref["q_waxs"], total, sig)
            if np.isfinite(fwhm):
                self.instrument_fwhm, self.instrument_fwhm_source = fwhm, "Li6PS5Cl reflections (OCV)"
            else:
                self.instrument_fwhm, self.instrument_fwhm_source = 0.0, "none found (0 used)"

    def reference(self, shape) -> dict | None:
        return self._references.get(tuple(shape))

    def _operando(self, res: RasterResult) -> None:
        r = res.raster
        p = self.parameters
        shape = tuple(r.shape)
        if shape not in self._references:
            logger.warning("no OCV reference for a %s grid: the first operando raster (%s) is the "
                           "initial state", shape, r.uid)
            self._ocv.setdefault(shape, []).append(res)
            self._rebuild_reference(shape)
        ref = self._references[shape]
        res.reference_uids = list(ref["uids"])
        flat = r.flat_index()
        if res.saxs is not None and "saxs" in ref:
            try:
                res.saxs_map = sc.saxs_map(r.q_saxs, r.to_grid(res.saxs), shape, window=p.saxs_window,
                                           reference=ref["saxs"])
            except ValueError as err:  # the window outside this detector's q range
                logger.warning("no SAXS map for %s: %s", r.uid, err)
        if res.waxs is None or "waxs" not in ref:
            return
        q = r.q_waxs
        ref_pts = ref["waxs"][flat]
        ref_sig = ref["waxs_sigma"][flat]
        res.waxs_norm = sc.normalize_to_reference(res.waxs, ref_pts)
        try:
            res.li2s_map = sc.li2s_map(q, r.to_grid(res.waxs), ref["waxs"], shape, window=p.li2s_window)
        except ValueError as err:
            logger.warning("no Li2S map for %s: %s", r.uid, err)
            return
        sizes = np.full(r.n, np.nan)
        centres = np.full(r.n, np.nan)
        instr = self.instrument_fwhm or 0.0
        lm = res.li2s_map.reshape(-1)
        for k in range(r.n):
            if not (np.isfinite(lm[flat[k]]) and lm[flat[k]] > p.size_min_signal):
                continue
            diff = res.waxs[k] - ref_pts[k]
            sig = np.hypot(res.waxs_sigma[k], ref_sig[k])
            ok = np.isfinite(diff) & np.isfinite(sig) & (sig > 0)
            try:
                fit = sc.li2s_fit(q[ok], diff[ok], sigma=sig[ok])
            except (RuntimeError, ValueError):
                continue
            if not (fit.success and fit.area > 0 and np.isfinite(fit.fwhm_err)
                    and fit.fwhm_err < 0.25 * fit.fwhm and abs(fit.center - sc.LI2S_Q111) < 1.0):
                continue
            w2 = fit.fwhm**2 - instr**2
            sizes[k] = 2 * math.pi * p.scherrer_k / math.sqrt(w2) if w2 > 0 else math.inf
            centres[k] = fit.center
        res.li2s_size_map = r.map_of(sizes)
        res.li2s_q111_map = r.map_of(centres)

    def _update_sodc(self) -> list[str]:
        reduced = [res for res in self.results.values() if res.raster.step in ("ocv", "operando")]
        if not reduced:
            return []
        h = np.concatenate([res.raster.half_cycle for res in reduced])
        c = np.concatenate([res.raster.capacity for res in reduced])
        q_net, self.q1_mah, self.sodc_final = net_capacity(h, c)
        sodc = _sodc(q_net, self.q1_mah, self.sodc_final)
        changed = []
        k = 0
        for res in reduced:
            new = sodc[k:k + res.raster.n]
            k += res.raster.n
            if res.sodc is None or not np.array_equal(res.sodc, new, equal_nan=True):
                if res.sodc is not None:
                    changed.append(res.uid)
                res.sodc = new
        return changed

    # ------------------------------------------------------------------ output
    def rasters(self, steps=("ocv", "operando")) -> list[RasterResult]:
        """Results of the given steps in time order."""
        out = [r for r in self.results.values() if r.raster.step in steps]
        return sorted(out, key=lambda r: (np.nanmin(r.raster.time) if np.any(np.isfinite(r.raster.time))
                                          else math.inf))

    def chosen_pixel(self) -> tuple[int, int] | None:
        rs = self.rasters()
        if self.pixel is not None:
            return tuple(self.pixel)
        if not rs:
            return None
        ny, nx = rs[-1].raster.shape
        return ny // 2, nx // 2

    def timeseries(self) -> dict[str, np.ndarray]:
        cols: dict[str, list] = {}
        for res in self.rasters():
            pts = res.points()
            pts["raw_uid"] = np.array([res.uid] * res.raster.n)
            pts["step"] = np.array([res.raster.step] * res.raster.n)
            ri = res.raster.raster_index
            pts["raster_index"] = np.full(res.raster.n, -1 if ri is None else int(ri), np.int64)
            for k, v in pts.items():
                cols.setdefault(k, []).append(v)
        return {k: np.concatenate(v) for k, v in cols.items()}

    def raster_table(self) -> dict[str, np.ndarray]:
        rows = []
        for res in self.rasters():
            r = res.raster

            def stat(fn, m):
                m = None if m is None else np.asarray(m, float)
                if m is None or not np.any(np.isfinite(m)):
                    return math.nan
                return float(fn(m[np.isfinite(m)]))

            rows.append({
                "raw_uid": r.uid, "step": r.step, "cycle": -1 if r.cycle is None else int(r.cycle),
                "raster_index": -1 if r.raster_index is None else int(r.raster_index),
                "time_start": stat(np.min, r.time), "time_end": stat(np.max, r.time),
                "time_mid": stat(np.mean, r.time), "capacity_mean": stat(np.mean, r.capacity),
                "ewe_mean": stat(np.mean, r.ewe), "sodc_mean": stat(np.mean, res.sodc),
                "li2s_mean": stat(np.mean, res.li2s_map), "li2s_max": stat(np.max, res.li2s_map),
                "li2s_size_max_nm": stat(np.max, res.li2s_size_map),
                "li2s_size_median_nm": stat(np.median, res.li2s_size_map),
                "saxs_change_mean": stat(np.mean, res.saxs_map),
            })
        if not rows:
            return {}
        return {k: np.array([row[k] for row in rows]) for k in rows[0]}

    def figure_data(self) -> dict[str, Any]:
        """Everything the figures and the experiment container need."""
        rs = self.rasters()
        ops = [r for r in rs if r.raster.step == "operando"]
        pix = self.chosen_pixel()
        out: dict[str, Any] = {"pixel": pix, "timeseries": self.timeseries(),
                               "rasters": self.raster_table()}
        for role in ("saxs", "waxs"):
            have = [r for r in rs if getattr(r, role) is not None]
            if not have or pix is None:
                continue
            out[f"q_{role}"] = getattr(have[0].raster, f"q_{role}")
            wf = []
            for r in have:
                g = r.raster.to_grid(getattr(r, role)) if tuple(r.raster.shape)[0] > pix[0] \
                    and r.raster.shape[1] > pix[1] else None
                wf.append(g[pix[0] * r.raster.shape[1] + pix[1]] if g is not None
                          else np.full(len(out[f"q_{role}"]), np.nan))
            out[f"waterfall_{role}"] = np.array(wf)
            out[f"waterfall_{role}_time"] = np.array([_point_time(r, pix) for r in have])
            if role == "waxs":
                norm = []
                for r, curve in zip(have, wf):
                    ref = self.reference(r.raster.shape)
                    k = pix[0] * r.raster.shape[1] + pix[1]
                    ok = ref is not None and "waxs" in ref and k < len(ref["waxs"])
                    norm.append(sc.normalize_to_reference(curve, ref["waxs"][k]) if ok
                                else np.full(len(curve), np.nan))
                out["waterfall_waxs_norm"] = np.array(norm)
        shapes = {tuple(r.raster.shape) for r in ops}
        if ops and len(shapes) == 1:
            for name, attr in (("li2s_maps", "li2s_map"), ("saxs_maps", "saxs_map"),
                               ("li2s_size_maps", "li2s_size_map")):
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
        return json_safe({
            "name": REDUCTION_NAME, "version": REDUCTION_VERSION, "mode": self.mode,
            "reduced_at": _time.time(), "parameters": self.parameters.as_dict(),
            "instrument_fwhm_nm": self.instrument_fwhm,
            "instrument_fwhm_source": self.instrument_fwhm_source,
        })

    def summary(self) -> dict:
        """Numbers for a report (per raster: SODC, Li2S signal and size)."""
        return json_safe({
            "experiment_id": self.experiment_id,
            "runs": [{"uid": r.uid, "step": r.raster.step, "cycle": r.raster.cycle,
                      "raster_index": r.raster.raster_index, "npoints": r.raster.n}
                     for r in self.results.values()],
            "background_uids": (self.background or {}).get("uids", []),
            "q1_mah": self.q1_mah, "sodc_final": self.sodc_final,
            "instrument_fwhm_nm": self.instrument_fwhm,
            "rasters": {k: v.tolist() for k, v in self.raster_table().items()},
        })


def _nanmean(v) -> float:
    v = np.asarray(v, float) if v is not None else np.array([np.nan])
    return float(np.mean(v[np.isfinite(v)])) if np.any(np.isfinite(v)) else math.nan


def _point_time(res: RasterResult, pix) -> float:
    rows, cols = res.raster.grid()
    hit = np.where((rows == pix[0]) & (cols == pix[1]))[0]
    if hit.size:
        return float(res.raster.time[hit[0]])
    return _nanmean(res.raster.time)


# --------------------------------------------------------------------------------------
# Tiled
# --------------------------------------------------------------------------------------

UNITS = {"q": "nm^-1", "saxs": "counts/sr (pyFAI, solid-angle corrected)", "time": "s (cell clock)",
         "ewe": "V", "current": "A", "capacity": "mAh (present half cycle)", "x": "mm", "y": "mm",
         "li2s": "relative (I/I_OCV - 1, 18.3-20.8 nm^-1)", "saxs_map": "relative to OCV (0.2-1 nm^-1)",
         "li2s_size_nm": "nm", "sodc": "fraction of the first discharge capacity"}


def _run_metadata(res: RasterResult, exp: ExperimentReduction) -> dict:
    r = res.raster
    return json_safe({
        "raw_uid": r.uid, "experiment_id": r.experiment_id, "step": r.step, "cycle": r.cycle,
        "raster_index": r.raster_index, "technique": r.technique, "shape": list(r.shape),
        "extents": r.extents, "npoints": r.n,
        "curves": "as measured" if r.step == "background" else "empty-cell background subtracted",
        "background_uid": res.background_uid, "reference_uids": res.reference_uids,
        "sodc_final": exp.sodc_final, "q1_mah": exp.q1_mah,
        "reduction": exp.reduction_metadata(), "units": UNITS,
    })


def write_raster(reduced, res: RasterResult, exp: ExperimentReduction):
    """Write (replace) ``reduced/<raw uid>``; returns the container client."""
    r = res.raster
    node = replace_container(reduced, r.uid, _run_metadata(res, exp))
    for role in ("saxs", "waxs"):
        if getattr(res, role) is None:
            continue
        node.write_array(np.asarray(getattr(r, f"q_{role}"), float), key=f"q_{role}", dims=["q"])
        node.write_array(np.asarray(getattr(res, role), float), key=role, dims=["point", "q"])
        node.write_array(np.asarray(getattr(res, f"{role}_sigma"), float), key=f"{role}_sigma",
                         dims=["point", "q"])
    if r.step == "operando":
        if res.waxs_norm is not None:
            node.write_array(np.asarray(res.waxs_norm, float), key="waxs_norm", dims=["point", "q"])
        for key, m in (("li2s_map", res.li2s_map), ("saxs_map", res.saxs_map),
                       ("li2s_size_nm", res.li2s_size_map)):
            if m is not None:
                node.write_array(np.asarray(m, float), key=key, dims=["row", "col"])
    node.write_table(res.points(), key="points")
    return node


def update_points(reduced, res: RasterResult, exp: ExperimentReduction) -> None:
    """Rewrite the ``points`` table (same columns) and the SODC metadata of a
    run already written (live: the first discharge has ended)."""
    node = reduced[res.uid]
    node["points"].write(res.points())
    node.update_metadata(metadata={"sodc_final": exp.sodc_final, "q1_mah": json_safe(exp.q1_mah)})


def write_experiment(reduced, exp: ExperimentReduction, *, figures: Iterable[str] = ()):
    """Write (replace) ``reduced/<experiment_id>``; returns the container client
    (None, with nothing written, for an empty experiment id)."""
    if not exp.experiment_id:
        logger.warning("runs without an experiment_id: no experiment container written")
        return None
    data = exp.figure_data()
    md = json_safe({
        "experiment_id": exp.experiment_id, "technique": "saxs_waxs", "kind": "experiment",
        "runs": [{"uid": r.uid, "step": r.raster.step, "cycle": r.raster.cycle,
                  "raster_index": r.raster.raster_index} for r in exp.results.values()],
        "background_uids": (exp.background or {}).get("uids", []),
        "q1_mah": exp.q1_mah, "sodc_final": exp.sodc_final, "pixel": data.get("pixel"),
        "map_uids": data.get("map_uids", []), "reduction": exp.reduction_metadata(),
        "figures": list(figures), "units": UNITS,
    })
    node = replace_container(reduced, exp.experiment_id, md)
    if data["timeseries"]:
        node.write_table(data["timeseries"], key="timeseries")
    if data["rasters"]:
        node.write_table(data["rasters"], key="rasters")
    for role in ("saxs", "waxs"):
        if f"q_{role}" in data:
            node.write_array(np.asarray(data[f"q_{role}"], float), key=f"q_{role}", dims=["q"])
            keys = [f"waterfall_{role}"] + (["waterfall_waxs_norm"] if role == "waxs" else [])
            for key in keys:
                node.write_array(np.asarray(data[key], float), key=key, dims=["raster", "q"],
                                 metadata=json_safe({"pixel": data["pixel"],
                                                      "time": data[f"waterfall_{role}_time"]}))
    for key in ("li2s_maps", "saxs_maps", "li2s_size_maps"):
        if key in data:
            node.write_array(np.asarray(data[key], float), key=key, dims=["raster", "row", "col"],
                             metadata=json_safe({"sodc": data["map_sodc"], "time": data["map_time"],
                                                  "uids": data["map_uids"]}))
    return node
