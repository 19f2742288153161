"""Reduction of the operando X-ray CT experiment, shared by the live callback
(:mod:`operando.callbacks.xct_live`) and the offline re-reduction
(:mod:`operando.callbacks.xct_offline`).

Pure orchestration on arrays: the measurements are
:mod:`~operando.callbacks.tomography`, :mod:`~operando.callbacks.radiography`
and :mod:`~operando.callbacks.cell`; this module applies them to runs, keeps
the experiment's state across runs and writes the results to Tiled. Nothing
here imports the simulators or the acquisition code: every number comes from
the frames, the recorded cell streams and the run metadata.

Runs (``technique="xct"``)
--------------------------
:class:`RunData` holds one run as arrays: the start and stop documents, each
stream's scalar columns, its frames (any array-like ``(n, rows, cols)``: numpy,
an h5py dataset, :class:`~operando.callbacks.runs.FrameStack`, a Tiled array
client) and the descriptor configuration, from which the pixel size at the
sample comes (``configuration["ct_det"]["data"]["ct_det_cam_pixel_size"]``, µm
after binning).

3D scans (``step`` ``scan3d`` or ``postmortem``): :func:`reduce_scan`
    1. Dark/flat correction with the run's own ``dark``/``flat`` streams.
    2. *Which rows.* The mean of 16 projections is read as a radiogram
       (:func:`radiography.analyze`): the Cu current collectors give the stack's
       rows. With ``rows="stack"`` (default) only the stack plus a margin
       (half its height each side, at least 8 rows) is reconstructed: the
       spacers and rods above and below say nothing about the battery, and
       they are 80 % of the detector. ``row0`` records the first detector row
       of the volume. ``rows="all"`` reconstructs everything.
    3. *Centre of rotation* from the electrolyte's rows, where the particles
       make the sinograms change with angle
       (:func:`tomography.find_center_projections`).
    4. :func:`tomography.reconstruct` (DFI, 360° folded onto 180°, stripe
       suppression), a few rows at a time from the files.
    5. *Layers*: :func:`tomography.layer_profile` + :func:`tomography.find_layers`.
       In a volume the Cu coatings are always taken at the PEEK/Li step
       (``cu_snr=inf``): seen edge-on a 0.5 µm coating removes the same
       fraction of a detector row's light at every column, a constant that the
       ramp filter of an interior reconstruction removes, so the coating is not
       in the volume and any narrow peak at the spacer face is ringing of the
       step (taking it biased the top Cu by half a voxel).
    6. *Electrode diameter* (:func:`electrode_measurement`): the Li core from
       :func:`tomography.electrode_geometry` on the rows inside each Li layer
       away from its faces; the crept footprint from the rows next to the Cu
       faces, where the extruded Li lip sits. The lip (15–20 µm) is thinner
       than a binned voxel and its edge lies close to the rim of the field, so
       it is read from the difference of those rows and the core rows (the
       cupping of the interior scan cancels), fitted with a ring of free height
       and outer radius (:func:`_footprint_radius`); ``diameter_um`` is the
       mean footprint of the two electrodes (±2 overview voxels on the test
       data). NaN when the core's edge is not inside the field of view, or is
       in the outer 15 % of its radius (the 3.4 mm operando field is narrower
       than the ø4 mm electrode): the post-mortem overview (5.4 mm) measures it.
    7. *Particles*: :func:`tomography.segment_particles` in the electrolyte's
       rows; positions in µm in the cell frame: ``x``, ``y`` from the rotation
       axis (the volume is the mirror image of the cell, ``y → −y``, see the
       tomography module), ``z`` the height above the bottom Cu face (which
       does not move: the force sensor below is stiff), and the radius.

Plating runs: :func:`reduce_plating`
    Every radiogram (``primary``) as :func:`radiography.analyze` does it (the
    "absorbed" profile of :func:`radiography.vertical_profile`, then
    :func:`tomography.find_layers`) with the run's own darks and flats:
    Cu-to-Cu, top Li, HSE, bottom Li against cell time. The Cu coatings are
    taken at the spacer step here too (``ReductionParameters.cu_peaks``): the
    top-hat test of ``find_layers`` flips between the coating's peak and the
    step as the face crosses a detector row, which made jumps of ~0.6 voxel
    between consecutive radiograms; the step gives a smooth series with a
    constant bias of about the coating's absorption-equivalent thickness
    (measured: Cu-to-Cu −4…−7 µm, top Li −1…−3 µm at 13.6 µm voxels). The cell series (the ``cell`` stream and the radiograms' own
    readings) merged in time. The technique's start and end come from
    ``pstat_elapsed`` (start = clock − elapsed while it runs; elapsed and
    charge freeze when it ends), the charge passed from ``pstat_charge``.
    A short circuit: the potential collapsing under current
    (:func:`cell.locate_short`); when the sampling missed it (the technique
    stops on its lower potential limit within one IOC tick, usually between
    two samples), the end of the current step, bracketed by the last sample
    with current and the first without. The run counts as shorted when its
    stop reason says so, or when it ended early and the potential after it is
    under 5 % of the last polarization (a cell that stops on a potential limit
    relaxes over an hour; a shorted one reads 0 V at once).

Across runs: :class:`ExperimentState`
    * time series of force, potential, current and the cumulative charge of
      the plating steps; plated Li thickness (Faraday, homogeneous over the
      nominal electrode of the start document, as the paper plots it);
      pressure on the electrode with the nominal ø4 mm and with the measured
      diameter once a scan has measured one (``diameter_source`` says which);
    * one row per plating cycle: force at start, peak, rise, end, potential
      peak, the height change the force rise means through the spring
      (k = 72.78 N/mm, :func:`cell.height_change_um`), the homogeneous plated
      thickness of that cycle, the contact-area loss that would explain the
      height change by local plating (:func:`cell.contact_area_loss`, exact and
      with the paper's whole-number rounding), the radiograms' change of
      Cu-to-Cu and top Li over the cycle;
    * particle matching between consecutive operando scans of the same voxel
      size (:func:`tomography.match_particles`, radius ``match_max_voxels``
      voxels), chained into trajectories; displacements, their radial
      component (positive = toward the edge), the fraction moving outward,
      first → last scan;
    * failure: the first shorted plating, where (cell time, method, bounds),
      and the force-rise and potential peaks of the cycle before it, with
      whether they are the highest so far.

Tiled layout (``reduced`` container; :func:`write_scan`,
:func:`write_plating`, :func:`write_experiment`)
------------------------------------------------------------------------
``reduced/<raw uid>`` (a container per reduced raw run), metadata ``raw_uid``,
``experiment_id``, ``step``, ``cycle``, ``technique``, ``kind`` (``scan`` or
``plating``), ``postmortem_scan``, ``detector`` (pixel µm, objective,
binning), ``reduction`` (name, version, mode live/offline, reduced_at,
parameters), ``units``; scans add ``cu_to_cu_um``, ``top_li_um``, ``hse_um``,
``bottom_li_um``, ``layers`` (positions in detector rows), ``center``
(detector column of the axis), ``row0``, ``electrode`` (``diameter_um``,
``core_diameter_um``, ``measurable``, ``reason``), ``n_particles``, cell times
``t_start``/``t_mid``/``t_end``, ``projection_layers`` (the same layers from
the mean projection); plating runs add ``current_density_uA_cm2``,
``plated_um``, ``charge_c``, ``t_technique_start``/``_end``, ``shorted``,
``short`` (time, method, bounds) and ``reason``.

* scans: ``volume`` (row, y, x) float32, attenuation per voxel, chunked a few
  slices per chunk (``client["reduced"][uid]["volume"][k]`` reads slice k only;
  volume row k is detector row ``row0 + k``); ``profile`` (row) the layer
  profile; ``particles`` (N, 4) float: ``x_um``, ``y_um``, ``z_um``, ``r_um``
  (metadata ``columns`` and the voxel conversion).
* plating: table ``radiograms`` (``t``, ``cu_to_cu_um``, ``top_li_um``,
  ``hse_um``, ``bottom_li_um``, ``cu_top``, ``cu_bottom``, ``li_hse_top``,
  ``hse_li_bottom`` rows), table ``cell`` (``t``, ``force``, ``ewe``,
  ``current``, ``charge``, ``elapsed``).

``reduced/<experiment_id>``, metadata ``kind="experiment"``, ``runs``,
``diameter_mm``/``diameter_source`` (of the pressure), ``failure``,
``tracking`` (summary numbers), ``figures`` (paths), ``reduction``; tables
``timeseries`` (``t``, ``force``, ``ewe``, ``current``, ``charge_cum``,
``plated_um``, ``pressure_nominal_mpa``, ``pressure_mpa``, ``cycle``,
``run``, ``plating``), ``cycles`` (one row per plating run, see
:meth:`ExperimentState.cycle_table`), ``scans`` (one row per scan: layers,
diameter, particles), ``radiograms`` (every radiogram of the experiment),
``displacements`` (one row per matched particle pair of consecutive scans);
array ``trajectories`` (track, scan, 4) µm, NaN where a particle is not seen.

Writing replaces: a container is deleted and written anew (one create and at
most 3 array/table writes per run, 6 for the experiment).
"""

