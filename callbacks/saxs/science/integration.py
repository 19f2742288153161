"""Frames → curves: pyFAI azimuthal integration (q in nm⁻¹, Poisson errors), the
beamstop mask, and each detector's geometry as the descriptor records it.

The integrator is cached per geometry; method and timings: ``docs/reduction-saxs.md``.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ...core import json_safe

__all__ = [
    "integrator",
    "integrate",
    "beamstop_mask",
    "DetectorConfig",
    "detector_configs",
    "integrate_frame",
    "reduce_frames",
]


_AI_CACHE: OrderedDict = OrderedDict()
_AI_LOCK = threading.Lock()
_AI_CACHE_SIZE = 8


def _geometry_key(poni) -> tuple:
    if isinstance(poni, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(poni))
        st = os.stat(path)
        return ("file", path, st.st_mtime_ns, st.st_size)
    if isinstance(poni, dict):
        return ("dict", json.dumps(poni, sort_keys=True, default=str))
    raise TypeError(
        f"poni must be a PONI file path or a pyFAI geometry dict, not {type(poni).__name__}"
    )


def integrator(poni):
    """The pyFAI ``AzimuthalIntegrator`` of a geometry (PONI file path or dict), cached."""
    key = _geometry_key(poni)
    with _AI_LOCK:
        ai = _AI_CACHE.get(key)
        if ai is not None:
            _AI_CACHE.move_to_end(key)
            return ai
    import pyFAI

    ai = pyFAI.load(os.fspath(poni) if not isinstance(poni, dict) else dict(poni))
    with _AI_LOCK:
        _AI_CACHE[key] = ai
        while len(_AI_CACHE) > _AI_CACHE_SIZE:
            _AI_CACHE.popitem(last=False)
    return ai


def integrate(
    frame: np.ndarray,
    poni,
    npt: int = 1000,
    *,
    mask: np.ndarray | None = None,
    radial_range: tuple[float, float] | None = None,
    polarization_factor: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Azimuthally integrate one frame: ``(q_nm, intensity, sigma)``.

    ``poni``: PONI file path or pyFAI geometry dict.  ``mask``: nonzero = ignore
    (in addition to the detector's own mask and pixels < 0).  ``radial_range``:
    (q_min, q_max) in nm⁻¹.  Intensities are per unit solid angle (pyFAI's
    solid-angle correction), so a flat I(q) on the sample gives a flat curve.
    """
    ai = integrator(poni)
    data = np.asarray(frame)
    if data.shape != tuple(ai.detector.shape):
        raise ValueError(
            f"frame shape {data.shape} does not match the detector {ai.detector.shape}"
        )
    res = ai.integrate1d(
        data,
        int(npt),
        unit="q_nm^-1",
        method=("full", "csr", "cython"),
        error_model="poisson",
        mask=mask,
        dummy=-1,
        delta_dummy=0.5,
        radial_range=radial_range,
        polarization_factor=polarization_factor,
    )
    return (
        np.asarray(res.radial, float),
        np.asarray(res.intensity, float),
        np.asarray(res.sigma, float),
    )


_MASK_CACHE: OrderedDict = OrderedDict()


def beamstop_mask(poni, radius_m: float) -> np.ndarray:
    """Boolean mask (True = ignore) of the pixels behind a round beamstop of
    ``radius_m`` centred on the direct beam: every pixel whose q is below the
    beamstop edge, q_edge = 4π sin(atan(r/dist)/2)/λ.  Cached per geometry (do not
    modify it; pyFAI needs it writable); pass it as ``integrate(..., mask=...)``,
    the same array object each time, so that pyFAI reuses its integration engine."""
    key = (_geometry_key(poni), round(float(radius_m), 9))
    m = _MASK_CACHE.get(key)
    if m is None:
        ai = integrator(poni)
        q = ai.qArray(ai.detector.shape)
        q_edge = (
            4
            * math.pi
            * math.sin(0.5 * math.atan(float(radius_m) / ai.dist))
            / (ai.wavelength * 1e9)
        )
        m = q < q_edge
        _MASK_CACHE[key] = m
        while len(_MASK_CACHE) > _AI_CACHE_SIZE:
            _MASK_CACHE.popitem(last=False)
    return m


@dataclass(frozen=True)
class DetectorConfig:
    """What the reduction needs of one detector: its pyFAI geometry and beamstop."""

    geometry: dict
    beamstop_radius: float = 0.0
    poni_file: str = ""

    def mask(self):
        return (
            beamstop_mask(self.geometry, self.beamstop_radius) if self.beamstop_radius > 0 else None
        )

    def warm_up(self, npt: int) -> None:
        """Build pyFAI's integrator and CSR engine (0.2–1 s the first time)."""
        ai = integrator(self.geometry)
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


def integrate_frame(frame, detector: DetectorConfig, npt: int):
    """One frame → ``(q, I, σ)`` (q in nm⁻¹), beamstop masked."""
    return integrate(np.asarray(frame), detector.geometry, npt, mask=detector.mask())


def _as_config(geometry, beamstop_radius) -> DetectorConfig:
    if isinstance(geometry, DetectorConfig):
        return geometry
    geo = (
        _parse_geometry(geometry)
        if not isinstance(geometry, str) or geometry.lstrip().startswith("{")
        else None
    )
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


def reduce_frames(
    saxs_frames, waxs_frames, saxs_geometry, waxs_geometry, *, beamstop_radius=0.0, npt: int = 1000
):
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
