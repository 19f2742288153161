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

then the whole pipeline (dark/flat, −ln, fold 360→180°, stripe filter, DFI)
on a block of slices: its slabs on a ``dask.distributed`` LocalCluster of 1
and of ``--workers`` processes (the reconstruction's way), beside the process
pool it replaced, from which the time of a full volume (970 slices) is
projected; the ratio 1 -> N workers, and the volumes compared (identical).
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


def pool_reconstruct(proj, angles, *, flats, darks, center, chunk_rows, workers):
    """The reconstruction as it ran before dask: the same slabs through a
    ``ProcessPoolExecutor`` (fork), at most 2 per process in flight (the reference)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from operando.callbacks.xct.science.reconstruction import _reconstruct_block

    flat, dark = tomo.projections._mean_frame(flats), tomo.projections._mean_frame(darks)
    nrow, ncol = proj.shape[1], proj.shape[2]
    out = np.zeros((nrow, ncol, ncol), np.float32)
    starts = list(range(0, nrow, chunk_rows))
    opts = (True, "wavelet_fft", "hann", 0.25)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        futures = {}
        it = iter(starts)

        def submit():
            r0 = next(it, None)
            if r0 is None:
                return
            r1 = min(nrow, r0 + chunk_rows)
            futures[r0] = pool.submit(
                _reconstruct_block,
                np.asarray(proj[:, r0:r1, :]),
                np.asarray(angles, float),
                float(center),
                flat[r0:r1],
                dark[r0:r1],
                *opts,
            )

        for _ in range(2 * workers):
            submit()
        while futures:
            r0 = min(futures)
            rec = futures.pop(r0).result()
            out[r0 : r0 + rec.shape[0]] = rec
            submit()
    return out


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

    # the whole pipeline on a block of raw frames: the slabs on a dask LocalCluster
    # (the reconstruction's way), beside the process pool it replaced
    block = np.repeat(sino[:, None, :], args.block, axis=1)
    proj, flats, darks = to_counts(block, rng)
    t_c, c_found = timed(
        lambda: tomo.find_center_projections(
            tomo.minus_log(tomo.normalize(proj, flats, darks)), angles
        )
    )
    print(f"\ncentre: found {c_found:.2f} (true {center:.2f}) in {t_c:.2f} s")
    chunk = max(1, args.block // (2 * args.workers))
    common = dict(flats=flats, darks=darks, center=c_found, chunk_rows=chunk)
    print(
        f"volume of {args.block} slices ({chunk} per slab), centre given; "
        f"projected to a full volume of {args.slices} slices:"
    )

    def report(label, seconds, cpu):
        per = seconds / args.block
        print(
            f"  {label:34s} {seconds:7.1f} s  {per:6.2f} s/slice  "
            f"full volume {per * args.slices / 60:6.1f} min  "
            f"(CPU {cpu / args.block:5.2f} core-s/slice)"
        )
        return per

    cpu0 = _cpu_seconds()
    t_pool, ref = timed(lambda: pool_reconstruct(proj, angles, workers=args.workers, **common))
    per_pool = report(f"process pool, {args.workers} processes", t_pool, _cpu_seconds() - cpu0)
    from distributed import LocalCluster

    per_dask = {}
    for n in sorted({1, args.workers}):
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit=0,
        )
        t_up = time.perf_counter() - t0
        try:
            t, vol = timed(
                lambda address=cluster.scheduler_address: tomo.reconstruct(
                    proj, angles, scheduler=address, **common
                )
            )
        finally:
            from operando.callbacks.xct.science.reconstruction import close_clients

            close_clients()
            cluster.close()
        # the workers' CPU is counted once they have exited (cluster closed)
        per_dask[n] = report(f"dask LocalCluster, {n} worker(s)", t, _cpu_seconds() - cpu0)
        print(
            f"    (cluster start {t_up:.1f} s, once per process; the pool's volume "
            f"to the bit: {bool(np.array_equal(vol, ref))})"
        )
    if args.workers in per_dask and 1 in per_dask and args.workers > 1:
        print(
            f"  dask 1 -> {args.workers} workers: {per_dask[1] / per_dask[args.workers]:.2f}x "
            f"faster; dask {args.workers} workers vs the pool: "
            f"{per_pool / per_dask[args.workers]:.2f}x (>1: dask faster)"
        )
    print(f"  RMSE of the middle slice {rmse(ref[args.block // 2], truth, radius):.2e}")
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