from __future__ import annotations

import logging
import math
import time as _time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from operando.constants import LI_ELECTRODE_DIAMETER_MM

from . import cell as cellmod
from . import radiography, tomography as tomo
from .core import RowWindow, json_safe, replace_container

__all__ = [
    "REDUCTION_NAME",
    "REDUCTION_VERSION",
    "FRAME_KEY",
    "SCAN_STEPS",
    "REDUCED_STEPS",
    "ReductionParameters",
    "RunData",
    "ScanResult",
    "PlatingResult",
    "ExperimentState",
    "reduce_scan",
    "reduce_plating",
    "reduce_run",
    "electrode_measurement",
    "write_scan",
    "write_plating",
    "write_run",
    "write_experiment",
]

logger = logging.getLogger(__name__)

REDUCTION_NAME = "operando.xct"
REDUCTION_VERSION = "1.0"
FRAME_KEY = "ct_det_image"
SCAN_STEPS = ("scan3d", "postmortem")
REDUCED_STEPS = SCAN_STEPS + ("plating",)

UNITS = {
    "lengths": "µm", "positions": "detector rows (0 = top of the image)", "t": "s (cell clock)",
    "force": "N", "ewe": "V", "current": "A", "charge": "C", "pressure": "MPa",
    "volume": "attenuation per voxel (mu * voxel size)",
    "particles": "µm: x, y from the rotation axis (mirror image of the cell, y -> -y), "
                 "z above the bottom Cu face, r equivalent-sphere radius",
}


@dataclass(frozen=True)
class ReductionParameters:
    """Choices of the reduction (recorded in every node's metadata)."""

    reconstruct: bool = True
    #: "stack": the Cu-to-Cu rows plus ``stack_margin`` of the stack height
    #: (at least ``min_margin_rows``) each side; "all": every detector row
    rows: str = "stack"
    stack_margin: float = 0.5
    min_margin_rows: int = 8
    stripes: str | None = "wavelet_fft"
    filter_name: str | None = "hann"
    pad_rate: float = 0.25
    workers: int | None = None
    chunk_rows: int = 8
    #: take a Cu coating at its top-hat peak when one shows (``find_layers``'
    #: default). False: always at the spacer step, in radiograms as in volumes:
    #: a continuous series with a constant bias of about the coating's
    #: absorption-equivalent thickness (~3 µm per face, any voxel size), where
    #: the peak test flips between the two estimates as the face crosses a
    #: detector row (jumps of ~0.6 voxel between consecutive radiograms)
    cu_peaks: bool = False
    particle_snr: float = 6.0
    particle_min_voxels: int = 2
    #: particles of consecutive scans further apart than this are not matched
    match_max_voxels: float = 3.5
    #: the electrode the current density refers to, when the run does not say
    nominal_diameter_mm: float = LI_ELECTRODE_DIAMETER_MM
    spring_n_per_mm: float = cellmod.SPRING_K_N_PER_MM
    #: bytes per chunk of the stored volume (whole slices per chunk)
    volume_chunk_bytes: int = 1 << 20
    #: read the projections' rows to reconstruct in one go when they take no
    #: more than this (one request through Tiled); else a few rows at a time
    prefetch_bytes: int = 256 << 20

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------

