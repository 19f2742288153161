"""Reconstruction speed on this machine: the chosen library against the others.

Plain script, prints figures (no asserts):

    .venv/bin/python benchmarks/bench_reconstruction.py            # full size
    .venv/bin/python benchmarks/bench_reconstruction.py --quick    # 500 px, 801 angles

A full-size slice is ~1000 px wide with 1601 projections over 360° (the
operando scan, 4x objective, unbinned). The sinogram is analytic (discs: a
cell wider than the field of view, so interior tomography, plus strongly
absorbing particles), with the rotation axis 3.3 px off the detector centre
and Poisson noise. Timed on one slice each:

* scikit-image ``iradon`` (the fallback),
* astra-toolbox CPU ``FBP`` (if installed; its CPU code is single-threaded),
* algotom ``fbp_reconstruction`` on the CPU (numba, all cores),
* algotom DFI through ``operando.callbacks.xct.science.reconstruct`` (the
  choice), in-process,

then the whole pipeline (dark/flat, −ln, centre finding, fold 360→180°,
stripe filter, DFI) on a block of slices with one process per core, from
which the time of a full volume (970 slices) is projected.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import ndimage as ndi

from operando.callbacks.xct import science as tomo


def phantom(width: int, n_angles: int, center: float, seed: int = 0):
    """Line integrals (angle, column) of discs, and the truth image (y, x) on the
    reconstruction grid (axis at ``width // 2``)."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0.0, 360.0, n_angles)
    th = np.deg2rad(angles)[:, None]
    half = width / 2
    discs = [
        (0.0, 0.0, 1.4 * half, 0.002),
        (0.0, 0.0, 1.3 * half, -0.001),
        (0.0, 0.0, 1.25 * half, 0.0005),
    ]
    for _ in range(60):
        r = rng.uniform(0.01, 0.04) * width
        rad = rng.uniform(0.0, 0.8 * half)
        phi = rng.uniform(0, 2 * np.pi)
        discs.append((rad * np.cos(phi), rad * np.sin(phi), r, 0.02))
    s = np.arange(width)[None, :] - center
    sino = np.zeros((n_angles, width), np.float32)
    axis = width // 2
    yy, xx = np.mgrid[0:width, 0:width] - axis
    truth = np.zeros((width, width), np.float32)
    for x0, y0, r, mu in discs:
        p = x0 * np.cos(th) + y0 * np.sin(th)
        sino += mu * 2 * np.sqrt(np.clip(r * r - (s - p) ** 2, 0, None))
        truth += mu * ((xx - x0) ** 2 + (yy - y0) ** 2 <= r * r)
    return angles, sino, truth


def to_counts(line_integrals: np.ndarray, rng, i0: float = 20000.0):
    proj = rng.poisson(i0 * np.exp(-line_integrals)).astype(np.uint16)
    shape = (5,) + line_integrals.shape[1:]
    flats = rng.poisson(i0, shape).astype(np.uint16)
    darks = np.zeros(shape, np.uint16)
    return proj, flats, darks


def rmse(img: np.ndarray, truth: np.ndarray, radius: float, orient: bool = False) -> float:
    n = truth.shape[0]
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    m = xx**2 + yy**2 <= radius**2
    cands = [img]
    if orient:  # other libraries' axis conventions: take the best of the 8
        cands = [np.rot90(f, k) for f in (img, img[:, ::-1]) for k in range(4)]
    return float(min(np.sqrt(np.mean((c[:n, :n] - truth)[m] ** 2)) for c in cands))


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the workers)."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(func, repeat: int = 1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = func()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--angles", type=int, default=1601)
    ap.add_argument("--slices", type=int, default=970, help="slices of a full volume")
    ap.add_argument("--block", type=int, default=16, help="slices timed through the pipeline")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true", help="500 px, 801 angles, block of 8")
    ap.add_argument("--skip", default="", help="comma list of: skimage,astra,algotom_fbp")
    args = ap.parse_args()
    if args.quick:
        args.width, args.angles, args.block = 500, 801, 8
    skip = set(filter(None, args.skip.split(",")))
    width, n_ang = args.width, args.angles
    center = (width - 1) / 2 + 3.3
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
        "(other work on the machine inflates the wall times)"
    )
    print(f"slice: {width} px wide, {n_ang} projections over 360°, axis at column {center:.1f}")
    angles, sino, truth = phantom(width, n_ang, center)
    rng = np.random.default_rng(1)
    proj1, flats1, darks1 = to_counts(sino[:, None, :], rng)
    noisy = tomo.minus_log(tomo.normalize(proj1, flats1, darks1))[:, 0, :]
    radius = min(center, width - 1 - center) - 2
    rows = []

    # the choice: algotom DFI through our pipeline, one slice, in-process
    t_dfi, rec = timed(lambda: tomo.reconstruct_sinogram(noisy, angles, center), repeat=2)
    rows.append(("algotom DFI (chosen), 1 process", t_dfi, rmse(rec, truth, radius), 1))

    if "skimage" not in skip:
        from skimage.transform import iradon

        centred = ndi.shift(noisy, (0, (width - 1) / 2 - center), mode="nearest")
        t_sk, rec = timed(lambda: iradon(centred.T, theta=angles, filter_name="ramp", circle=True))
        rows.append(("scikit-image iradon (ramp)", t_sk, rmse(rec, truth, radius, orient=True), 1))
    else:
        t_sk = float("nan")

    if "astra" not in skip:
        try:
            import astra

            def astra_fbp():
                pad = width // 4
                sp = np.pad(
                    ndi.shift(noisy, (0, (width - 1) / 2 - center), mode="nearest"),
                    ((0, 0), (pad, pad)),
                    mode="edge",
                )
                pg = astra.create_proj_geom("parallel", 1.0, sp.shape[1], np.deg2rad(angles))
                vg = astra.create_vol_geom(width, width)
                sid = astra.data2d.create("-sino", pg, sp)
                rid = astra.data2d.create("-vol", vg)
                pid = astra.create_projector("linear", pg, vg)
                cfg = astra.astra_dict("FBP")
                cfg.update(ProjectionDataId=sid, ReconstructionDataId=rid, ProjectorId=pid)
                aid = astra.algorithm.create(cfg)
                astra.algorithm.run(aid)
                out = astra.data2d.get(rid)
                astra.algorithm.delete(aid)
                astra.data2d.delete([sid, rid])
                astra.projector.delete(pid)
                return out

            t, rec = timed(astra_fbp)
            rows.append(
                (
                    f"astra-toolbox {astra.__version__} CPU FBP",
                    t,
                    rmse(rec, truth, radius, orient=True),
                    1,
                )
            )
        except ImportError:
            rows.append(("astra-toolbox: not installed", float("nan"), float("nan"), 1))

    if "algotom_fbp" not in skip:
        import warnings

        from algotom.rec.reconstruction import fbp_reconstruction

        def algotom_fbp():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fbp_reconstruction(
                    noisy, center, angles=np.deg2rad(angles), apply_log=False, gpu=False
                )

        algotom_fbp()  # numba compilation
        t, rec = timed(algotom_fbp)
        rows.append(
            (
                "algotom FBP (numba CPU, all cores)",
                t,
                rmse(rec, truth, radius, orient=True),
                os.cpu_count() or 1,
            )
        )

    print(f"\n{'one slice':44s} {'time/s':>8s} {'x iradon':>9s} {'RMSE':>9s}")
    for name, t, err, _ in rows:
        ratio = t_sk / t if np.isfinite(t) and np.isfinite(t_sk) else float("nan")
        print(f"{name:44s} {t:8.2f} {ratio:9.1f} {err:9.2e}")
    print("(RMSE vs the truth in attenuation/voxel; the discs' values are 0.002–0.02)")

    # the whole pipeline on a block of raw frames, one process per core
    block = np.repeat(sino[:, None, :], args.block, axis=1)
    proj, flats, darks = to_counts(block, rng)
    t_c, c_found = timed(
        lambda: tomo.find_center_projections(
            tomo.minus_log(tomo.normalize(proj, flats, darks)), angles
        )
    )
    print(f"\ncentre: found {c_found:.2f} (true {center:.2f}) in {t_c:.2f} s")
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    vol = tomo.reconstruct(
        proj,
        angles,
        flats=flats,
        darks=darks,
        workers=args.workers,
        chunk_rows=max(1, args.block // (2 * args.workers)),
    )
    t_block = time.perf_counter() - t0
    cpu_slice = (_cpu_seconds() - cpu0) / args.block
    per_slice = t_block / args.block
    print(
        f"pipeline, {args.block} slices, {args.workers} processes: {t_block:.1f} s "
        f"({per_slice:.2f} s/slice, centre finding included; RMSE "
        f"{rmse(vol[args.block // 2], truth, radius):.2e})"
    )
    total = per_slice * args.slices
    print(f"projected full volume ({args.slices} slices): {total / 60:.1f} min (target < 15 min)")
    idle = cpu_slice * args.slices / args.workers
    print(
        f"  CPU {cpu_slice:.2f} core-s per slice (workers included): "
        f"{idle / 60:.1f} min on {args.workers} otherwise idle cores"
    )
    print(
        "  the others, counting one slice per core at a time for the single-core ones "
        "(optimistic: the reconstruction alone, no corrections):"
    )
    for name, t, _, cores in rows[1:]:
        if np.isfinite(t):
            wall = t * args.slices / max(1, args.workers // cores)
            print(f"  {name:42s} {wall / 60:6.0f} min")
    print(f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
