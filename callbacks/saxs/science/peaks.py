"""Peaks: fits (Gaussian or pseudo-Voigt + line, satellites sharing the width),
Scherrer sizes, Li2S in a difference pattern, the instrumental width from the
Li6PS5Cl reflections. Crystallography used and why: ``docs/reduction-saxs.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit

__all__ = [
    "LI2S_A_NM",
    "LI2S_Q111",
    "LI2S_SATELLITES",
    "LPSC_A_NM",
    "PeakFit",
    "fit_peak",
    "peak_position",
    "scherrer_size",
    "li2s_fit",
    "li2s_scherrer_size",
    "lpsc_reflections",
    "instrument_fwhm_from_reference",
]

LI2S_A_NM = 0.571
LI2S_Q111 = 2 * math.pi * math.sqrt(3) / LI2S_A_NM  # 19.06 nm⁻¹
#: q ratios to (111) of the other Li2S reflections (fcc: 200, 220, 311, 222)
LI2S_SATELLITES = tuple(math.sqrt(n / 3.0) for n in (4, 8, 11, 12))
#: Li6PS5Cl argyrodite lattice parameter (nm), F-43m: the stable reflections
LPSC_A_NM = 0.985

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass
class PeakFit:
    """Result of :func:`fit_peak`; ``area`` is the main peak's integral (I·nm⁻¹)."""

    center: float
    fwhm: float
    area: float
    eta: float
    background: tuple[float, float]  # value at the window centre, slope
    satellite_areas: tuple[float, ...]
    center_err: float
    fwhm_err: float
    success: bool
    reduced_chi2: float = math.nan

    @property
    def height(self) -> float:
        s = self.fwhm * _FWHM_TO_SIGMA
        g = 1.0 / (s * math.sqrt(2 * math.pi))
        lor = 2.0 / (math.pi * self.fwhm)
        return self.area * (self.eta * lor + (1 - self.eta) * g)