@dataclass
class RunData:
    """One raw run as arrays (see the module doc)."""

    start: dict
    stop: dict = field(default_factory=dict)
    #: stream -> key -> 1D array (one value per event)
    columns: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    #: stream -> frames (n, rows, cols), any sliceable array-like
    frames: dict[str, Any] = field(default_factory=dict)
    #: stream -> descriptor configuration
    configuration: dict[str, dict] = field(default_factory=dict)
    #: overrides the pixel size of the configuration (µm at the sample)
    pixel_um: float | None = None

    @property
    def uid(self) -> str:
        return str(self.start.get("uid", ""))

    @property
    def step(self) -> str:
        return str(self.start.get("step", ""))

    @property
    def cycle(self) -> int | None:
        c = self.start.get("cycle")
        return None if c is None else int(c)

    @property
    def experiment_id(self) -> str:
        return str(self.start.get("experiment_id") or "")

    @property
    def technique(self) -> str:
        return str(self.start.get("technique", ""))

    def detector(self) -> dict:
        """Pixel size (µm at the sample, after binning), objective and binning."""
        out = {"pixel_um": self.pixel_um, "objective": None, "binning": None}
        for stream in ("primary", "flat", "dark", *self.configuration):
            data = ((self.configuration.get(stream) or {}).get("ct_det") or {}).get("data") or {}
            if data:
                if out["pixel_um"] is None and data.get("ct_det_cam_pixel_size"):
                    out["pixel_um"] = float(data["ct_det_cam_pixel_size"])
                out["objective"] = out["objective"] or data.get("ct_det_cam_objective")
                if out["binning"] is None and data.get("ct_det_cam_binning") is not None:
                    out["binning"] = int(data["ct_det_cam_binning"])
        if out["pixel_um"] is None:
            raise ValueError(f"run {self.uid}: no pixel size (ct_det_cam_pixel_size) in the "
                             "descriptor configuration")
        return out

    def column(self, stream: str, key: str) -> np.ndarray:
        col = (self.columns.get(stream) or {}).get(key)
        if col is None:
            return np.zeros(0)
        return np.asarray(col)

    def numeric(self, stream: str, key: str) -> np.ndarray:
        col = self.column(stream, key)
        try:
            return np.asarray(col, dtype=float)
        except (TypeError, ValueError):
            return np.full(col.shape, np.nan)


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
        return tomo.find_layers(profile, pixel_um, **kwargs)
    except ValueError as err:
        logger.warning("layers not found: %s", err)
        keys = ("cu_top", "cu_bottom", "li_hse_top", "hse_li_bottom", "cu_to_cu_um",
                "top_li_um", "hse_um", "bottom_li_um")
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


LAYER_LENGTHS = ("cu_to_cu_um", "top_li_um", "hse_um", "bottom_li_um")
LAYER_ROWS = ("cu_top", "cu_bottom", "li_hse_top", "hse_li_bottom")


# --------------------------------------------------------------------------------------
# Scans
# --------------------------------------------------------------------------------------

