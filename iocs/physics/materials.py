"""X-ray attenuation of the XCT cell's materials and a simple laboratory-tube model.

Pure numpy + ``xraydb``; nothing here knows about EPICS.

Attenuation
-----------
Linear attenuation coefficients come from ``xraydb.material_mu(formula, energy_eV,
density)`` (total cross section, 1/cm) and are returned here in **1/µm**, the unit
of every length in the cell model and the projector.

=========  ==========================  ============  ===============================
name       formula                     ρ (g/cm³)     µ at 30.1 keV (1/cm)
=========  ==========================  ============  ===============================
PEEK       C19H12O3                    1.32          0.369
Cu         Cu                          8.96          96.9
Li         Li                          0.534         0.088
LLZTO      Li6.6La3Zr1.6Ta0.4O12       5.1           56.0
PEO        C2H4O                       1.21          0.373
Ar         Ar                          0.00163       0.0044  (1 atm, 25 °C; ≈ 0)
steel      Fe0.7Cr0.19Ni0.11           7.9           63.5  (metal rods, 1 cm away)
HSE        volume mix, see below       —             4.83
=========  ==========================  ============  ===============================

Hybrid solid electrolyte (HSE)
    A LLZTO ceramic network infiltrated with PEO, modelled as a homogeneous volume
    mix ``µ_HSE = φ·µ_LLZTO + (1−φ)·µ_PEO`` with the ceramic volume fraction
    ``HSE_CERAMIC_FRACTION = φ = 0.08``.  The choice is driven by transmission, not
    by the (unknown) real composition: at the default effective energy (70 kV, LE1
    → ≈30 keV) the horizontal chord through the centre of the ø6 mm HSE disc plus
    the two PEEK housing walls must still transmit a few per cent, or the HSE rows
    would be black and the detached particles invisible.  With φ = 0.08:
    µ_HSE ≈ 4.83 /cm, 6 mm of HSE → exp(−2.90), walls (2 × (1.0 + 0.8) mm PEEK)
    → exp(−0.13): T ≈ 4.8 % on the axis, rising towards the edges of the field.
    (φ = 0.10 would give 2.4 %, φ = 0.15 below 0.5 %.)  The dense "detached"
    ceramic particles of the paper are modelled separately (pure LLZTO spheres,
    see ``xct_cell``), so the HSE matrix stands for the well-infiltrated network.

Energies near the La K edge (38.9 keV) make µ_LLZTO jump (56 → 77 /cm between 30
and 40 keV); the tube model below keeps the effective energy below 38 keV for
every filter at ≤ 70 kV, so this discontinuity of a monochromatic model never
shows up in the default settings.

Tube model
----------
A laboratory source with a bremsstrahlung spectrum is reduced to one *effective
energy* (the monochromatic energy with the same attenuation of a typical sample)
and one open-beam rate.  Both are deliberately simple and documented:

* ``effective_energy_kev(kv, filter) = c_f · kV``, with the hardening factor
  ``c_f`` of the filter (None 0.36, LE1 0.43, LE2 0.46, LE3 0.49, HE1 0.52).
  70 kV / LE1 → 30.1 keV (the energy used in the paper's Figure 3b); without a
  filter the soft part of the spectrum lowers it to 25 keV.  Clipped to ≥ 5 keV.
* ``i0_rate(kv, ua, filter) = R_ref · (ua / 143 µA) · (kV / 70)² · t_f / t_LE1``
  counts / s / full-size pixel at the detector, open beam.  Bremsstrahlung power
  scales ∝ I·V² (Kramers), the filter transmits a fraction ``t_f`` of the
  (detector-weighted) flux (None 1.0, LE1 0.60, LE2 0.42, LE3 0.30, HE1 0.16).
  ``R_ref = 8000 /s`` so that 70 kV / 143 µA (10 W, the Xradia 620 limit) / LE1
  gives 12 000 counts in a 1.5 s exposure, the level of the paper's scans.
  The rate refers to the 4X objective (3.4 µm pixel); ``objective_flux_factor``
  gives a documented relative factor for the other optics (the IOC may use it).
"""

from __future__ import annotations

from functools import lru_cache

import xraydb

__all__ = [
    "MATERIALS",
    "HSE_CERAMIC_FRACTION",
    "FILTERS",
    "mu_per_um",
    "mu_table",
    "effective_energy_kev",
    "i0_rate",
    "objective_flux_factor",
]

