"""Per-radiogram reduction: transmission, −ln, and the stack profile.

A radiogram is one detector frame ``(row, column)`` taken during plating. The
cell's layers are horizontal, so the rows cross the stack: the profile of −ln T
along the rows shows the two Cu coatings as narrow peaks and the strongly
absorbing hybrid electrolyte between two low-absorbing Li layers. The layer
finding is shared with the 3D scans (:func:`~operando.callbacks.xct.science.layers.find_layers`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .layers import find_layers
from .projections import minus_log, normalize

__all__ = ["normalize", "minus_log", "vertical_profile", "find_layers", "analyze", "analyze_series"]


def vertical_profile(
    transmission_image: Any,
    *,
    band: float = 0.5,
    columns: slice | None = None,
    kind: str = "attenuation",
) -> np.ndarray:
    """Profile across the stack: one value per row, over the central ``band``
    of columns (or ``columns``), avoiding the tube walls.

    ``transmission_image``: a dark/flat-corrected frame ``(row, column)``, see
    :func:`normalize`. ``kind``:

    * ``"attenuation"``: the mean −ln T of each row (what one plots);
    * ``"absorbed"``: ``1 − mean T`` of each row. A detector row averages
      *intensity* over its height, so this one is linear in how much of the
      row an interface has crossed, and the middle of a step in it is the
      interface exactly; in −ln T a row half Li, half electrolyte reads much
      closer to Li (Beer–Lambert is not linear), which biases the interfaces
      by a fraction of a pixel. :func:`analyze` uses it.
    """
    t = np.asarray(transmission_image, dtype=np.float32)
    if t.ndim != 2:
        raise ValueError(f"a radiogram is 2D (row, column), got shape {t.shape}")
    if columns is None:
        ncol = t.shape[1]
        half = max(1, int(round(band * ncol / 2)))
        columns = slice(max(0, ncol // 2 - half), min(ncol, ncol // 2 + half))
    if kind == "attenuation":
        return minus_log(t)[:, columns].astype(np.float64).mean(axis=1)
    if kind == "absorbed":
        return 1.0 - t[:, columns].astype(np.float64).mean(axis=1)
    raise ValueError(f"kind must be 'attenuation' or 'absorbed', not {kind!r}")


def analyze(
    transmission_image: Any, pixel_um: float, *, top_first: bool = True, **profile_kwargs: Any
) -> dict[str, float]:
    """Layers of one radiogram (:func:`find_layers` on the ``"absorbed"`` profile):
    Cu positions, Li/HSE interfaces (rows), Cu-to-Cu and top Li thickness (µm)."""
    profile_kwargs.setdefault("kind", "absorbed")
    prof = vertical_profile(transmission_image, **profile_kwargs)
    return find_layers(prof, pixel_um, top_first=top_first)


def analyze_series(
    frames: Any, flats: Any, darks: Any, pixel_um: float, **kwargs: Any
) -> list[dict[str, float]]:
    """:func:`analyze` for each raw frame of a stack ``(n, row, column)``."""
    out = []
    for frame in frames:
        out.append(analyze(normalize(frame, flats, darks), pixel_um, **kwargs))
    return out
