"""The operando SAXS/WAXS cell: geometry of the scanned cross-section and a
galvanostatic model of the all-solid-state Li–In | Li6PS5Cl | S–C cell.

Pure numpy (+ ``xraydb`` for attenuation); nothing here knows about EPICS or
detectors.  ``scattering_frames`` turns a :class:`Footprint` into detector frames.

Geometry (all lengths in mm)
----------------------------
The stack sits in the 1 x 5 mm rectangular bore of the PEEK body.  The beam runs
along z through the 1 mm depth of the stack and through two PEEK windows of
0.5 mm (entrance and exit).  The raster scans

* ``x`` — horizontal, perpendicular to the beam, across the 5 mm width of the
  stack; x = 0 at the stack centre (stack: |x| ≤ 2.5).
* ``y`` — vertical, along the stack (pressure) axis; y = 0 at the bottom
  current collector / cathode interface, increasing upwards.

Layers along y (chosen; the paper gives masses, not thicknesses):

==============  =================  ===========================================
y (mm)          layer              composition (volume fractions)
==============  =================  ===========================================
< 0             bottom collector   stainless steel (opaque at 16 keV: e^-37)
0 – 0.35        cathode            Li6PS5Cl : S : C = 50 : 30 : 20 by mass at a
                                   bulk density of 1.0 g/cm³ → 0.268 LPSC,
                                   0.145 S (9.36 mmol/cm³), 0.100 C skeleton;
                                   S → Li2S in place (28.0 vs 15.5 cm³/mol)
0.35 – 0.85     separator          Li6PS5Cl, 0.85 packing
0.85 – 1.15     anode              Li–In / Li6PS5Cl composite: 0.30 metal
                                   (initially LiIn : In = 0.9 : 0.1 molar),
                                   0.60 Li6PS5Cl
> 1.15          top collector      stainless steel
==============  =================  ===========================================

Beside the stack (2.5 < |x| ≤ 10) the beam crosses 20 mm of the PEEK body (no
window pocket there); beyond, air.  The empty cell (``empty=True``) is the body
with its two windows and nothing in the bore.

Why a composite anode: a 1 mm path through dense indium transmits e^-27 at 16 keV
and would show no reflection at all, while the paper sees indium peaks and calls
the anode "a reactive, heterogeneous composite" (In foil pressed at 400 MPa onto
the 6 mg Li6PS5Cl foundation pellet).  With 30 vol% metal the anode transmits
≈1e-3, dim but measurable at synchrotron flux.  The cathode transmits ≈0.35, the
separator ≈0.16 (16 keV, windows included).

Sulfur loading and capacity
---------------------------
Cathode 0.35 x 5 x 1 mm³ = 1.75 mm³ of composite at 1.0 g/cm³ → 1.75 mg, of which
0.525 mg S.  Theoretical capacity 1672 mAh/g S → 0.878 mAh; C/20 = 43.9 µA
(:meth:`SaxsCell.c_rate_current`).  Only a fraction U = 0.45 of the sulfur is
ionically and electronically reachable on the first discharge (≈750 mAh/g S,
typical of operando ASSB cells; it also about fills the carbon pores with Li2S).
The anode holds 17.9 µmol Li, more than the 14.7 µmol the first discharge needs.

Electrochemistry (voltages vs Li–In; add 0.62 V for vs Li/Li⁺)
--------------------------------------------------------------
Charge bookkeeping in mAh, exact for any step size (all pools change linearly
with the charge passed; :meth:`SaxsCell.advance` never integrates an ODE):

* ``fresh``: pristine reachable sulfur (U · Q_th at assembly),
* ``reform``: sulfur re-formed by charging,
* ``rev``: Li2S that can be delithiated again; ``dead``: Li2S cut off.

Discharge converts ``reform`` first (all into ``rev``), then ``fresh``, of which
a fraction r = 0.38 goes to ``rev`` and the rest to ``dead`` (regions that lose
ionic contact, the paper's explanation).  Charge converts ``rev`` back to
``reform``.  Hence a charge recovers ≈37 % of the first discharge (0.38 minus
the capacity left when the voltage walls reach the limits), and the next
discharge matches that charge, as the paper reports.

The voltage is

    E(Λ) = 1.90 − 0.25 Λ                                (rest, Λ = Li2S / (U·Q_th))
    V = E − η(I) − I·R − 1.5 V · exp(−D / 0.01)          discharge (I > 0)
    V = E + η(|I|) + |I|·R + 1.5 V · exp(−C / 0.01)      charge (I < 0)

with η(I) = 0.05 V · asinh(I / 2I₀), I₀ = Q_th / 220 h (η ≈ 0.12 V at C/20),
R = 500 Ω (22 mV at C/20), D and C the dischargeable and chargeable pools as a
fraction of U·Q_th.  At C/20 (9.0 h) the discharge runs from ≈1.76 V down a
sloping plateau to ≈1.53 V and drops to the 0.6 V cut-off; the charge (3.3 h)
runs at ≈1.80–1.89 V and rises to the 2.4 V cut-off: 0.145 of 0.393 mAh,
36.9 %.  Documented limits: 0.6 V and
2.4 V vs Li–In (:attr:`SaxsCellParams.v_min`, ``v_max``); the potentiostat
applies them (:meth:`SaxsCell.time_to_limit` gives the exact time to a limit).
An exhausted anode (no Li left) adds the same kind of wall on discharge.

State of the electrodes
-----------------------
* Cathode: the local fraction of sulfur converted to Li2S is
  c(x, y) = U · w(x, y) · Λ with a formation weight w (mean 1) that is highest
  in the cathode centre and lower at the current collector and the separator
  (w ∝ 0.35 + 0.65 sin²(π ξ), ξ = y / 0.35 mm; the paper: "parts of the cathode
  are not well ionically or electronically connected"), times a smooth lateral
  modulation of ±10 % drawn from ``seed``.  The charge removes Li2S in
  proportion everywhere (the map keeps its shape; the paper's counter-intuitive
  increase at the separator on charge is not modelled).
* Li2S crystallite size: L = 0.8 + 0.95 · (c / c_max)^(1/3) nm, c_max the
  cathode-centre value at full discharge: the size grows with discharge to
  1.75 nm (inside the 2.7 nm pores) and shrinks on charge.
* Carbon pores: relative SAXS contrast 0.02 (pores filled with sulfur, whose
  electron density is close to carbon's: the pristine carbon's pore "hump"
  vanishes) falling linearly to 0.75 x 0.02 where c = c_max (the paper's factor
  0.75).  The 0.2–1 nm⁻¹ SAXS window of a cathode-centre pixel then changes by
  ≈2 % over the first discharge (Porod scattering of the Li6PS5Cl and carbon
  grains dominates): "stable".
* Anode: Li leaves the anode on discharge — first any Li metal, then amorphous
  LiIn, then crystalline LiIn — leaving In; on charge Li returns as amorphous
  LiIn (the paper finds no crystalline LiIn re-forming).  So the crystalline LiIn
  of the pressed pellet is consumed on the first discharge (the first
  lithiation of the cathode): its (220) ring at 26.21 nm⁻¹, the peak the paper
  quotes as "In(110) 26.2", weakens to ≈18 % and does not come back; In(101)
  and In(002) persist and vary with (de)lithiation.
* Li6PS5Cl: unchanged everywhere.

Not modelled: volume changes of the layers (the spring keeps the stack
together), relaxation dynamics at rest (the voltage relaxes instantly to E(Λ)),
temperature, pressure effects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import xraydb

from operando.constants import FARADAY

from . import phases as ph

__all__ = ["SaxsCellParams", "SaxsCell", "Footprint", "mu_per_mm", "LI_PER_MAH_UMOL"]

#: µmol of Li (electrons) per mAh: 3.6 C / 96485.33 C/mol
LI_PER_MAH_UMOL = 3.6 / FARADAY * 1e6
_STEEL = ("Fe0.7Cr0.19Ni0.11", 7.9)


@lru_cache(maxsize=256)
def _mu_phase_per_mm(phase: str, energy_ev: float) -> float:
    if phase == "steel":
        formula, rho = _STEEL
    else:
        p = ph.PHASES[phase]
        formula, rho = p.formula, ph.density(phase)
    return float(xraydb.material_mu(formula, energy_ev, density=rho)) / 10.0


def mu_per_mm(phase: str, energy_kev: float) -> float:
    """Linear attenuation coefficient (1/mm) of a phase at its full density."""
    return _mu_phase_per_mm(phase, round(float(energy_kev) * 1000.0, 3))


@dataclass(frozen=True)
class SaxsCellParams:
    """Every choice of the model, with its unit.  Defaults: see the module doc."""

    # geometry, mm
    width_mm: float = 5.0
    depth_mm: float = 1.0
    window_mm: float = 0.5
    body_chord_mm: float = 20.0
    body_half_width_mm: float = 10.0
    cathode_mm: float = 0.35
    separator_mm: float = 0.50
    anode_mm: float = 0.30
    # cathode composite
    cathode_density_g_cm3: float = 1.0
    mass_fractions: tuple[float, float, float] = (0.5, 0.3, 0.2)  # LPSC, S, C
    carbon_skeleton_density: float = 2.0
    # separator and anode
    separator_packing: float = 0.85
    anode_metal_fraction: float = 0.30
    anode_lpsc_fraction: float = 0.60
    anode_li_in_ratio: float = 0.9  # crystalline LiIn per In at assembly
    anode_li_metal_umol: float = 0.0
    # electrochemistry
    specific_capacity_mah_g: float = 1672.0
    utilization: float = 0.45
    reversible_fraction: float = 0.38
    e0_v: float = 1.90
    e_slope_v: float = 0.25
    tafel_b_v: float = 0.05
    exchange_c_rate: float = 1.0 / 220.0
    r_ohm: float = 500.0
    wall_v: float = 1.5
    wall_width: float = 0.01
    v_min: float = 0.6
    v_max: float = 2.4
    # heterogeneity of Li2S formation
    edge_weight: float = 0.35
    lateral_variation: float = 0.10
    # crystallite sizes, nm
    li2s_size_min_nm: float = 0.8
    li2s_size_max_nm: float = 1.75
    lpsc_size_nm: float = 50.0
    in_size_nm: float = 40.0
    liin_size_nm: float = 30.0
    li_size_nm: float = 50.0
    # SAXS contrast of the carbon pores (relative to empty pores)
    pore_contrast_filled: float = 0.02
    pore_contrast_discharged_factor: float = 0.75

    @property
    def y_separator(self) -> float:
        return self.cathode_mm

    @property
    def y_anode(self) -> float:
        return self.cathode_mm + self.separator_mm

    @property
    def y_top(self) -> float:
        return self.cathode_mm + self.separator_mm + self.anode_mm


@dataclass
class Footprint:
    """What the beam sees at one raster point.

    ``volumes``: phase → volume in the beam footprint (mm³: footprint area times
    path, summed over the path through the cell).  ``attenuated``: the same, each
    slice weighted by the transmission of its own path (what scatters into the
    detector), when an energy was given.  ``transmission``: footprint-mean
    transmission.  ``li2s_size_nm``: Li2S-weighted mean crystallite size (NaN
    without Li2S).  ``pore_contrast``: carbon-weighted relative pore contrast.
    ``sizes``: crystallite size per crystalline phase (nm).
    """

    x_mm: float
    y_mm: float
    beam_w_mm: float
    beam_h_mm: float
    volumes: dict[str, float]
    attenuated: dict[str, float] | None
    transmission: float
    li2s_size_nm: float
    pore_contrast: float
    sizes: dict[str, float] = field(default_factory=dict)

    @property
    def area_mm2(self) -> float:
        return self.beam_w_mm * self.beam_h_mm


@dataclass
class _Pools:
    fresh: float
    reform: float
    rev: float
    dead: float
    li_metal: float  # µmol
    liin_a: float
    liin_c: float
    in_free: float


_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)


class SaxsCell:
    """The all-solid-state Li–S cell under the scanning beam.

    ``advance(t, current)`` moves the cell clock to ``t`` (s) at constant
    ``current`` (A, positive = discharge), exactly, in one step of any length.
    """

    def __init__(self, params: SaxsCellParams | None = None, seed: int = 0):
        self.params = p = params or SaxsCellParams()
        self.seed = int(seed)
        self.time = 0.0
        # --- cathode contents per cm³ of composite
        rho = p.cathode_density_g_cm3
        f_l, f_s, f_c = p.mass_fractions
        self._v_lpsc = rho * f_l / ph.density("Li6PS5Cl")
        self._n_s = rho * f_s / xraydb.atomic_mass("S")  # mol/cm³
        self._v_s0 = self._n_s * ph.molar_volume("S")
        self._li2s_per_s = ph.molar_volume("Li2S") / ph.molar_volume("S")
        self._v_c = rho * f_c / p.carbon_skeleton_density
        v_cath_cm3 = p.cathode_mm * p.width_mm * p.depth_mm * 1e-3
        self.sulfur_mass_mg = rho * f_s * v_cath_cm3 * 1e3
        self.theoretical_capacity_mah = self.sulfur_mass_mg * 1e-3 * p.specific_capacity_mah_g
        self.accessible_capacity_mah = p.utilization * self.theoretical_capacity_mah
        # --- anode contents (µmol)
        v_metal = p.anode_metal_fraction * p.anode_mm * p.width_mm * p.depth_mm * 1e-3  # cm³
        x = p.anode_li_in_ratio
        n_in = v_metal / (x * ph.molar_volume("LiIn") + (1 - x) * ph.molar_volume("In")) * 1e6
        self._anode_volume_cm3 = p.anode_mm * p.width_mm * p.depth_mm * 1e-3
        self._pools = _Pools(
            fresh=self.accessible_capacity_mah,
            reform=0.0,
            rev=0.0,
            dead=0.0,
            li_metal=p.anode_li_metal_umol,
            liin_a=0.0,
            liin_c=x * n_in,
            in_free=(1 - x) * n_in,
        )
        self._li0 = max(self._pools.li_metal + self._pools.liin_c, 1e-12)
        # --- heterogeneity
        rng = np.random.default_rng(self.seed)
        amps = rng.normal(size=3)
        phases_ = rng.uniform(0, 2 * np.pi, size=3)
        u = np.linspace(0, 1, 2001)
        mod = sum(
            a * np.cos(2 * np.pi * (k + 1) * u + f) for k, (a, f) in enumerate(zip(amps, phases_))
        )
        scale = p.lateral_variation / max(np.abs(mod).max(), 1e-12)
        self._lat = (amps * scale, phases_)
        self._wy_mean = p.edge_weight + (1 - p.edge_weight) / 2.0
        self._w_max = (1.0 / self._wy_mean) * (1.0 + p.lateral_variation)
        self._c_max = p.utilization * self._w_max
        if self._c_max > 1.0:
            raise ValueError("utilization x peak formation weight exceeds 1: lower utilization")
        # --- bookkeeping
        self._charge_in = 0.0  # net discharge capacity, mAh
        self._direction = 0
        self._half = 0.0
        self.discharge_capacities_mah: list[float] = []
        self.charge_capacities_mah: list[float] = []

    # ------------------------------------------------------------------ electrochemistry
    @property
    def capacity_mah(self) -> float:
        """Net discharge capacity (discharged minus charged), mAh."""
        return self._charge_in

    @property
    def half_cycle_capacity_mah(self) -> float:
        """Capacity passed since the current last changed direction, mAh (≥ 0)."""
        return self._half

    @property
    def state_of_discharge(self) -> float:
        """Λ: Li2S formed as a fraction of the reachable sulfur (0 pristine, ≈1 after
        the first full discharge, ≈0.63 after the following charge)."""
        return (self._pools.rev + self._pools.dead) / self.accessible_capacity_mah

    def c_rate_current(self, c_rate: float = 1.0 / 20.0) -> float:
        """Current (A) for a C-rate, from the theoretical capacity (1672 mAh/g S)."""
        return self.theoretical_capacity_mah * float(c_rate) * 1e-3

    def _eta(self, i_abs: float) -> float:
        i0 = self.c_rate_current(self.params.exchange_c_rate)
        return self.params.tafel_b_v * math.asinh(i_abs / (2.0 * i0))

    def _voltage(self, pools: _Pools, current_a: float) -> float:
        p = self.params
        q = self.accessible_capacity_mah
        lam = (pools.rev + pools.dead) / q
        e = p.e0_v - p.e_slope_v * lam
        if current_a > 0:
            d = (pools.fresh + pools.reform) / q
            li = (pools.li_metal + pools.liin_a + pools.liin_c) / self._li0
            return (
                e
                - self._eta(current_a)
                - current_a * p.r_ohm
                - p.wall_v * math.exp(-d / p.wall_width)
                - p.wall_v * math.exp(-li / p.wall_width)
            )
        if current_a < 0:
            c = pools.rev / q
            return (
                e
                + self._eta(-current_a)
                - current_a * p.r_ohm
                + p.wall_v * math.exp(-c / p.wall_width)
            )
        return e

    def voltage(self, current_a: float = 0.0) -> float:
        """Cell voltage (V vs Li–In) at the present state while ``current_a`` flows."""
        return self._voltage(self._pools, float(current_a))

    def _apply(self, pools: _Pools, dq: float) -> _Pools:
        """Pools after passing ``dq`` mAh (positive = discharge)."""
        s = replace(pools)
        k = LI_PER_MAH_UMOL
        if dq > 0:
            t1 = min(dq, s.reform)
            s.reform -= t1
            s.rev += t1
            t2 = min(dq - t1, s.fresh)
            s.fresh -= t2
            s.rev += self.params.reversible_fraction * t2
            s.dead += (1 - self.params.reversible_fraction) * t2
            n = (t1 + t2) * k
            for name in ("li_metal", "liin_a", "liin_c"):
                take = min(n, getattr(s, name))
                setattr(s, name, getattr(s, name) - take)
                if name != "li_metal":
                    s.in_free += take
                n -= take
        elif dq < 0:
            t = min(-dq, s.rev)
            s.rev -= t
            s.reform += t
            n = t * k
            alloy = min(n, s.in_free)
            s.in_free -= alloy
            s.liin_a += alloy
            s.li_metal += n - alloy
        return s

    def advance(self, t_new: float, current_a: float) -> None:
        """Move the cell to time ``t_new`` (s) at constant ``current_a`` (A).

        Exact for any step.  Charge passed beyond what the electrodes can take
        (past a voltage limit) goes to side reactions: it counts in
        :attr:`capacity_mah` but converts nothing; use :meth:`time_to_limit` to stop
        at a limit exactly."""
        t_new = float(t_new)
        dt = t_new - self.time
        if dt < 0:
            raise ValueError(f"time runs forward only: {t_new} < {self.time}")
        current_a = float(current_a)
        dq = current_a * dt / 3.6  # A·s → mAh
        if dq != 0.0:
            direction = 1 if dq > 0 else -1
            if direction != self._direction:
                if self._direction > 0:
                    self.discharge_capacities_mah.append(self._half)
                elif self._direction < 0:
                    self.charge_capacities_mah.append(self._half)
                self._direction = direction
                self._half = 0.0
            self._pools = self._apply(self._pools, dq)
            self._charge_in += dq
            self._half += abs(dq)
        self.time = t_new

    def time_to_limit(self, current_a: float, v_limit: float) -> float:
        """Seconds of constant ``current_a`` until the voltage reaches ``v_limit``
        (0 if already there, ``inf`` if it never does)."""
        current_a = float(current_a)
        if current_a == 0:
            return math.inf
        sign = 1.0 if current_a > 0 else -1.0

        def beyond(dq_abs: float) -> bool:
            v = self._voltage(self._apply(self._pools, sign * dq_abs), current_a)
            return v <= v_limit if sign > 0 else v >= v_limit

        if beyond(0.0):
            return 0.0
        hi = (self._pools.fresh + self._pools.reform) if sign > 0 else self._pools.rev
        hi = max(hi, 1e-12) * 1.000001
        if not beyond(hi):
            return math.inf
        lo = 0.0
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            if beyond(mid):
                hi = mid
            else:
                lo = mid
        return hi * 3.6 / abs(current_a)

    # ------------------------------------------------------------------ cathode fields
    def _weight(self, x_mm: np.ndarray, y_mm: np.ndarray) -> np.ndarray:
        p = self.params
        xi = np.clip(np.asarray(y_mm, float) / p.cathode_mm, 0.0, 1.0)
        wy = (p.edge_weight + (1 - p.edge_weight) * np.sin(np.pi * xi) ** 2) / self._wy_mean
        u = np.clip((np.asarray(x_mm, float) + p.width_mm / 2) / p.width_mm, 0.0, 1.0)
        amps, phases_ = self._lat
        wx = 1.0 + sum(
            a * np.cos(2 * np.pi * (k + 1) * u + f) for k, (a, f) in enumerate(zip(amps, phases_))
        )
        return wy * wx

    def li2s_conversion(self, x_mm, y_mm) -> np.ndarray:
        """Local fraction of the cathode's sulfur present as Li2S, c(x, y)."""
        return self.params.utilization * self._weight(x_mm, y_mm) * self.state_of_discharge

    def li2s_size(self, conversion) -> np.ndarray:
        p = self.params
        frac = np.clip(np.asarray(conversion, float) / self._c_max, 0.0, 1.0)
        return p.li2s_size_min_nm + (p.li2s_size_max_nm - p.li2s_size_min_nm) * np.cbrt(frac)

    # ------------------------------------------------------------------ composition
    def layers(self) -> list[tuple[str, float, float]]:
        """(name, y_low, y_high) in mm, bottom to top."""
        p = self.params
        return [
            ("collector", -math.inf, 0.0),
            ("cathode", 0.0, p.y_separator),
            ("separator", p.y_separator, p.y_anode),
            ("anode", p.y_anode, p.y_top),
            ("collector", p.y_top, math.inf),
        ]

    def _region_fractions(self, region: str, xs: np.ndarray, ys: np.ndarray):
        """Volume fractions (arrays over the nodes) of each phase in a layer."""
        p = self.params
        if region == "cathode":
            c = self.li2s_conversion(xs, ys)
            return {
                "Li6PS5Cl": np.full_like(c, self._v_lpsc),
                "S": self._v_s0 * (1.0 - c),
                "Li2S": self._v_s0 * c * self._li2s_per_s,
                "C": np.full_like(c, self._v_c),
            }, c
        if region == "separator":
            return {"Li6PS5Cl": np.full_like(xs, p.separator_packing)}, None
        if region == "anode":
            s = self._pools
            v = self._anode_volume_cm3
            fr = {
                "Li6PS5Cl": p.anode_lpsc_fraction,
                "In": s.in_free * 1e-6 * ph.molar_volume("In") / v,
                "LiIn": s.liin_c * 1e-6 * ph.molar_volume("LiIn") / v,
                "LiIn_am": s.liin_a * 1e-6 * ph.molar_volume("LiIn") / v,
                "Li": s.li_metal * 1e-6 * ph.molar_volume("Li") / v,
            }
            return {k: np.full_like(xs, val) for k, val in fr.items() if val > 0}, None
        return {}, None

    def composition_at(
        self,
        x_mm: float,
        y_mm: float,
        beam_w_mm: float,
        beam_h_mm: float,
        energy_kev: float | None = None,
        *,
        empty: bool = False,
    ) -> Footprint:
        """Phases in a top-hat beam footprint centred at (x, y), ``beam_w`` wide (x)
        and ``beam_h`` high (y); path integrated along the beam.  With
        ``energy_kev`` also the transmission-weighted volumes and transmission.
        ``empty=True``: the empty cell (body and windows only)."""
        p = self.params
        x0, x1 = x_mm - beam_w_mm / 2, x_mm + beam_w_mm / 2
        y0, y1 = y_mm - beam_h_mm / 2, y_mm + beam_h_mm / 2
        if beam_w_mm <= 0 or beam_h_mm <= 0:
            raise ValueError("beam size must be > 0")
        xb = sorted(
            {
                x0,
                x1,
                *[
                    v
                    for v in (
                        -p.body_half_width_mm,
                        -p.width_mm / 2,
                        p.width_mm / 2,
                        p.body_half_width_mm,
                    )
                    if x0 < v < x1
                ],
            }
        )
        yb = sorted({y0, y1, *[v for v in (0.0, p.y_separator, p.y_anode, p.y_top) if y0 < v < y1]})
        mu = (lambda name: mu_per_mm(name, energy_kev)) if energy_kev is not None else None
        vols: dict[str, float] = {}
        att: dict[str, float] = {}
        t_sum = 0.0
        carbon_w = 0.0
        kappa_w = 0.0
        li2s_w = 0.0
        size_w = 0.0

        def add(d, k, v):
            if v > 0:
                d[k] = d.get(k, 0.0) + v

        for xa, xb_ in zip(xb[:-1], xb[1:]):
            xm = 0.5 * (xa + xb_)
            if abs(xm) <= p.width_mm / 2:
                lateral = "stack"
            elif abs(xm) <= p.body_half_width_mm:
                lateral = "body"
            else:
                lateral = "air"
            for ya, yb_ in zip(yb[:-1], yb[1:]):
                area = (xb_ - xa) * (yb_ - ya)
                ym = 0.5 * (ya + yb_)
                if lateral == "air":
                    t_sum += area
                    continue
                if lateral == "body":
                    add(vols, "PEEK", area * p.body_chord_mm)
                    if mu:
                        tr = math.exp(-mu("PEEK") * p.body_chord_mm)
                        add(att, "PEEK", area * p.body_chord_mm * tr)
                        t_sum += area * tr
                    continue
                # stack column: two windows + the layer
                win = 2 * p.window_mm
                add(vols, "PEEK", area * win)
                if empty:
                    if mu:
                        tr = math.exp(-mu("PEEK") * win)
                        add(att, "PEEK", area * win * tr)
                        t_sum += area * tr
                    continue
                region = next(n for n, lo, hi in self.layers() if lo <= ym < hi)
                if region == "collector":
                    if mu:
                        tr = math.exp(-mu("PEEK") * win - mu("steel") * p.depth_mm)
                        add(att, "PEEK", area * win * tr)
                        t_sum += area * tr
                    continue
                # Gauss–Legendre nodes over the sub-rectangle (exact enough for smooth fields)
                gx = xa + (xb_ - xa) * (_GL_X + 1) / 2
                gy = ya + (yb_ - ya) * (_GL_X + 1) / 2
                wts = np.outer(_GL_W, _GL_W).ravel() / 4.0 * area  # mm²
                XX, YY = np.meshgrid(gx, gy, indexing="ij")
                XX, YY = XX.ravel(), YY.ravel()
                fr, conv = self._region_fractions(region, XX, YY)
                if mu:
                    mu_l = sum(f * mu(k) for k, f in fr.items())
                    tr = np.exp(-mu_l * p.depth_mm - mu("PEEK") * win)
                else:
                    tr = np.ones_like(XX)
                add(att, "PEEK", float((wts * tr).sum()) * win)
                t_sum += float((wts * tr).sum())
                for k, f in fr.items():
                    add(vols, k, float((wts * f).sum()) * p.depth_mm)
                    add(att, k, float((wts * f * tr).sum()) * p.depth_mm)
                if conv is not None:
                    li2s = self._v_s0 * conv * self._li2s_per_s * wts * tr
                    li2s_w += float(li2s.sum())
                    size_w += float((li2s * self.li2s_size(conv)).sum())
                    cw = self._v_c * wts * tr
                    kappa = p.pore_contrast_filled * (
                        1
                        - (1 - p.pore_contrast_discharged_factor)
                        * np.clip(conv / self._c_max, 0, 1)
                    )
                    carbon_w += float(cw.sum())
                    kappa_w += float((cw * kappa).sum())
        area_tot = beam_w_mm * beam_h_mm
        sizes = {
            "Li6PS5Cl": p.lpsc_size_nm,
            "In": p.in_size_nm,
            "LiIn": p.liin_size_nm,
            "Li": p.li_size_nm,
            "Li2S": size_w / li2s_w if li2s_w > 0 else p.li2s_size_min_nm,
        }
        return Footprint(
            x_mm=float(x_mm),
            y_mm=float(y_mm),
            beam_w_mm=float(beam_w_mm),
            beam_h_mm=float(beam_h_mm),
            volumes=vols,
            attenuated=att if mu else None,
            transmission=t_sum / area_tot if mu else math.nan,
            li2s_size_nm=size_w / li2s_w if li2s_w > 0 else math.nan,
            pore_contrast=kappa_w / carbon_w if carbon_w > 0 else p.pore_contrast_filled,
            sizes=sizes,
        )

    def transmission_at(
        self, x_mm, y_mm, beam_w_mm, beam_h_mm, energy_kev, *, empty=False
    ) -> float:
        """Footprint-mean transmission (for alignment scans)."""
        return self.composition_at(
            x_mm, y_mm, beam_w_mm, beam_h_mm, energy_kev, empty=empty
        ).transmission

    # ------------------------------------------------------------------ ground truth
    def truth(self, nx: int = 25, ny: int = 35) -> dict:
        """Ground truth for tests (never part of the data path).

        Maps are (ny, nx) over the cathode on cell-centred grids ``grid_x_mm`` and
        ``grid_y_mm``: ``li2s_conversion`` (fraction of local sulfur as Li2S),
        ``li2s_volume_fraction``, ``li2s_size_nm``.
        """
        p = self.params
        gx = (np.arange(nx) + 0.5) / nx * p.width_mm - p.width_mm / 2
        gy = (np.arange(ny) + 0.5) / ny * p.cathode_mm
        X, Y = np.meshgrid(gx, gy)
        c = self.li2s_conversion(X, Y)
        s = self._pools
        return {
            "time_s": self.time,
            "state_of_discharge": self.state_of_discharge,
            "capacity_mah": self.capacity_mah,
            "theoretical_capacity_mah": self.theoretical_capacity_mah,
            "accessible_capacity_mah": self.accessible_capacity_mah,
            "sulfur_mass_mg": self.sulfur_mass_mg,
            "discharge_capacities_mah": list(self.discharge_capacities_mah)
            + ([self._half] if self._direction > 0 else []),
            "charge_capacities_mah": list(self.charge_capacities_mah)
            + ([self._half] if self._direction < 0 else []),
            "grid_x_mm": gx,
            "grid_y_mm": gy,
            "li2s_conversion": c,
            "li2s_volume_fraction": self._v_s0 * c * self._li2s_per_s,
            "li2s_size_nm": np.where(c > 0, self.li2s_size(c), np.nan),
            "li2s_size_max_nm": float(self.li2s_size(c.max())) if c.max() > 0 else math.nan,
            "anode_umol": {
                "In": s.in_free,
                "LiIn": s.liin_c,
                "LiIn_am": s.liin_a,
                "Li": s.li_metal,
            },
            "pools_mah": {"fresh": s.fresh, "reform": s.reform, "rev": s.rev, "dead": s.dead},
            "layers_mm": [(n, lo, hi) for n, lo, hi in self.layers()],
        }