@dataclass
class ScanResult:
    """A reduced 3D scan (``volume`` may be dropped once written: ``sections`` stay)."""

    uid: str
    experiment_id: str
    step: str
    cycle: int | None
    start: dict
    stop: dict
    detector: dict
    pixel_um: float
    n_projections: int
    t_start: float
    t_end: float
    t_mid: float
    row0: int = 0
    center: float = math.nan
    volume: np.ndarray | None = None
    profile: np.ndarray | None = None
    #: lengths in µm, positions in detector rows
    layers: dict = field(default_factory=dict)
    projection_layers: dict = field(default_factory=dict)
    electrode: dict = field(default_factory=dict)
    #: (N, 4) µm: x, y (from the axis), z (above the bottom Cu face), r
    particles: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    #: (N, 4) voxels of the volume: x, y, z (volume row), r
    particles_vox: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    z_reference: str = "bottom Cu face"
    #: 2D slices for the figures: xz (row, x) through the axis, xz_mip (max over
    #: ±2 voxels in y), xy_hse (y, x) mid-electrolyte, xy_lip (y, x) the top Li
    #: rows against the Cu face
    sections: dict = field(default_factory=dict)
    cell: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "scan"

    @property
    def postmortem_scan(self) -> str | None:
        return self.start.get("postmortem_scan")

    @property
    def axis_voxel(self) -> int:
        return int(self.volume.shape[-1] // 2) if self.volume is not None else \
            int(self.sections.get("ncol", 0) // 2)


def _cell_columns(run: RunData, streams=("cell", "primary")) -> dict[str, np.ndarray]:
    """The cell readings of a run merged in time: t, force, ewe, current, charge, elapsed."""
    keys = {"force": "force_force", "ewe": "pstat_ewe", "current": "pstat_current",
            "charge": "pstat_charge", "elapsed": "pstat_elapsed"}
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
    keep = np.concatenate([[True], np.diff(out["t"]) > 1e-6]) if out["t"].size else np.zeros(0, bool)
    return {k: v[keep] for k, v in out.items()}


def _stack_window(layers: dict, nrow: int, params: ReductionParameters) -> tuple[int, int]:
    top, bot = layers.get("cu_top", math.nan), layers.get("cu_bottom", math.nan)
    if params.rows == "all" or not (np.isfinite(top) and np.isfinite(bot)) or bot <= top:
        return 0, nrow
    margin = max(float(params.min_margin_rows), params.stack_margin * (bot - top))
    r0 = max(0, int(math.floor(top - margin)))
    r1 = min(nrow, int(math.ceil(bot + margin)) + 1)
    return (r0, r1) if r1 - r0 >= 12 else (0, nrow)


def _find_center(frames, angles, flat, dark, rows: tuple[int, int]) -> float:
    """Axis column from the electrolyte's rows (where the particles are)."""
    a, b = rows
    block = np.asarray(frames[:, a:b, :], dtype=np.float32)
    li = tomo.minus_log(tomo.normalize(block, flat[a:b], dark[a:b] if dark is not None else None))
    return float(tomo.find_center_projections(li, angles, n_rows=min(8, b - a)))


_ring_profile = tomo._radial_profile  # mean in 1-pixel rings about a centre


def _footprint_radius(volume, lip_rows: Sequence[int], core_rows: tuple[int, int],
                      center_yx, r_core: float, r_lim: float, min_snr: float = 5.0) -> float:
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
    prof = _ring_profile(D, center_yx, r_lim, inside)
    ny, nx = D.shape
    yy, xx = np.indices((ny, nx), dtype=np.float64)
    rr = np.hypot(yy - center_yx[0], xx - center_yx[1])
    counts = np.bincount(np.floor(rr[inside & (rr < r_lim)]).astype(int),
                         minlength=prof.size)[:prof.size].astype(float)
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


def electrode_measurement(volume, layers_vol: dict, pixel_um: float, *,
                          nominal_diameter_um: float = 1000.0 * LI_ELECTRODE_DIAMETER_MM,
                          max_edge_fraction: float = 0.85) -> dict:
    """Li electrode diameters in a volume whose layers (rows of this volume) are known.

    ``core_diameter_um``: the full-thickness core (:func:`tomography.electrode_geometry`
    on the middle rows of the top, then the bottom, Li layer). ``footprint``:
    the crept lip against each Cu face (:func:`_footprint_radius`), the
    electrode's outer diameter (the core's when there is no lip).
    ``diameter_um``: the mean footprint of the two electrodes. Not
    ``measurable`` (NaN) when the core's edge is not inside the field of view
    or is implausibly small (< half the nominal diameter: an artefact, the
    electrode does not shrink), or beyond ``max_edge_fraction`` of the field's
    radius (the cupping of an interior scan near its rim makes false steps).
    """
    out = {"diameter_um": math.nan, "core_diameter_um": math.nan, "top_um": math.nan,
           "bottom_um": math.nan, "center_yx": None, "measurable": False, "reason": ""}
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
        geo = tomo.electrode_geometry(volume, (a, b), pixel_um, edge="strongest")
        d = geo["diameter_um"]
        if geo["truncated"] or not np.isfinite(d) or d < 0.5 * nominal_diameter_um:
            reasons.append(f"{name}: electrode edge not inside the field of view")
            continue
        if d / 2.0 / pixel_um > max_edge_fraction * r_fov:
            # an interior reconstruction cups toward the rim of its field: a
            # step there is not trusted (the 3.4 mm operando field shows one at
            # ~0.9 of its radius with a ø4 mm electrode wider than the field)
            reasons.append(f"{name}: edge within {1 - max_edge_fraction:.0%} of the rim of the "
                           "field of view")
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


def _sections(volume: np.ndarray, layers_vol: dict) -> dict:
    nz, ny, nx = volume.shape
    ay = ny // 2
    out = {"xz": np.array(volume[:, ay, :]),
           "xz_mip": np.array(volume[:, max(0, ay - 2):ay + 3, :].max(axis=1)),
           "ncol": nx}
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
            out["xy_lip"] = np.array(sum(np.asarray(volume[r], np.float32) for r in rows)
                                     - len(rows) * ref) * (volume[rows[0]] != 0)
            out["xy_lip_row"] = rows[0]
    return out


def reduce_scan(run: RunData, params: ReductionParameters | None = None) -> ScanResult:
    """Reduce a 3D scan (see the module doc)."""
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
    flat = _mean_frame(run.frames.get("flat"))
    dark = _mean_frame(run.frames.get("dark"))
    if flat is None:
        raise ValueError(f"scan {run.uid} has no flat fields")
    timings["darks_flats"] = _time.perf_counter() - t0

    t1 = _time.perf_counter()
    views = np.unique(np.linspace(0, n - 1, min(16, n)).astype(int))
    mean_proj = _mean_frame(frames, views)
    proj_layers = _layers_or_nan(
        radiography.vertical_profile(tomo.normalize(mean_proj, flat, dark), kind="absorbed"), pix,
        **({} if params.cu_peaks else {"cu_snr": math.inf}))
    timings["projection_layers"] = _time.perf_counter() - t1

    res = ScanResult(
        uid=run.uid, experiment_id=run.experiment_id, step=run.step, cycle=run.cycle,
        start=dict(run.start), stop=dict(run.stop), detector=det, pixel_um=pix,
        n_projections=n,
        t_start=float(np.nanmin(times)) if times.size else math.nan,
        t_end=float(np.nanmax(times)) if times.size else math.nan,
        t_mid=float(np.nanmean(times)) if times.size else math.nan,
        projection_layers=proj_layers, cell=_cell_columns(run, ("cell",)),
        parameters=params.as_dict(), timings=timings)
    if not params.reconstruct:
        res.layers = dict(proj_layers)
        res.timings["total"] = _time.perf_counter() - t0
        return res

    r0, r1 = _stack_window(proj_layers, nrow, params)
    res.row0 = r0
    t1 = _time.perf_counter()
    lt, hb = proj_layers.get("li_hse_top", math.nan), proj_layers.get("hse_li_bottom", math.nan)
    if np.isfinite(lt) and np.isfinite(hb) and hb - lt >= 2:
        a, b = int(math.floor(lt)) + 1, int(math.ceil(hb))
    else:
        a, b = r0 + (r1 - r0) // 2 - 4, r0 + (r1 - r0) // 2 + 4
    source = RowWindow(frames, r0, r1)
    if n * (r1 - r0) * ncol * np.dtype(getattr(frames, "dtype", np.uint16)).itemsize \
            <= params.prefetch_bytes:
        source = np.asarray(source[:, :, :])
    timings["read"] = _time.perf_counter() - t1
    t1 = _time.perf_counter()
    a, b = max(a, r0), min(b, r1)
    try:
        center = _find_center(source, angles, flat[r0:r1],
                              dark[r0:r1] if dark is not None else None, (a - r0, b - r0))
    except Exception as err:  # noqa: BLE001 - fall back on the whole window
        logger.warning("scan %s: centre from the electrolyte rows failed (%s)", run.uid, err)
        center = _find_center(source, angles, flat[r0:r1],
                              dark[r0:r1] if dark is not None else None, (0, r1 - r0))
    res.center = center
    timings["center"] = _time.perf_counter() - t1

    t1 = _time.perf_counter()
    volume = tomo.reconstruct(source, angles, flats=flat[r0:r1],
                              darks=dark[r0:r1] if dark is not None else None, center=center,
                              stripes=params.stripes, filter_name=params.filter_name,
                              pad_rate=params.pad_rate, chunk_rows=params.chunk_rows,
                              workers=params.workers)
    timings["reconstruct"] = _time.perf_counter() - t1
    res.volume = volume

    t1 = _time.perf_counter()
    profile = tomo.layer_profile(volume)
    layers_vol = _layers_or_nan(profile, pix, cu_snr=math.inf)
    res.profile = profile
    res.layers = _shift_rows(layers_vol, r0)
    res.electrode = electrode_measurement(volume, layers_vol, pix,
                                          nominal_diameter_um=1000.0 * params.nominal_diameter_mm)
    timings["layers"] = _time.perf_counter() - t1

    t1 = _time.perf_counter()
    lt, hb, cb = (layers_vol.get(k, math.nan) for k in ("li_hse_top", "hse_li_bottom", "cu_bottom"))
    if np.isfinite(lt) and np.isfinite(hb):
        zr = (max(0, int(math.floor(lt)) - 1), min(volume.shape[0], int(math.ceil(hb)) + 2))
    else:
        zr = (0, volume.shape[0])
    vox = tomo.segment_particles(volume, z_range=zr, snr=params.particle_snr,
                                 min_voxels=params.particle_min_voxels)
    axis = volume.shape[-1] // 2
    if np.isfinite(cb):
        z_um = (cb - vox[:, 2]) * pix
    else:
        res.z_reference = "detector centre"
        z_um = (0.5 * (nrow - 1) - (vox[:, 2] + r0)) * pix
    res.particles_vox = vox
    res.particles = np.column_stack([(vox[:, 0] - axis) * pix, (vox[:, 1] - axis) * pix,
                                     z_um, vox[:, 3] * pix]) if len(vox) else np.zeros((0, 4))
    res.sections = _sections(volume, layers_vol)
    timings["particles"] = _time.perf_counter() - t1
    timings["total"] = _time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------------------
# Plating
# --------------------------------------------------------------------------------------

@dataclass
class PlatingResult:
    """A reduced plating run: the radiograms' layers and the cell series."""

    uid: str
    experiment_id: str
    cycle: int | None
    start: dict
    stop: dict
    detector: dict
    pixel_um: float
    current_density_uA_cm2: float
    current_a: float
    electrode_diameter_mm: float
    duration_s: float
    #: radiogram columns: t, cu_to_cu_um, top_li_um, hse_um, bottom_li_um, cu_top, ...
    radiograms: dict = field(default_factory=dict)
    cell: dict = field(default_factory=dict)
    t_technique_start: float = math.nan
    t_technique_end: float = math.nan
    charge_c: float = math.nan
    plated_um: float = math.nan
    shorted: bool = False
    short: dict = field(default_factory=dict)
    reason: str = ""
    timings: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "plating"

    @property
    def step(self) -> str:
        return "plating"

    @property
    def window(self) -> tuple[float, float]:
        return (self.t_technique_start, self.t_technique_end)

    @property
    def t_mid(self) -> float:
        return 0.5 * (self.t_technique_start + self.t_technique_end)


def _technique_times(cell: dict) -> tuple[float, float, float]:
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


def _locate_short(cell: dict, t_on: float, t_off: float, duration: float,
                  reason: str) -> tuple[bool, dict]:
    t, e, i = cell["t"], cell["ewe"], cell["current"]
    out = {"t": None, "method": None, "bounds": None}
    by_reason = "short circuit" in (reason or "").lower()
    ok = np.isfinite(t) & np.isfinite(e) & np.isfinite(i)
    if ok.sum() >= 4:
        ts = cellmod.locate_short(t[ok], e[ok], i[ok])
        if ts is not None:
            out.update(t=float(ts), method="potential collapse under current",
                       bounds=[float(ts), float(ts)])
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
        out.update(t=float(t_off), method="end of the current step (lower potential limit)",
                   bounds=[float(t[before[-1]]) if before.size else float(t_on),
                           float(t[after[0]]) if after.size else float(t_off)])
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
        uid=run.uid, experiment_id=run.experiment_id, cycle=run.cycle, start=dict(s),
        stop=dict(run.stop), detector=det, pixel_um=pix,
        current_density_uA_cm2=float(s.get("current_density_uA_cm2", math.nan)),
        current_a=float(s.get("current_A", math.nan)), electrode_diameter_mm=diameter,
        duration_s=float(s.get("duration_s", math.nan)), reason=str(run.stop.get("reason", "")))
    frames = run.frames.get("primary")
    flat = _mean_frame(run.frames.get("flat"))
    dark = _mean_frame(run.frames.get("dark"))
    rows = []
    times = run.numeric("primary", "clock_time")
    cu_kw = {} if params.cu_peaks else {"cu_snr": math.inf}
    if frames is not None and flat is not None:
        for k in range(int(frames.shape[0])):
            trans = tomo.normalize(np.asarray(frames[k]), flat, dark)
            try:
                # radiography.analyze, with the Cu choice of the parameters
                lay = tomo.find_layers(radiography.vertical_profile(trans, kind="absorbed"), pix,
                                       **cu_kw)
            except ValueError as err:
                logger.warning("plating %s radiogram %d: %s", run.uid, k, err)
                lay = {key: math.nan for key in LAYER_LENGTHS + LAYER_ROWS}
            rows.append(lay)
    cols = {"t": times[:len(rows)] if times.size else np.full(len(rows), np.nan)}
    for key in LAYER_LENGTHS + LAYER_ROWS:
        cols[key] = np.array([r.get(key, math.nan) for r in rows], dtype=float)
    res.radiograms = cols
    res.cell = _cell_columns(run)
    t_on, t_off, charge = _technique_times(res.cell)
    res.t_technique_start, res.t_technique_end, res.charge_c = t_on, t_off, charge
    if np.isfinite(charge):
        res.plated_um = float(cellmod.plated_thickness_um(charge, cellmod.electrode_area_cm2(diameter)))
    res.shorted, res.short = _locate_short(res.cell, t_on, t_off, res.duration_s, res.reason)
    res.timings["total"] = _time.perf_counter() - t0
    return res


def reduce_run(run: RunData, params: ReductionParameters | None = None):
    """:func:`reduce_scan` or :func:`reduce_plating` by the run's ``step``; None otherwise."""
    if run.technique != "xct" or run.step not in REDUCED_STEPS:
        return None
    if run.step == "plating":
        return reduce_plating(run, params)
    return reduce_scan(run, params)


# --------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------

class ExperimentState:
    """Everything reduced so far of one experiment (see the module doc).

    ``add`` takes :class:`ScanResult` and :class:`PlatingResult` in any order
    (a result of the same uid replaces the earlier one); every table is
    recomputed from them, so live (run by run) and offline (all at once) agree.
    ``keep_volumes=False`` drops each volume once added (the figures use the
    ``sections``).
    """

    def __init__(self, experiment_id: str, parameters: ReductionParameters | None = None, *,
                 mode: str = "live", keep_volumes: bool = False):
        self.experiment_id = experiment_id
        self.parameters = parameters or ReductionParameters()
        self.mode = mode
        self.keep_volumes = keep_volumes
        self.results: dict[str, ScanResult | PlatingResult] = {}

    # -- collection ----------------------------------------------------------------------
    def add(self, result) -> None:
        if result is None:
            return
        if isinstance(result, ScanResult) and not self.keep_volumes:
            result.volume = None
        self.results[result.uid] = result

    def _t(self, r) -> float:
        t = r.t_start if isinstance(r, ScanResult) else r.t_technique_start
        if not np.isfinite(t):
            t = float(np.nanmin(r.cell["t"])) if r.cell.get("t") is not None and len(r.cell["t"]) else math.inf
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
        measured = [s for s in self.scans if s.electrode.get("measurable")
                    and np.isfinite(s.electrode.get("diameter_um", math.nan))]
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
                total = r.charge_c if np.isfinite(r.charge_c) else (float(q[inside][-1]) if inside.any() else 0.0)
                offset += total
                plating_end.append((r.t_technique_end, offset))
            else:
                cum[:] = offset
            parts.append({"t": t, "force": np.asarray(c["force"], float),
                          "ewe": np.asarray(c["ewe"], float),
                          "current": np.asarray(c["current"], float), "charge_cum": cum,
                          "cycle": np.full(t.size, -1.0 if r.cycle is None else float(r.cycle)),
                          "run": np.full(t.size, float(k)), "plating": plating})
        keys = ("t", "force", "ewe", "current", "charge_cum", "cycle", "run", "plating")
        if not parts:
            out = {k: np.zeros(0) for k in keys}
        else:
            out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
            order = np.argsort(out["t"], kind="stable")
            out = {k: v[order] for k, v in out.items()}
        area = cellmod.electrode_area_cm2(self._faraday_diameter())
        out["plated_um"] = np.asarray(cellmod.plated_thickness_um(out["charge_cum"], area), float) \
            if out["t"].size else np.zeros(0)
        d_mm, _ = self.diameter()
        out["pressure_nominal_mpa"] = np.asarray(
            cellmod.pressure_mpa(out["force"], self.parameters.nominal_diameter_mm), float) \
            if out["t"].size else np.zeros(0)
        out["pressure_mpa"] = np.asarray(cellmod.pressure_mpa(out["force"], d_mm), float) \
            if out["t"].size else np.zeros(0)
        return out

    def _faraday_diameter(self) -> float:
        ds = [p.electrode_diameter_mm for p in self.platings if np.isfinite(p.electrode_diameter_mm)]
        return float(ds[0]) if ds else self.parameters.nominal_diameter_mm

    # -- cycles --------------------------------------------------------------------------
    def cycle_table(self) -> list[dict]:
        """One row per plating run (see the module doc)."""
        rows = []
        d_mm, _ = self.diameter()
        for p in self.platings:
            c = p.cell
            t0, t1 = p.window
            row = {"cycle": -1 if p.cycle is None else int(p.cycle), "uid": p.uid,
                   "current_density_uA_cm2": p.current_density_uA_cm2, "t_start": t0,
                   "t_end": t1, "duration_s": t1 - t0 if np.isfinite(t0) and np.isfinite(t1) else math.nan,
                   "charge_c": p.charge_c, "plated_um": p.plated_um, "shorted": bool(p.shorted)}
            peaks = None
            if np.isfinite(t0) and np.isfinite(t1) and len(c["t"]):
                peaks = cellmod.cycle_peaks(c["t"], c["force"], c["ewe"], [(t0, t1)])[0]
            for key in ("force_start", "force_peak", "force_peak_time", "force_rise",
                        "potential_peak", "potential_peak_time"):
                row[key] = peaks[key] if peaks else math.nan
            sel = np.flatnonzero((c["t"] <= t1 + 1e-6) & np.isfinite(c["force"])) if len(c["t"]) else []
            row["force_end"] = float(c["force"][sel[-1]]) if len(sel) else math.nan
            rise = row["force_rise"]
            h = cellmod.height_change_um(max(rise, 0.0), self.parameters.spring_n_per_mm) \
                if np.isfinite(rise) else math.nan
            row["height_change_um"] = h
            if np.isfinite(h) and np.isfinite(p.plated_um) and p.plated_um > 0:
                row["contact_area_loss"] = cellmod.contact_area_loss(h, p.plated_um)
                row["contact_area_loss_whole"] = cellmod.contact_area_loss(h, p.plated_um,
                                                                           whole_factor=True)
                row["current_factor"] = h / p.plated_um
            else:
                row["contact_area_loss"] = row["contact_area_loss_whole"] = math.nan
                row["current_factor"] = math.nan
            for key in ("force_start", "force_peak"):
                f = row[key]
                row[key.replace("force", "pressure_nominal") + "_mpa"] = \
                    cellmod.pressure_mpa(f, self.parameters.nominal_diameter_mm) if np.isfinite(f) else math.nan
                row[key.replace("force", "pressure") + "_mpa"] = \
                    cellmod.pressure_mpa(f, d_mm) if np.isfinite(f) else math.nan
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
        out: dict[str, Any] = {"scans": [s.uid for s in scans], "pairs": [], "rows": [],
                               "trajectories": np.zeros((0, len(scans), 4))}
        if len(scans) < 2:
            out["summary"] = {"n_scans": len(scans)}
            return out
        tracks: list[list] = [[k] + [None] * (len(scans) - 1) for k in range(len(scans[0].particles))]
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
            pairs, disp, radial = tomo.match_particles(
                a.particles, b.particles, self.parameters.match_max_voxels * max(a.pixel_um, b.pixel_um),
                center=(0.0, 0.0))
            summary = {"from": a.uid, "to": b.uid, "cycle_from": a.cycle, "cycle_to": b.cycle,
                       "n_from": len(a.particles), "n_to": len(b.particles), "matched": len(pairs),
                       "mean_radial_um": float(np.mean(radial)) if len(radial) else math.nan,
                       "median_displacement_um": float(np.median(np.linalg.norm(disp, axis=1)))
                       if len(disp) else math.nan,
                       "fraction_outward": float(np.mean(radial > 0)) if len(radial) else math.nan}
            out["pairs"].append(summary)
            for (ia, ib), d, rad in zip(pairs, disp, radial):
                pa = a.particles[ia]
                rows.append({"scan_from": j - 1, "scan_to": j, "uid_from": a.uid, "uid_to": b.uid,
                             "cycle_from": -1 if a.cycle is None else a.cycle,
                             "cycle_to": -1 if b.cycle is None else b.cycle,
                             "x_um": pa[0], "y_um": pa[1], "z_um": pa[2], "r_um": pa[3],
                             "dx_um": d[0], "dy_um": d[1], "dz_um": d[2], "radial_um": rad})
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
            "n_scans": len(scans), "first": scans[0].uid, "last": scans[-1].uid,
            "n_first": len(scans[0].particles), "tracked_first_to_last": int(both.sum()),
            "fraction_tracked": float(both.sum() / max(1, len(scans[0].particles))),
            "mean_radial_um": float(np.mean(radial)) if radial.size else math.nan,
            "median_displacement_um": float(np.median(np.linalg.norm(disp, axis=1))) if radial.size else math.nan,
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
        out.update({"uid": p.uid, "cycle": p.cycle, "t_short": p.short.get("t"),
                    "method": p.short.get("method"), "bounds": p.short.get("bounds"),
                    "reason": p.reason, "previous": None,
                    "previous_force_rise_is_highest": None, "previous_potential_is_highest": None})
        if n >= 1:
            before = cycles[:n]
            prev = before[-1]
            out["previous"] = {k: prev[k] for k in ("cycle", "uid", "force_start", "force_peak",
                                                     "force_rise", "potential_peak",
                                                     "height_change_um", "contact_area_loss")}
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
            row = {"uid": s.uid, "step": s.step, "cycle": -1 if s.cycle is None else s.cycle,
                   "postmortem_scan": s.postmortem_scan or "", "t_start": s.t_start,
                   "t_mid": s.t_mid, "t_end": s.t_end, "pixel_um": s.pixel_um,
                   "center": s.center, "n_particles": len(s.particles),
                   "diameter_um": s.electrode.get("diameter_um", math.nan),
                   "core_diameter_um": s.electrode.get("core_diameter_um", math.nan)}
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
            part = {"t": np.asarray(rg["t"], float),
                    "cycle": np.full(n, -1.0 if p.cycle is None else float(p.cycle))}
            for k in LAYER_LENGTHS:
                part[k] = np.asarray(rg[k], float)
            parts.append(part)
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def reduction_metadata(self) -> dict:
        return json_safe({"name": REDUCTION_NAME, "version": REDUCTION_VERSION, "mode": self.mode,
                          "reduced_at": _time.time(), "parameters": self.parameters.as_dict()})

    def figure_data(self) -> dict:
        """What :mod:`~operando.callbacks.xct_figures` draws."""
        scans = []
        for s in self.scans:
            scans.append({"uid": s.uid, "step": s.step, "cycle": s.cycle,
                          "postmortem_scan": s.postmortem_scan, "pixel_um": s.pixel_um,
                          "row0": s.row0, "layers": s.layers, "sections": s.sections,
                          "electrode": s.electrode, "t_mid": s.t_mid,
                          "particles": s.particles})
        d_mm, source = self.diameter()
        return {"experiment_id": self.experiment_id, "series": self.series(),
                "cycles": self.cycle_table(), "failure": self.failure(), "scans": scans,
                "tracking": self.tracking(), "radiograms": self.radiogram_table(),
                "diameter_mm": d_mm, "diameter_source": source}

    def summary(self) -> dict:
        """Numbers for a report."""
        ser = self.series()
        d_mm, source = self.diameter()
        first = {}
        if ser["t"].size:
            ok = np.flatnonzero(np.isfinite(ser["force"]))
            if ok.size:
                first = {"t": ser["t"][ok[0]], "force_n": ser["force"][ok[0]],
                         "pressure_nominal_mpa": ser["pressure_nominal_mpa"][ok[0]]}
        tr = self.tracking()
        return json_safe({
            "experiment_id": self.experiment_id,
            "runs": [{"uid": r.uid, "kind": r.kind, "step": r.step, "cycle": r.cycle}
                     for r in self.ordered()],
            "scans": self.scan_table(), "cycles": self.cycle_table(),
            "initial": first, "plated_um_total": float(ser["plated_um"][-1]) if ser["t"].size else None,
            "diameter_mm": d_mm, "diameter_source": source,
            "tracking": tr["summary"], "tracking_pairs": tr["pairs"], "failure": self.failure(),
        })


# --------------------------------------------------------------------------------------
# Tiled
# --------------------------------------------------------------------------------------

def _base_metadata(res, state: ExperimentState) -> dict:
    return {"raw_uid": res.uid, "experiment_id": res.experiment_id, "step": res.step,
            "cycle": res.cycle, "technique": "xct", "kind": res.kind,
            "postmortem_scan": res.start.get("postmortem_scan"), "detector": res.detector,
            "reduction": state.reduction_metadata(), "units": UNITS,
            "timings_s": res.timings}


def _columns_table(cols: dict) -> Any:
    import pandas as pd

    return pd.DataFrame({k: np.asarray(v) for k, v in cols.items()})


def _rows_table(rows: list[dict]) -> Any:
    import pandas as pd

    return pd.DataFrame([{k: (json_safe(v) if isinstance(v, (list, dict)) else v)
                          for k, v in r.items()} for r in rows])


def write_scan(reduced, res: ScanResult, state: ExperimentState, *, volume: np.ndarray | None = None):
    """Write (replace) ``reduced/<raw uid>`` of a scan; returns the container."""
    md = _base_metadata(res, state)
    md.update({"center": res.center, "row0": res.row0, "pixel_um": res.pixel_um,
               "n_projections": res.n_projections, "t_start": res.t_start, "t_mid": res.t_mid,
               "t_end": res.t_end, "layers": {k: res.layers.get(k) for k in LAYER_ROWS},
               "projection_layers": {k: res.projection_layers.get(k) for k in LAYER_LENGTHS + LAYER_ROWS},
               "electrode": res.electrode, "n_particles": int(len(res.particles)),
               "z_reference": res.z_reference,
               "diameter_um": res.electrode.get("diameter_um")})
    for k in LAYER_LENGTHS:
        md[k] = res.layers.get(k)
    node = replace_container(reduced, res.uid, md)
    vol = volume if volume is not None else res.volume
    if vol is not None:
        import dask.array as da

        per = max(1, min(vol.shape[0], int(state.parameters.volume_chunk_bytes // max(1, vol[0].nbytes))))
        node.write_array(da.from_array(np.ascontiguousarray(vol, dtype=np.float32),
                                       chunks=(per, -1, -1)),
                         key="volume", dims=["row", "y", "x"],
                         metadata=json_safe({"row0": res.row0, "pixel_um": res.pixel_um,
                                             "axis_voxel": vol.shape[-1] // 2,
                                             "center_column": res.center,
                                             "units": UNITS["volume"]}))
    if res.profile is not None:
        node.write_array(np.asarray(res.profile, float), key="profile", dims=["row"],
                         metadata={"row0": res.row0})
    node.write_array(np.asarray(res.particles, float).reshape(-1, 4), key="particles",
                     dims=["particle", "column"],
                     metadata=json_safe({"columns": ["x_um", "y_um", "z_um", "r_um"],
                                         "units": UNITS["particles"],
                                         "to_voxels": "x_vox = x_um / pixel_um + axis_voxel; "
                                                      "y_vox = y_um / pixel_um + axis_voxel; "
                                                      "volume row = (cu_bottom - row0) - z_um / pixel_um",
                                         "axis_voxel": (vol.shape[-1] // 2) if vol is not None else None,
                                         "cu_bottom": res.layers.get("cu_bottom"),
                                         "row0": res.row0, "pixel_um": res.pixel_um}))
    return node


def write_plating(reduced, res: PlatingResult, state: ExperimentState):
    """Write (replace) ``reduced/<raw uid>`` of a plating run; returns the container."""
    md = _base_metadata(res, state)
    md.update({"current_density_uA_cm2": res.current_density_uA_cm2, "current_A": res.current_a,
               "electrode_diameter_mm": res.electrode_diameter_mm, "duration_s": res.duration_s,
               "t_technique_start": res.t_technique_start, "t_technique_end": res.t_technique_end,
               "charge_c": res.charge_c, "plated_um": res.plated_um, "shorted": res.shorted,
               "short": res.short, "reason": res.reason, "pixel_um": res.pixel_um,
               "n_radiograms": int(len(res.radiograms.get("t", [])))})
    node = replace_container(reduced, res.uid, md)
    if len(res.radiograms.get("t", [])):
        node.write_table(_columns_table(res.radiograms), key="radiograms")
    if len(res.cell.get("t", [])):
        node.write_table(_columns_table(res.cell), key="cell")
    return node


def write_run(reduced, res, state: ExperimentState, **kwargs):
    if isinstance(res, ScanResult):
        return write_scan(reduced, res, state, **kwargs)
    return write_plating(reduced, res, state)


def write_experiment(reduced, state: ExperimentState, *, figures: Iterable[str] = ()):
    """Write (replace) ``reduced/<experiment_id>``; returns the container."""
    d_mm, source = state.diameter()
    tr = state.tracking()
    md = {"experiment_id": state.experiment_id, "technique": "xct", "kind": "experiment",
          "runs": [{"uid": r.uid, "kind": r.kind, "step": r.step, "cycle": r.cycle}
                   for r in state.ordered()],
          "diameter_mm": d_mm, "diameter_source": source, "failure": state.failure(),
          "tracking": tr["summary"], "tracking_pairs": tr["pairs"], "figures": list(figures),
          "reduction": state.reduction_metadata(), "units": UNITS}
    node = replace_container(reduced, state.experiment_id or "unnamed", md)
    write = node.write_table
    ser = state.series()
    if ser["t"].size:
        write(_columns_table(ser), key="timeseries")
    cycles = state.cycle_table()
    if cycles:
        write(_rows_table(cycles), key="cycles")
    scans = state.scan_table()
    if scans:
        write(_rows_table(scans), key="scans")
    rg = state.radiogram_table()
    if rg:
        write(_columns_table(rg), key="radiograms")
    if tr["rows"]:
        write(_rows_table(tr["rows"]), key="displacements")
    if tr["trajectories"].size:
        node.write_array(np.asarray(tr["trajectories"], float), key="trajectories",
                         dims=["track", "scan", "column"],
                         metadata=json_safe({"columns": ["x_um", "y_um", "z_um", "r_um"],
                                             "scans": tr["scans"]}))
    return node
