"""What the XCT reduction works on and produces: its parameters, one raw run as
arrays (:class:`RunData`) and the reduced runs (:class:`ScanResult`,
:class:`PlatingResult`). Read next: :mod:`.pipeline`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from operando.constants import LI_ELECTRODE_DIAMETER_MM, SPRING_K_N_PER_MM

__all__ = [
    "REDUCTION_NAME",
    "REDUCTION_VERSION",
    "RUN_TECHNIQUE",
    "FRAME_KEY",
    "SCAN_STEPS",
    "REDUCED_STEPS",
    "LAYER_LENGTHS",
    "LAYER_ROWS",
    "accepts",
    "ReductionParameters",
    "RunData",
    "ScanResult",
    "PlatingResult",
]

REDUCTION_NAME = "operando.xct"
REDUCTION_VERSION = "1.0"
#: the start document's ``technique`` of the runs reduced
RUN_TECHNIQUE = "xct"
FRAME_KEY = "ct_det_image"
SCAN_STEPS = ("scan3d", "postmortem")
REDUCED_STEPS = SCAN_STEPS + ("plating",)
LAYER_LENGTHS = ("cu_to_cu_um", "top_li_um", "hse_um", "bottom_li_um")
LAYER_ROWS = ("cu_top", "cu_bottom", "li_hse_top", "hse_li_bottom")


def accepts(start: dict) -> bool:
    """Whether the run of this start document is one the XCT reduction reduces."""
    return start.get("technique") == RUN_TECHNIQUE and start.get("step") in REDUCED_STEPS


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
    spring_n_per_mm: float = SPRING_K_N_PER_MM
    #: bytes per chunk of the stored volume (whole slices per chunk)
    volume_chunk_bytes: int = 1 << 20
    #: read the projections' rows to reconstruct in one go when they take no
    #: more than this (one request through Tiled); else a few rows at a time
    prefetch_bytes: int = 256 << 20

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunData:
    """One raw run as arrays: the start and stop documents, each stream's scalar
    columns, its frames (any sliceable ``(n, rows, cols)``: numpy, h5py,
    :class:`~operando.callbacks.core.FrameStack`, a Tiled array client) and the
    descriptor configuration, which gives the pixel size at the sample."""

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
            raise ValueError(
                f"run {self.uid}: no pixel size (ct_det_cam_pixel_size) in the "
                "descriptor configuration"
            )
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
        return (
            int(self.volume.shape[-1] // 2)
            if self.volume is not None
            else int(self.sections.get("ncol", 0) // 2)
        )


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
    #: a few radiograms, reduced in size, for the figures (``t``, ``images``, ``factor``, rows)
    thumbnails: dict = field(default_factory=dict)
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
