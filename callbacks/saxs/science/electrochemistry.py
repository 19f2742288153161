"""The electrochemistry at each raster point: net discharged capacity and the
state of discharge (SODC). Definitions: ``docs/reduction-saxs.md``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["net_capacity", "sodc"]


def net_capacity(half_cycle, capacity) -> tuple[np.ndarray, float, bool]:
    """Net discharged capacity (mAh) at each sample, the first discharge's
    capacity Q₁ and whether Q₁ is final (``docs/reduction-saxs.md``, "State of
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


def sodc(q_net, q1, final) -> np.ndarray:
    """State of discharge Q_net / Q₁ per sample (0 where Q_net = 0; NaN until Q₁ is final)."""
    q_net = np.asarray(q_net, float)
    out = np.full(q_net.shape, np.nan)
    out[q_net == 0] = 0.0
    if final and q1 > 0:
        out = q_net / q1
    return out
