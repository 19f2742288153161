"""Locate a cell's stack from transmission profiles (pure numpy, no bluesky).

A vertical transmission scan across the stack crosses the layers at distinct
transmission levels (current collector ≈ 0, cathode, separator, anode);
a horizontal scan across the cell finds the window of the cell body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .validation import grid_shape


@dataclass(frozen=True)
class Segment:
    lo: float
    hi: float
    level: float

    @property
    def width(self) -> float:
        return self.hi - self.lo


@dataclass(frozen=True)
class GridBounds:
    """Where to raster: x and y ranges (motor units), and the layers found."""

    x: tuple[float, float]
    y: tuple[float, float]
    layers: list = field(default_factory=list)

    def grid(self, shape: tuple[int, int]) -> dict:
        """Start/stop per axis for a (ny, nx) grid inset half a step from the edges."""
        ny, nx = grid_shape("shape", shape)
        (x0, x1), (y0, y1) = self.x, self.y
        dx = (x1 - x0) / nx
        dy = (y1 - y0) / ny
        return {"x_range": (x0 + dx / 2, x1 - dx / 2), "y_range": (y0 + dy / 2, y1 - dy / 2)}


def segment_profile(positions, transmission, *, min_jump: float = 0.15) -> list[Segment]:
    """Split a transmission profile into plateaus at its steps.

    A step is a change between neighbouring points larger than ``min_jump`` of
    the profile's range; each boundary lies midway between the two points.
    """
    pos = np.asarray(positions, float)
    t = np.asarray(transmission, float)
    if pos.ndim != 1 or pos.shape != t.shape or len(pos) < 3:
        raise ValueError("positions and transmission must be 1-D of the same length >= 3")
    order = np.argsort(pos)
    pos, t = pos[order], t[order]
    span = np.ptp(t)
    if span <= 0:
        return [Segment(pos[0], pos[-1], float(t.mean()))]
    jumps = np.flatnonzero(np.abs(np.diff(t)) > min_jump * span)
    edges = [pos[0]] + [0.5 * (pos[i] + pos[i + 1]) for i in jumps] + [pos[-1]]
    starts = [0] + [i + 1 for i in jumps]
    stops = [i + 1 for i in jumps] + [len(pos)]
    return [
        Segment(float(edges[k]), float(edges[k + 1]), float(np.median(t[a:b])))
        for k, (a, b) in enumerate(zip(starts, stops))
    ]


def window_extent(positions, transmission, *, fraction: float = 0.5) -> tuple[float, float]:
    """The widest run of points above ``fraction`` of the way from min to max."""
    pos = np.asarray(positions, float)
    t = np.asarray(transmission, float)
    order = np.argsort(pos)
    pos, t = pos[order], t[order]
    above = t > t.min() + fraction * np.ptp(t)
    if not above.any():
        raise ValueError("no window found in the transmission profile")
    best, start = (0, 0), None
    for i, a in enumerate(np.append(above, False)):
        if a and start is None:
            start = i
        elif not a and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    a, b = best
    step = np.median(np.diff(pos))
    return float(pos[a] - step / 2), float(pos[b - 1] + step / 2)


def cathode_layer(segments: list[Segment], *, opaque: float = 0.02) -> Segment:
    """The cathode: the most transmitting layer next to an opaque current collector.

    In a Li–S stack seen edge-on the composite cathode (carbon, sulfur,
    electrolyte) transmits most; the separator and the Li–In anode less; the
    steel current collectors nothing.
    """
    inner = [s for s in segments if s.level > opaque]
    if not inner:
        raise ValueError("no transmitting layer between the current collectors")
    return max(inner, key=lambda s: s.level)
