"""Radiographs of the XCT cell: an analytic parallel-beam projector and a detector model.

Pure numpy; no EPICS.  The IOC builds one :class:`Projector` per detector setting
and asks it for the transmission of the cell's current :class:`CellGeometry` at each
rotation angle, then for a noisy ``uint16`` frame.

Beam and frames
---------------
* **Parallel beam.**  The Xradia 620 Versa is a cone-beam scanner with geometric
  magnification; at the cell's size and the source/detector distances used for
  the scans the cone angle across the 3.3 mm field is small, and a parallel-beam
  projection is the usual simplification (no magnification: the "pixel size" is
  the voxel size at the sample).  Stage ``y`` therefore has no effect.
* **Detector.**  Row 0 is at the top.  Full-size pixels are ``pixel_um_full`` at the
  sample; with binning b, a binned pixel is the *average* of b × b full-size
  pixels (average mode); leftover rows/columns (970 = 4·242 + 2) are dropped at the
  bottom/right, so a binned image's first row/column coincide with the full
  one's.  Vertically the detector centre (between rows for an even count) sits at
  the stack's mid-height at assembly, z = 152.5 µm, when ``stage_z = 0``;
  ``stage_z`` (mm) lifts the cell, so the image moves up: a detector height
  ``z_det`` sees the cell at ``z = z_det − 1000·stage_z``.
* **Lateral coordinate.**  The rotation axis projects ``axis_offset_px`` full-size
  pixels right of the detector centre.  A point of the cell at ``(x, y)`` (cell
  frame, µm) rotated by θ about the vertical axis projects to
  ``u = x·cosθ − y·sinθ + 1000·stage_x`` relative to the axis (u grows to the
  right, i.e. with the column index).  The coaxial cylinders and discs do not
  change with θ; the particles do.  At ``|stage_x| ≥ 8 mm`` the cell (outer
  radius 5 mm) is out of every field of view: open beam, T = 1.

Transmission (Beer–Lambert with analytic chords)
------------------------------------------------
The cell is a stack of horizontal segments (steel rod | PEEK spacer | Cu coating |
bottom Li (+ rim) | HSE | top Li (+ rim) | Cu | PEEK | steel rod) inside the two
PEEK tubes.  Within a segment, µ depends on the radius only, piecewise constant
on radii R_1 < … < R_n, so the line integral at lateral offset u is
``Σ_k (µ_k − µ_{k+1})·2√(R_k² − u²)`` (µ_{n+1} = 0, air outside; housing walls are
differences of two cylinders).  Chords for all distinct radii are computed once
per call as a matrix, so every segment's optical depth is one small matrix product.

Thin layers (the 0.5 µm Cu coating is 1/7 of a 3.4 µm pixel, 1/27 of a binned one)
are handled exactly in the vertical direction: each pixel row is split at the
segment boundaries into horizontal bands and the *transmission* (not µ) is
averaged with the band widths as weights, ``T_row = Σ_s w_s·exp(−τ_s(u))``, a
(rows × segments) @ (segments × columns) product.  Horizontally each full-size
column is supersampled (``col_supersample`` = 4 points) and binned columns are the
mean of their full-size columns.

Ceramic particles (LLZTO spheres) multiply the layered transmission by
``exp(−(µ_LLZTO − µ_HSE)·2√(a² − d²))`` sampled on a 2 × 2 sub-grid of every
full-size pixel in the band of rows that contains particles; the product with the
full-size layered transmission is then block-averaged for binned detectors.  So
binned = mean of full-size 4 × 4 blocks, to rounding, particles included.

Caching and speed
-----------------
The θ-independent layered part is cached per (geometry without particles,
stage_x, stage_z); geometry lengths are rounded to 1 nm first (the values used
are the rounded ones, so a result never depends on the cache state).  Measured on
the 2-core development machine (``python -m operando.iocs.physics.xct_phantom``
prints similar figures), default geometry with 90 particles, 4X objective:

=========================================  ==========  ===========
call                                       binned 4×4  full size
=========================================  ==========  ===========
transmission, cached layers (new θ)        3 ms        5–8 ms
transmission, new geometry (cell advanced) 3–8 ms      20–40 ms
frame() (3 exposures, 12 000 counts)       1 ms        30 ms
XCTCell.advance + geometry()               0.03 ms     —
=========================================  ==========  ===========

(ranges: the machine was shared with other jobs, load ≈ 2–4).

Detector model (``frame``)
--------------------------
``counts = Poisson(n·b²·I0·T·flat) / (n·b²) + dark`` where n exposures are averaged
and b² full-size pixels per binned pixel (the sum of independent Poisson draws is
Poisson).  Where the expected total ``n·b²·I0·T·flat`` is ≥ 1000 counts the Poisson
draw is replaced by a Gaussian of the same mean and variance (relative skewness
error < 3 %; numpy's Poisson sampler is 4x slower and would dominate a full-size
frame); below, it is exact.  ``flat`` is a fixed smooth beam profile (±10 %, vignetting and a tilt)
times a fixed per-pixel gain (σ = 2 %, seeded), block-averaged when binned, so
that flat-field correction matters; ``dark`` is a fixed offset map (100 counts,
σ = 1.5 counts fixed pattern) plus read noise σ = 3 counts per full-size pixel per
exposure, reduced by √(n·b²) by the averaging.  ``source_on=False`` gives a dark
frame.  Rounded and clipped to uint16.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from math import cos, radians, sin

import numpy as np

from . import materials
from .xct_cell import CellGeometry

__all__ = ["OBJECTIVES", "DetectorGeometry", "Projector", "Z_CENTER_UM"]

#: objective -> (full-size pixel at the sample in µm, columns, rows)
OBJECTIVES: dict[str, tuple[float, int, int]] = {
    "4X": (3.4, 1000, 970),  # FOV 3.4 x 3.3 mm (paper, operando scans)
    "4X-wide": (5.44, 993, 1011),  # FOV 5.4 x 5.5 mm (post-mortem overview)
    "20X": (0.68, 1000, 970),  # FOV 0.68 x 0.66 mm (post-mortem high resolution)
}

#: cell height (µm) imaged at the detector's vertical centre when stage_z = 0
Z_CENTER_UM = 152.5

_DARK_OFFSET = 100.0
_DARK_FIXED_SIGMA = 1.5
_READ_SIGMA = 3.0
_GAIN_SIGMA = 0.02
_POISSON_EXACT_BELOW = 1000.0  # total counts per pixel; Gaussian approximation above


@dataclass(frozen=True)
class DetectorGeometry:
    """Detector format.  ``n_rows``, ``n_cols``, ``pixel_um`` are after binning."""

    objective: str
    pixel_um_full: float
    n_cols_full: int
    n_rows_full: int
    binning: int = 1

    @classmethod
    def for_objective(cls, objective: str = "4X", binning: int = 1) -> DetectorGeometry:
        try:
            pix, nc, nr = OBJECTIVES[objective]
        except KeyError:
            raise ValueError(
                f"unknown objective {objective!r}; one of {list(OBJECTIVES)}"
            ) from None
        if int(binning) not in (1, 2, 4):
            raise ValueError(f"binning must be 1, 2 or 4, not {binning!r}")
        return cls(objective, pix, nc, nr, int(binning))

    @property
    def n_rows(self) -> int:
        return self.n_rows_full // self.binning

    @property
    def n_cols(self) -> int:
        return self.n_cols_full // self.binning

    @property
    def pixel_um(self) -> float:
        return self.pixel_um_full * self.binning

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_cols)


def _chords(radii: np.ndarray, u: np.ndarray) -> np.ndarray:
    """2√(R² − u²) (0 outside) for every radius (rows) and lateral offset (columns)."""
    d = radii[:, None] ** 2 - u[None, :] ** 2
    return 2.0 * np.sqrt(np.maximum(d, 0.0))


def _overlap_weights(
    lo: np.ndarray, hi: np.ndarray, bounds: np.ndarray, height: float
) -> np.ndarray:
    """Fraction of each row [lo, hi] covered by each segment [bounds[s], bounds[s+1]]."""
    a = bounds[:-1][None, :]
    b = bounds[1:][None, :]
    w = np.minimum(hi[:, None], b) - np.maximum(lo[:, None], a)
    return np.maximum(w, 0.0) / height


class Projector:
    """Analytic parallel-beam projector of :class:`CellGeometry` onto a detector."""

    def __init__(
        self,
        det: DetectorGeometry,
        energy_kev: float = 30.0,
        axis_offset_px: float = 3.7,
        seed: int = 0,
        *,
        col_supersample: int = 4,
        z_center_um: float = Z_CENTER_UM,
        cache_size: int = 8,
    ):
        self.det = det
        self.axis_offset_px = float(axis_offset_px)
        self.seed = int(seed)
        self.col_supersample = int(col_supersample)
        self.z_center_um = float(z_center_um)
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = int(cache_size)
        self.energy_kev = energy_kev  # property: sets µ, clears the cache

        b = det.binning
        p = det.pixel_um_full
        self._nr_used = det.n_rows * b  # full-size rows/cols that make up the binned image
        self._nc_used = det.n_cols * b
        # full-size column centres relative to the rotation axis (µm), before stage_x
        jf = np.arange(self._nc_used, dtype=float)
        self._u_full = (jf + 0.5 - det.n_cols_full / 2.0 - self.axis_offset_px) * p
        s = self.col_supersample
        off = ((np.arange(s) + 0.5) / s - 0.5) * p
        self._u_sub = (self._u_full[:, None] + off[None, :]).ravel()
        # particle sub-grid: 2 x 2 per full-size pixel
        self._u_psub = (self._u_full[:, None] + np.array([-0.25, 0.25])[None, :] * p).ravel()
        # full-size row edges (detector height, µm)
        self._z_top = self.z_center_um + det.n_rows_full * p / 2.0
        i = np.arange(self._nr_used, dtype=float)
        self._zrow_hi = self._z_top - i * p
        self._zrow_lo = self._z_top - (i + 1.0) * p
        ib = np.arange(det.n_rows, dtype=float)
        self._zbin_hi = self._z_top - ib * b * p
        self._zbin_lo = self._z_top - (ib + 1.0) * b * p

        self._make_detector_patterns()

    # ------------------------------------------------------------------ setup
    @property
    def energy_kev(self) -> float:
        return self._energy_kev

    @energy_kev.setter
    def energy_kev(self, value: float) -> None:
        self._energy_kev = float(value)
        self.mu = materials.mu_table(self._energy_kev)  # 1/µm
        self._cache.clear()

    def _make_detector_patterns(self) -> None:
        det = self.det
        rng = np.random.default_rng([self.seed, 7])
        nr, nc = det.n_rows_full, det.n_cols_full
        y = np.linspace(-1.0, 1.0, nr)[:, None]
        x = np.linspace(-1.0, 1.0, nc)[None, :]
        profile = 1.0 - 0.06 * (x * x + 0.8 * y * y) + 0.02 * x - 0.015 * y
        profile /= profile.mean()
        gain = 1.0 + np.clip(
            rng.normal(0.0, _GAIN_SIGMA, (nr, nc)), -3 * _GAIN_SIGMA, 3 * _GAIN_SIGMA
        )
        flat = profile * gain
        dark = _DARK_OFFSET + rng.normal(0.0, _DARK_FIXED_SIGMA, (nr, nc))
        self.flat_full = flat
        self.dark_full = dark
        self.flat = self._bin(flat[: self._nr_used, : self._nc_used])
        self.dark = self._bin(dark[: self._nr_used, : self._nc_used])

    def _bin(self, a: np.ndarray) -> np.ndarray:
        b = self.det.binning
        if b == 1:
            return a.copy()
        r, c = a.shape
        return a.reshape(r // b, b, c // b, b).mean(axis=(1, 3))

    # ------------------------------------------------------------------ layered part
    def _segments(self, g: CellGeometry) -> tuple[np.ndarray, list[list[tuple[float, float]]]]:
        """z boundaries (cell frame) and, per segment, the radial µ profile [(R, µ), ...]."""
        mu = self.mu
        r_in = g.inner_rod_id_um / 2.0
        housing = [
            (g.inner_rod_od_um / 2.0, mu["PEEK"]),
            (g.outer_rod_id_um / 2.0, mu["Ar"]),
            (g.outer_rod_od_um / 2.0, mu["PEEK"]),
        ]
        core_r = min(g.li_core_diameter_um / 2.0, r_in)
        li_r = min(max(g.li_diameter_um / 2.0, core_r), r_in)
        hse_r = min(g.hse_diameter_um / 2.0, r_in)
        c = g.cu_coating_um
        L = g.spacer_length_um
        top_t = max(g.top_cu_z - g.li_top_bottom_z, 0.0)
        bot_t = max(g.hse_bottom_z - g.bottom_cu_z, 0.0)
        rim_t = min(g.top_li_rim_um, top_t)
        rim_b = min(g.bottom_li_rim_um, bot_t)
        mu_li_top = mu["Li"] * (1.0 - min(g.top_void_um / top_t, 1.0)) if top_t > 0 else mu["Li"]
        mu_li_bot = mu["Li"] * (1.0 - min(g.bottom_void_um / bot_t, 1.0)) if bot_t > 0 else mu["Li"]

        def fill(m):
            return [(r_in, m)]

        def li(m_core, rim):
            prof = [(core_r, m_core)]
            if rim:
                prof.append((li_r, mu["Li"]))
            prof.append((r_in, mu["Ar"]))
            return prof

        bounds = [
            -np.inf,
            g.bottom_cu_z - L,
            g.bottom_cu_z - c,
            g.bottom_cu_z,
            g.bottom_cu_z + rim_b,
            g.hse_bottom_z,
            g.li_top_bottom_z,
            g.top_cu_z - rim_t,
            g.top_cu_z,
            g.top_cu_z + c,
            g.top_cu_z + L,
            np.inf,
        ]
        inner = [
            fill(mu["steel"]),  # bottom metal rod
            fill(mu["PEEK"]),  # bottom spacer
            fill(mu["Cu"]),  # bottom Cu coating
            li(mu_li_bot, True),  # bottom Li with its rim
            li(mu_li_bot, False),  # bottom Li core
            [(hse_r, mu["HSE"]), (r_in, mu["Ar"])],  # HSE
            li(mu_li_top, False),  # top Li core
            li(mu_li_top, True),  # top Li with its rim
            fill(mu["Cu"]),  # top Cu coating
            fill(mu["PEEK"]),  # top spacer
            fill(mu["steel"]),  # top metal rod
        ]
        profiles = [prof + housing for prof in inner]
        return np.asarray(bounds, dtype=float), profiles

    def _segment_transmissions(self, profiles, u: np.ndarray) -> np.ndarray:
        """(n_seg, len(u)) transmission exp(−∫µ dl) of every segment at lateral offsets u."""
        radii = np.unique(np.array([r for prof in profiles for r, _ in prof]))
        coef = np.zeros((len(profiles), len(radii)))
        for s, prof in enumerate(profiles):
            mus = [m for _, m in prof] + [0.0]
            for k, (r, m) in enumerate(prof):
                coef[s, np.searchsorted(radii, r)] += m - mus[k + 1]
        tau = coef @ _chords(radii, u)
        return np.exp(-tau)

    def _layered(self, g: CellGeometry, stage_x_mm: float, stage_z_mm: float) -> dict:
        key = (
            tuple(round(v, 3) for v in g.layer_key()),
            round(stage_x_mm * 1000.0, 3),
            round(stage_z_mm * 1000.0, 3),
        )
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        gr = _RoundedGeometry(key[0])
        dx, dz = key[1], key[2]
        bounds, profiles = self._segments(gr)
        s = self.col_supersample
        t_sub = self._segment_transmissions(profiles, self._u_sub - dx)
        t_full_cols = t_sub.reshape(len(profiles), self._nc_used, s).mean(
            axis=2
        )  # (n_seg, nc_full)
        b = self.det.binning
        p = self.det.pixel_um_full
        if b == 1:
            t_cols = t_full_cols
        else:
            t_cols = t_full_cols.reshape(len(profiles), self.det.n_cols, b).mean(axis=2)
        w = _overlap_weights(self._zbin_lo - dz, self._zbin_hi - dz, bounds, b * p)
        T = np.clip(w @ t_cols, 1e-300, 1.0)
        entry = {"T": T, "bounds": bounds, "t_full_cols": t_full_cols, "dz": dz, "dx": dx}
        self._cache[key] = entry
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return entry

    # ------------------------------------------------------------------ public
    def transmission(
        self, geom: CellGeometry, theta_deg: float, stage_x_mm: float = 0.0, stage_z_mm: float = 0.0
    ) -> np.ndarray:
        """(n_rows, n_cols) float64 transmission in (0, 1] of the cell at angle ``theta_deg``."""
        lay = self._layered(geom, float(stage_x_mm), float(stage_z_mm))
        T = lay["T"]
        parts = geom.particles
        if parts is None or len(parts) == 0:
            return T.copy()
        det = self.det
        p = det.pixel_um_full
        b = det.binning
        dx, dz = lay["dx"], lay["dz"]
        th = radians(float(theta_deg))
        x, y, z, a = parts[:, 0], parts[:, 1], parts[:, 2], parts[:, 3]
        u = x * cos(th) - y * sin(th) + dx
        zi = z + dz  # detector height
        u_lo, u_hi = self._u_full[0] - p / 2.0, self._u_full[-1] + p / 2.0
        z_lo, z_hi = self._zrow_lo[-1], self._zrow_hi[0]
        vis = (u + a > u_lo) & (u - a < u_hi) & (zi + a > z_lo) & (zi - a < z_hi) & (a > 0)
        if not np.any(vis):
            return T.copy()
        u, zi, a = u[vis], zi[vis], a[vis]
        # band of full-size rows touched by particles, aligned to binned rows
        r0 = int(np.floor((self._z_top - (zi + a).max()) / p))
        r1 = int(np.ceil((self._z_top - (zi - a).min()) / p))
        r0 = max(0, (r0 // b) * b)
        r1 = min(self._nr_used, -(-r1 // b) * b)
        if r1 <= r0:
            return T.copy()
        nr = r1 - r0
        # sub-row centres (2 per full row), top to bottom
        zsub = self._z_top - (r0 + (np.arange(2 * nr) + 0.5) / 2.0) * p
        usub = self._u_psub
        dmu = self.mu["LLZTO"] - self.mu["HSE"]
        tau = np.zeros((2 * nr, usub.size))
        half = p / 2.0  # sub-sample pitch
        for uc, zc, ac in zip(u, zi, a):
            c0 = max(0, int(np.floor((uc - ac - usub[0]) / half)))
            c1 = min(usub.size, int(np.ceil((uc + ac - usub[0]) / half)) + 1)
            q0 = max(0, int(np.floor((zsub[0] - (zc + ac)) / half)))
            q1 = min(zsub.size, int(np.ceil((zsub[0] - (zc - ac)) / half)) + 1)
            if c1 <= c0 or q1 <= q0:
                continue
            du = usub[c0:c1] - uc
            dzz = zsub[q0:q1] - zc
            d2 = ac * ac - dzz[:, None] ** 2 - du[None, :] ** 2
            tau[q0:q1, c0:c1] += dmu * 2.0 * np.sqrt(np.maximum(d2, 0.0))
        pf = np.exp(-tau).reshape(nr, 2, self._nc_used, 2).mean(axis=(1, 3))
        w = _overlap_weights(self._zrow_lo[r0:r1] - dz, self._zrow_hi[r0:r1] - dz, lay["bounds"], p)
        band = (w @ lay["t_full_cols"]) * pf
        out = T.copy()
        if b == 1:
            out[r0:r1] = band
        else:
            out[r0 // b : r1 // b] = band.reshape(nr // b, b, det.n_cols, b).mean(axis=(1, 3))
        return np.clip(out, 1e-300, 1.0)

    def frame(
        self,
        T: np.ndarray,
        counts_per_exposure: float,
        n_exposures: int,
        rng: np.random.Generator,
        source_on: bool = True,
    ) -> np.ndarray:
        """A uint16 frame: mean of ``n_exposures`` exposures of ``counts_per_exposure``
        open-beam counts per full-size pixel, through transmission ``T``."""
        det = self.det
        n = int(n_exposures)
        if n < 1:
            raise ValueError("n_exposures must be >= 1")
        T = np.asarray(T, dtype=float)
        if T.shape != det.shape:
            raise ValueError(f"T has shape {T.shape}, detector is {det.shape}")
        m = n * det.binning**2  # independent full-size exposures averaged per pixel
        z = rng.standard_normal(det.shape)
        if source_on and counts_per_exposure > 0:
            lam = m * float(counts_per_exposure) * np.clip(T, 0.0, None) * self.flat  # total counts
            # Gaussian N(lam, lam + m·σ_read²) where lam >= _POISSON_EXACT_BELOW (4x faster
            # than numpy's Poisson for a full-size frame; same mean and variance, skewness
            # 1/√lam < 3 %), exact Poisson + Gaussian read noise below
            sig = (lam + np.sqrt(lam + m * _READ_SIGMA**2) * z) / m
            small = lam < _POISSON_EXACT_BELOW
            if small.any():
                sig[small] = rng.poisson(lam[small]) / m + z[small] * (_READ_SIGMA / np.sqrt(m))
        else:
            sig = z * (_READ_SIGMA / np.sqrt(m))
        img = sig + self.dark
        return np.clip(np.rint(img), 0, 65535).astype(np.uint16)


class _RoundedGeometry:
    """Attribute view of a rounded ``CellGeometry.layer_key()`` (no particles)."""

    def __init__(self, values: tuple):
        for name, v in zip(CellGeometry.LAYER_FIELDS, values, strict=True):
            setattr(self, name, float(v))


def _benchmark() -> None:  # pragma: no cover - manual timing helper
    import time

    from .xct_cell import XCTCell

    for binning in (4, 1):
        cell = XCTCell()
        proj = Projector(DetectorGeometry.for_objective("4X", binning), energy_kev=30.1)
        g = cell.geometry()
        proj.transmission(g, 0.0)
        n = 100 if binning == 4 else 20
        t0 = time.perf_counter()
        for k in range(n):
            T = proj.transmission(g, 0.225 * k)
        t_cached = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for k in range(n):
            cell.advance(cell.t + 60.0, 0.0)
            T = proj.transmission(cell.geometry(), 0.225 * k)
        t_new = (time.perf_counter() - t0) / n
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for _ in range(n):
            proj.frame(T, 12000.0, 3, rng)
        t_frame = (time.perf_counter() - t0) / n
        print(
            f"binning {binning} {T.shape}: cached layers {t_cached * 1e3:.1f} ms, "
            f"new geometry {t_new * 1e3:.1f} ms, frame {t_frame * 1e3:.1f} ms"
        )


if __name__ == "__main__":  # pragma: no cover
    _benchmark()