def _profile(x, c, fwhm, eta):
    s = fwhm * _FWHM_TO_SIGMA
    g = np.exp(-0.5 * ((x - c) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    if eta == 0.0:
        return g
    gam = fwhm / 2.0
    return eta * gam / (math.pi * ((x - c) ** 2 + gam * gam)) + (1.0 - eta) * g


def fit_peak(
    q: np.ndarray,
    intensity: np.ndarray,
    q_window: tuple[float, float],
    *,
    shape: str = "gauss",
    satellites: tuple[float, ...] = (),
    sigma: np.ndarray | None = None,
    center_guess: float | None = None,
    fwhm_guess: float | None = None,
    fwhm_bounds: tuple[float, float] | None = None,
) -> PeakFit:
    """Fit one peak + linear background inside ``q_window`` (``docs/reduction-saxs.md``).

    Starting values come from the data (the maximum above a line through the
    window ends) unless ``center_guess`` / ``fwhm_guess`` are given;
    ``fwhm_bounds`` limits the width (default: two bin widths to 4x the window).
    """
    if shape not in ("gauss", "pvoigt"):
        raise ValueError("shape must be 'gauss' or 'pvoigt'")
    q = np.asarray(q, float)
    y = np.asarray(intensity, float)
    lo, hi = q_window
    sel = (q >= lo) & (q <= hi) & np.isfinite(y)
    if sigma is not None:
        sg = np.asarray(sigma, float)
        sel &= np.isfinite(sg) & (sg > 0)
    if sel.sum() < 8:
        raise ValueError(f"too few points in the window {q_window}")
    x, yy = q[sel], y[sel]
    sg = None if sigma is None else np.asarray(sigma, float)[sel]
    xm = 0.5 * (x[0] + x[-1])
    n_sat = len(satellites)
    ratios = np.asarray(satellites, float)

    def model(xv, c, fwhm, area, b0, b1, *rest):
        eta = rest[0] if shape == "pvoigt" else 0.0
        sat = rest[1:] if shape == "pvoigt" else rest
        out = b0 + b1 * (xv - xm) + area * _profile(xv, c, fwhm, eta)
        for r, a in zip(ratios, sat):
            out = out + a * _profile(xv, c * r, fwhm, eta)
        return out

    # starting values: background through the window ends, peak at the maximum above it
    k = max(3, len(x) // 20)
    y0, y1 = np.median(yy[:k]), np.median(yy[-k:])
    b1_0 = (y1 - y0) / (x[-1] - x[0])
    b0_0 = 0.5 * (y0 + y1)
    resid = yy - (b0_0 + b1_0 * (x - xm))
    i_max = int(np.argmax(resid))
    c0 = float(x[i_max])
    h0 = max(float(resid[i_max]), 1e-12)
    above = np.where(resid > h0 / 2)[0]
    fw0 = float(x[above[-1]] - x[above[0]]) if above.size > 1 else (hi - lo) / 4
    fw0 = min(max(fw0, 3 * float(np.median(np.diff(x)))), 2 * (hi - lo))
    if center_guess is not None:
        c0 = float(center_guess)
        h0 = max(float(np.interp(c0, x, resid)), 1e-12)
    if fwhm_guess is not None:
        fw0 = float(fwhm_guess)
    a0 = h0 * fw0 * 1.0645
    p0 = [c0, fw0, a0, b0_0, b1_0]
    w_lo, w_hi = (
        fwhm_bounds
        if fwhm_bounds is not None
        else (2 * float(np.median(np.diff(x))), 4 * (hi - lo))
    )
    lb = [lo, w_lo, 0.0, -np.inf, -np.inf]
    ub = [hi, w_hi, np.inf, np.inf, np.inf]
    if shape == "pvoigt":
        p0.append(0.3)
        lb.append(0.0)
        ub.append(1.0)
    p0 += [0.1 * a0] * n_sat
    lb += [0.0] * n_sat
    ub += [np.inf] * n_sat
    p0 = np.clip(p0, np.array(lb) + 1e-12, np.array(ub) - 1e-12).tolist()
    try:
        popt, pcov = curve_fit(
            model,
            x,
            yy,
            p0=p0,
            sigma=sg,
            absolute_sigma=sg is not None,
            bounds=(lb, ub),
            maxfev=20000,
        )
        ok = bool(np.all(np.isfinite(popt)))
    except (RuntimeError, ValueError):
        popt, pcov, ok = np.array(p0), np.full((len(p0), len(p0)), np.nan), False
    err = (
        np.sqrt(np.clip(np.diag(pcov), 0, None))
        if np.all(np.isfinite(pcov))
        else np.full(len(popt), np.nan)
    )
    r = (yy - model(x, *popt)) / (sg if sg is not None else 1.0)
    chi2 = float(np.sum(r * r) / max(len(x) - len(popt), 1))
    eta = float(popt[5]) if shape == "pvoigt" else 0.0
    sat = tuple(float(v) for v in popt[5 + (shape == "pvoigt") :])
    return PeakFit(
        center=float(popt[0]),
        fwhm=float(popt[1]),
        area=float(popt[2]),
        eta=eta,
        background=(float(popt[3]), float(popt[4])),
        satellite_areas=sat,
        center_err=float(err[0]),
        fwhm_err=float(err[1]),
        success=ok,
        reduced_chi2=chi2,
    )


def peak_position(q, intensity, q_window, **kw) -> float:
    """Fitted peak centre (nm⁻¹) inside ``q_window`` (keywords as :func:`fit_peak`)."""
    return fit_peak(q, intensity, q_window, **kw).center


def scherrer_size(
    q, intensity, q_window, instrument_fwhm: float = 0.0, K: float = 0.9, **kw
) -> float:
    """Crystallite size (nm) from the fitted FWHM: L = 2πK / sqrt(Δq² − Δq_instr²).

    Returns ``inf`` when the fitted width does not exceed the instrumental one.
    Keywords as :func:`fit_peak` (``shape``, ``satellites``, ``sigma``).
    """
    fit = fit_peak(q, intensity, q_window, **kw)
    w2 = fit.fwhm**2 - float(instrument_fwhm) ** 2
    if not w2 > 0:
        return math.inf
    return 2 * math.pi * K / math.sqrt(w2)


def li2s_fit(q, difference, *, q_window=None, sigma=None) -> PeakFit:
    """Fit Li2S in a difference pattern I − I_OCV: the (111) reflection with the
    (200), (220), (311), (222) reflections as satellites sharing its width, over
    the whole WAXS range by default (1–2 nm crystallites give 3–6 nm⁻¹ wide
    peaks).  Starts at the lattice position and three widths (sizes 0.8, 1.5,
    5 nm) and keeps the best fit; widths limited to sizes 0.4–200 nm."""
    q = np.asarray(q, float)
    d = np.asarray(difference, float)
    if q_window is None:
        fin = q[np.isfinite(d)]
        q_window = (float(fin[0]), float(fin[-1]))
    best = None
    for size0 in (0.8, 1.5, 5.0):
        fit = fit_peak(
            q,
            d,
            q_window,
            satellites=LI2S_SATELLITES,
            sigma=sigma,
            center_guess=LI2S_Q111,
            fwhm_guess=2 * math.pi * 0.9 / size0,
            fwhm_bounds=(2 * math.pi * 0.9 / 200.0, 2 * math.pi * 0.9 / 0.4),
        )
        if fit.success and (best is None or fit.reduced_chi2 < best.reduced_chi2):
            best = fit
    if best is None:
        raise RuntimeError("Li2S fit failed")
    return best


def li2s_scherrer_size(
    q, difference, instrument_fwhm: float = 0.0, *, q_window=None, K: float = 0.9, sigma=None
) -> float:
    """Li2S crystallite size (nm) from a difference pattern I − I_OCV (see
    :func:`li2s_fit`), the instrumental FWHM removed in quadrature."""
    fit = li2s_fit(q, difference, q_window=q_window, sigma=sigma)
    w2 = fit.fwhm**2 - float(instrument_fwhm) ** 2
    return 2 * math.pi * K / math.sqrt(w2) if w2 > 0 else math.inf


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


def instrument_fwhm_from_reference(
    q, intensity, sigma=None, *, a_nm: float = LPSC_A_NM, half_window: float = 0.4
) -> float:
    """Instrumental FWHM (nm⁻¹) from the Li6PS5Cl reflections of a (summed) OCV
    WAXS curve: median fitted FWHM of the isolated, well-determined reflections;
    NaN if none could be fitted.  Why this is the choice: ``docs/reduction-saxs.md``."""
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
            fit = fit_peak(
                q,
                y,
                (q0 - half_window, q0 + half_window),
                sigma=sigma,
                center_guess=q0,
                fwhm_guess=0.2,
                fwhm_bounds=(0.01, 0.6),
            )
        except (ValueError, RuntimeError):
            continue
        if (
            fit.success
            and abs(fit.center - q0) < 0.1
            and fit.area > 0
            and np.isfinite(fit.fwhm_err)
            and fit.fwhm_err < 0.1 * fit.fwhm
        ):
            widths.append(fit.fwhm)
    return float(np.median(widths)) if widths else math.nan
