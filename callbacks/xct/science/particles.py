"""The electrolyte's ceramic particles: segmentation in a volume and matching
between two scans. Method: ``docs/reduction-xct.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = ["segment_particles", "match_particles"]


def segment_particles(
    volume: Any,
    *,
    z_range: tuple[int, int] | slice | None = None,
    snr: float = 6.0,
    threshold: float | None = None,
    min_voxels: int = 2,
    max_extent: float = 0.25,
    pixel_um: float | None = None,
) -> np.ndarray:
    """Strongly absorbing particles: ``(N, 4)`` rows of ``x, y, z, r_eq``.

    Each slice's own level (the median inside the field of view: PEEK, Li,
    electrolyte matrix, whatever the row crosses) is subtracted, leaving the
    particles as compact bright excess. They are detected where the excess
    passes ``snr`` times its robust noise (or ``threshold``, in attenuation
    per voxel above the slice level), then each is measured at half its own
    peak excess (the half-maximum contour of a blurred sphere is its
    surface): ``r_eq`` is the radius of the sphere of that many voxels, the
    position the excess-weighted centroid.

    Positions are in voxels of ``volume`` (``x``, ``y`` as in its last two
    axes, ``z`` counted from row 0 of the full volume whatever ``z_range``);
    with ``pixel_um`` all four columns are in µm. ``z_range``: the rows to
    search (default all), e.g. the electrolyte from :func:`find_layers`.
    Objects wider than ``max_extent`` of the slice (a layer, not a particle)
    or smaller than ``min_voxels`` at detection are dropped.
    """
    if z_range is None:
        zs = slice(0, volume.shape[0])
    else:
        zs = z_range if isinstance(z_range, slice) else slice(int(z_range[0]), int(z_range[1]))
    z0 = zs.start or 0
    vol = np.asarray(volume[zs], dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError("segment_particles needs a volume (row, y, x)")
    fov = np.any(vol != 0, axis=0)
    if not fov.any():
        return np.zeros((0, 4))
    level = np.array([np.median(sl[fov]) for sl in vol], dtype=np.float32)
    excess = (vol - level[:, None, None]) * fov[None]
    if threshold is not None:
        detect = excess > float(threshold)
    else:
        # noise per slice: rows through the electrolyte are far noisier (less
        # light) than rows through Li or PEEK
        sigma = np.array([1.4826 * np.median(np.abs(sl[fov])) for sl in excess]) + 1e-12
        detect = excess > snr * sigma[:, None, None].astype(np.float32)
    labels, nlab = ndi.label(detect)
    if nlab == 0:
        return np.zeros((0, 4))
    boxes = ndi.find_objects(labels)
    width = max(vol.shape[1], vol.shape[2])
    out = []
    for k, box in enumerate(boxes, start=1):
        if box is None:
            continue
        if max(box[1].stop - box[1].start, box[2].stop - box[2].start) > max_extent * width:
            continue
        obj = labels[box] == k
        if obj.sum() < min_voxels:
            continue
        sub = excess[box]
        peak_idx = np.unravel_index(np.argmax(np.where(obj, sub, -np.inf)), sub.shape)
        peak = float(sub[peak_idx])
        # the half-maximum region connected to the peak, in a margin around the object
        grow = tuple(
            slice(max(0, sl.start - 3), min(n, sl.stop + 3)) for sl, n in zip(box, excess.shape)
        )
        win = excess[grow]
        pk = tuple(int(i + sl.start - g.start) for i, sl, g in zip(peak_idx, box, grow))
        half_lab, _ = ndi.label(win > 0.5 * peak)
        region = half_lab == half_lab[pk]
        w = np.where(region, win, 0.0)
        idx = np.indices(win.shape)
        cz, cy, cx = (float(np.sum(w * idx[d]) / w.sum()) + grow[d].start for d in range(3))
        r_eq = float(np.cbrt(3.0 * region.sum() / (4.0 * np.pi)))
        out.append((cx, cy, cz + z0, r_eq))
    arr = np.asarray(out, dtype=float).reshape(-1, 4)
    if pixel_um is not None:
        arr = arr * float(pixel_um)
    return arr


def match_particles(
    prev: Any,
    curr: Any,
    max_distance: float,
    *,
    center: tuple[float, float] | None = None,
    radius_weight: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match particles of two scans; their displacements and radial components.

    ``prev``/``curr``: ``(N, 4)`` arrays from :func:`segment_particles`
    (x, y, z, r_eq). A one-to-one assignment (Hungarian, on distance plus
    ``radius_weight`` times the change of radius) among candidate pairs closer
    than ``max_distance``; unmatched particles are left out.

    ``center``: ``(x, y)`` of the cell axis for the radial direction (e.g. the
    rotation axis ``(ncol // 2, ncol // 2)`` or the electrode centre); default
    the centroid of ``prev``'s positions.

    Returns ``pairs`` (K, 2) indices into prev and curr, ``displacements``
    (K, 3) dx, dy, dz, and ``radial`` (K,) the in-plane displacement along
    the outward direction from the axis (positive: toward the edge).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial import cKDTree

    a = np.asarray(prev, dtype=float).reshape(-1, np.shape(prev)[-1] if np.ndim(prev) else 4)
    b = np.asarray(curr, dtype=float).reshape(-1, np.shape(curr)[-1] if np.ndim(curr) else 4)
    empty = (np.zeros((0, 2), int), np.zeros((0, 3)), np.zeros(0))
    if len(a) == 0 or len(b) == 0:
        return empty
    tree = cKDTree(b[:, :3])
    cand = tree.query_ball_point(a[:, :3], r=max_distance)
    ia = [i for i, c in enumerate(cand) if c]
    ib = sorted({j for c in cand for j in c})
    if not ia:
        return empty
    col = {j: k for k, j in enumerate(ib)}
    big = 1e9
    cost = np.full((len(ia), len(ib)), big)
    for r, i in enumerate(ia):
        for j in cand[i]:
            d = np.linalg.norm(b[j, :3] - a[i, :3])
            dr = abs(b[j, 3] - a[i, 3]) if a.shape[1] > 3 and b.shape[1] > 3 else 0.0
            cost[r, col[j]] = d + radius_weight * dr
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] < big
    pairs = np.column_stack([np.asarray(ia)[rows[ok]], np.asarray(ib)[cols[ok]]]).astype(int)
    disp = b[pairs[:, 1], :3] - a[pairs[:, 0], :3]
    cxy = np.asarray(center, dtype=float) if center is not None else a[:, :2].mean(axis=0)
    rvec = a[pairs[:, 0], :2] - cxy
    norm = np.linalg.norm(rvec, axis=1)
    unit = np.divide(rvec, norm[:, None], out=np.zeros_like(rvec), where=norm[:, None] > 0)
    radial = np.sum(disp[:, :2] * unit, axis=1)
    return pairs, disp, radial