#: name -> (chemical formula for xraydb, density g/cm³)
MATERIALS: dict[str, tuple[str, float]] = {
    "PEEK": ("C19H12O3", 1.32),
    "Cu": ("Cu", 8.96),
    "Li": ("Li", 0.534),
    "LLZTO": ("Li6.6La3Zr1.6Ta0.4O12", 5.1),
    "PEO": ("C2H4O", 1.21),
    "Ar": ("Ar", 1.63e-3),
    "steel": ("Fe0.7Cr0.19Ni0.11", 7.9),
}

#: ceramic (LLZTO) volume fraction of the hybrid electrolyte matrix; see module doc
HSE_CERAMIC_FRACTION = 0.08

#: filter -> (hardening factor c_f = E_eff / kV, relative flux transmission t_f)
FILTERS: dict[str, tuple[float, float]] = {
    "None": (0.36, 1.00),
    "LE1": (0.43, 0.60),
    "LE2": (0.46, 0.42),
    "LE3": (0.49, 0.30),
    "HE1": (0.52, 0.16),
}

_R_REF = 8000.0  # counts / s / full-size 4X pixel at 70 kV, 143 µA, LE1
_KV_REF = 70.0
_UA_REF = 143.0
_E_MIN_KEV = 5.0


@lru_cache(maxsize=512)
def _mu_cached(name: str, energy_ev: float) -> float:
    if name == "HSE":
        phi = HSE_CERAMIC_FRACTION
        return phi * _mu_cached("LLZTO", energy_ev) + (1.0 - phi) * _mu_cached("PEO", energy_ev)
    formula, rho = MATERIALS[name]
    return float(xraydb.material_mu(formula, energy_ev, density=rho)) * 1e-4  # 1/cm -> 1/µm


def mu_per_um(name: str, energy_kev: float) -> float:
    """Linear attenuation coefficient of material ``name`` at ``energy_kev``, in 1/µm.

    ``name`` is a key of :data:`MATERIALS` or ``"HSE"``.
    """
    if name != "HSE" and name not in MATERIALS:
        raise KeyError(f"unknown material {name!r}; known: {sorted(MATERIALS) + ['HSE']}")
    # round the key so that float noise in the energy does not defeat the cache
    return _mu_cached(name, round(float(energy_kev) * 1000.0, 3))


def mu_table(energy_kev: float) -> dict[str, float]:
    """All materials' µ (1/µm) at one energy."""
    return {name: mu_per_um(name, energy_kev) for name in (*MATERIALS, "HSE")}


def _filter(filter_name: str) -> tuple[float, float]:
    try:
        return FILTERS[str(filter_name)]
    except KeyError:
        raise ValueError(f"unknown filter {filter_name!r}; one of {list(FILTERS)}") from None


def effective_energy_kev(kv: float, filter_name: str = "LE1") -> float:
    """Effective (monochromatic-equivalent) energy in keV of the tube at ``kv``."""
    c_f, _ = _filter(filter_name)
    return max(_E_MIN_KEV, c_f * float(kv))


def i0_rate(kv: float, ua: float, filter_name: str = "LE1") -> float:
    """Open-beam count rate (counts / s / full-size 4X pixel) at the detector."""
    _, t_f = _filter(filter_name)
    kv = max(0.0, float(kv))
    ua = max(0.0, float(ua))
    t_ref = FILTERS["LE1"][1]
    return _R_REF * (ua / _UA_REF) * (kv / _KV_REF) ** 2 * (t_f / t_ref)


#: relative open-beam counts per pixel for the optics (documented guesses):
#: 4X-wide moves source and detector away (paper: photon count "drastically
#: reduced" for large distances) but has 2.56x the pixel area -> net 0.8;
#: 20X: 1/25 of the pixel area and a less efficient objective -> 0.03.
_OBJECTIVE_FLUX = {"4X": 1.0, "4X-wide": 0.8, "20X": 0.03}


def objective_flux_factor(objective: str) -> float:
    """Counts per pixel relative to the 4X objective (multiply :func:`i0_rate`)."""
    try:
        return _OBJECTIVE_FLUX[objective]
    except KeyError:
        raise ValueError(
            f"unknown objective {objective!r}; one of {list(_OBJECTIVE_FLUX)}"
        ) from None
