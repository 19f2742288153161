"""What the SAXS/WAXS reduction works on and produces: its parameters, one raw
run integrated (:class:`RasterData`) and one reduced (:class:`RasterResult`).
Read next: :mod:`.pipeline`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..core import json_safe
from .science.maps import LI2S_WINDOW, SAXS_WINDOW, grid_indices

__all__ = [
    "REDUCTION_NAME",
    "REDUCTION_VERSION",
    "RUN_TECHNIQUE",
    "REDUCED_STEPS",
    "ALIGNMENT_STEP",
    "CYCLING_STEP",
    "accepts",
    "is_alignment",
    "is_cycling",
    "CellRecord",
    "c_rate_current",
    "AlignmentScan",
    "ReductionParameters",
    "RasterData",
    "RasterResult",
]

REDUCTION_NAME = "operando.saxs_waxs"
REDUCTION_VERSION = "1.0"
#: the start document's ``technique`` of the runs reduced
RUN_TECHNIQUE = "saxs_waxs"
REDUCED_STEPS = ("background", "ocv", "operando")
#: the alignment scans' step (drawn with the bounds the rasters used, not reduced)
ALIGNMENT_STEP = "alignment"
#: the cell recorded between rasters (``cell`` stream; feeds the time series and Q₁)
CYCLING_STEP = "cycling"
CELL_STREAM = "cell"


def accepts(start: dict) -> bool:
    """Whether the run of this start document is one the SAXS/WAXS reduction reduces."""
    return start.get("technique") == RUN_TECHNIQUE and start.get("step") in REDUCED_STEPS


def is_alignment(start: dict) -> bool:
    """Whether the run is one of the SAXS/WAXS alignment's transmission scans."""
    return start.get("technique") == RUN_TECHNIQUE and start.get("step") == ALIGNMENT_STEP


def is_cycling(start: dict) -> bool:
    """Whether the run is a record of the cell between two rasters (``cell`` stream)."""
    return start.get("technique") == RUN_TECHNIQUE and start.get("step") == CYCLING_STEP


def c_rate_current(configuration: dict) -> float:
    """The cell's 1C current (A) from a descriptor's configuration (the
    potentiostat publishes it from the cell's sulfur loading); NaN if absent."""
    for device in (configuration or {}).values():
        value = (device.get("data") or {}).get("pstat_c_rate_current")
        if value is not None:
            return float(value)
    return math.nan


@dataclass
class AlignmentScan:
    """One transmission profile of the alignment (diode against a stage axis)."""

    uid: str
    experiment_id: str
    direction: str
    motor: str
    positions: np.ndarray
    transmission: np.ndarray

    @classmethod
    def from_columns(cls, start: dict, columns: dict) -> AlignmentScan | None:
        motors = start.get("motors") or []
        if not motors or motors[0] not in columns or "diode_trans" not in columns:
            return None
        return cls(
            uid=start["uid"],
            experiment_id=str(start.get("experiment_id") or ""),
            direction=str(start.get("direction") or ""),
            motor=str(motors[0]),
            positions=np.asarray(columns[motors[0]], float),
            transmission=np.asarray(columns["diode_trans"], float),
        )


@dataclass
class CellRecord:
    """The ``cell`` stream of one ``cycling`` run: cell time, Ewe, current,
    capacity of the present half cycle and half cycle of every sample."""

    uid: str
    experiment_id: str
    cycle: int | None
    time: np.ndarray
    ewe: np.ndarray
    current: np.ndarray
    capacity: np.ndarray
    half_cycle: np.ndarray
    seq_num: np.ndarray

    @property
    def n(self) -> int:
        return len(self.time)

    @classmethod
    def from_columns(cls, start: dict, columns: dict) -> CellRecord | None:
        """From a start document and the ``cell`` stream's columns (None if empty)."""
        t = columns.get(_POINT_KEYS["time"])
        if t is None or len(t) == 0:
            return None
        n = len(t)

        def col(name):
            v = columns.get(_POINT_KEYS[name])
            return np.full(n, np.nan) if v is None else np.asarray(v, float).reshape(-1)[:n]

        seq = columns.get("seq_num")
        return cls(
            uid=start["uid"],
            experiment_id=str(start.get("experiment_id") or ""),
            cycle=start.get("cycle"),
            time=col("time"),
            ewe=col("ewe"),
            current=col("current"),
            capacity=col("capacity"),
            half_cycle=col("half_cycle"),
            seq_num=np.arange(1, n + 1) if seq is None else np.asarray(seq, np.int64)[:n],
        )


@dataclass(frozen=True)
class ReductionParameters:
    """Every choice of the reduction (recorded in each node's ``reduction`` metadata)."""

    npt: int = 1000
    li2s_window: tuple[float, float] = LI2S_WINDOW
    saxs_window: tuple[float, float] = SAXS_WINDOW
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


_POINT_KEYS = {
    "time": "clock_time",
    "x": "stage_x",
    "y": "stage_y",
    "ewe": "pstat_ewe",
    "current": "pstat_current",
    "capacity": "pstat_capacity",
    "half_cycle": "pstat_half_cycle",
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
    technique: str = RUN_TECHNIQUE
    #: the cell's 1C current (A), from the potentiostat's configuration
    c_rate_current_a: float = math.nan

    @property
    def n(self) -> int:
        return len(self.time)

    @classmethod
    def from_columns(
        cls, start: dict, columns: dict, curves, configuration: dict | None = None
    ) -> RasterData:
        """Build from a start document, event columns (data keys → arrays, as in
        the primary stream), ``reduce_frames`` output and the stream's descriptor
        configuration."""
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
            uid=start["uid"],
            experiment_id=str(start.get("experiment_id") or ""),
            step=str(start.get("step") or ""),
            cycle=start.get("cycle"),
            raster_index=start.get("raster_index"),
            shape=(int(shape[0]), int(shape[1])),
            q_saxs=q_s,
            saxs=i_s,
            saxs_sigma=s_s,
            q_waxs=q_w,
            waxs=i_w,
            waxs_sigma=s_w,
            seq_num=seq,
            extents=start.get("extents"),
            snaking=start.get("snaking"),
            technique=str(start.get("technique") or RUN_TECHNIQUE),
            c_rate_current_a=c_rate_current(configuration or {}),
            **cols,
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
            "seq_num": np.asarray(r.seq_num, np.int64),
            "time": r.time,
            "x": r.x,
            "y": r.y,
            "row": rows.astype(np.int64),
            "col": cols.astype(np.int64),
            "ewe": r.ewe,
            "current": r.current,
            "capacity": r.capacity,
            "half_cycle": r.half_cycle,
            "diode": r.diode,
            "sodc": np.full(r.n, np.nan) if self.sodc is None else np.asarray(self.sodc, float),
            "li2s": at(self.li2s_map),
            "li2s_size_nm": at(self.li2s_size_map),
            "li2s_q111": at(self.li2s_q111_map),
        }
