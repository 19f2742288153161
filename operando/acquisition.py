"""The experiments ``operando run`` and ``operando rehearse`` know: a small registry.

Each :class:`Acquisition` names its simulator module, adds its own options to
the command line and runs its job (:mod:`operando.jobs`); the options every
experiment shares (time scale, prefix, seed, experiment id, figures, Tiled)
are the command line's. Adding a technique: its reduction registers in
:mod:`operando.techniques`, its acquisition here (``docs/architecture.md``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Acquisition", "register", "get", "names"]


@dataclass(frozen=True)
class Acquisition:
    """One experiment's acquisition entry points.

    * ``add_options(parser)``: the experiment's own command-line options;
    * ``run(args, target, figures_dir) -> JobReport``: the job, from parsed options.
    """

    name: str
    help: str
    ioc_module: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[..., object]


_REGISTRY: dict[str, Acquisition] = {}


def register(acquisition: Acquisition) -> Acquisition:
    """Add (or replace) an experiment under its name; returns it."""
    _REGISTRY[acquisition.name] = acquisition
    return acquisition


def get(name: str) -> Acquisition:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no experiment {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def _add_resume(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resume",
        metavar="ID",
        default=None,
        help="go on with the interrupted experiment ID (same Tiled, same station): "
        "completed steps are kept, dangling runs closed as aborted, the rest taken "
        "(docs/resume.md)",
    )


def _grid(text: str) -> tuple[int, int]:
    """'5x4' (points in x by points in y) -> (ny, nx)."""
    try:
        nx, ny = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must look like 5x4, not {text!r}") from None
    if nx < 1 or ny < 1:
        raise argparse.ArgumentTypeError(f"grid needs at least one point per axis: {text!r}")
    return ny, nx


# -- XCT ---------------------------------------------------------------------------
def _xct_options(xct: argparse.ArgumentParser) -> None:
    xct.add_argument(
        "--cycles",
        type=int,
        default=20,
        help="cycles at most; the run stops earlier when the cell fails (default 20)",
    )
    xct.add_argument(
        "--projections", type=int, default=1601, help="projections per 3D scan (default 1601)"
    )
    xct.add_argument(
        "--postmortem-projections",
        type=int,
        default=None,
        help="projections per post-mortem scan (default: --projections)",
    )
    xct.add_argument(
        "--binning",
        type=int,
        default=4,
        choices=(1, 2, 4),
        help="detector binning (default 4; 1 = full 1000 x 970 frames)",
    )
    xct.add_argument("--exposure", type=float, default=1.5, help="exposure per image, s")
    xct.add_argument("--images", type=int, default=3, help="images averaged per projection")
    xct.add_argument(
        "--sample-every",
        type=float,
        default=60.0,
        help="record force and potential every this many cell seconds",
    )
    xct.add_argument("--no-postmortem", action="store_true", help="skip the post-mortem scans")
    _add_resume(xct)


def _run_xct(args, target, figures_dir: Path | None):
    from .jobs import run_xct

    return run_xct(
        target=target,
        cycles=args.cycles,
        time_scale=args.time_scale,
        projections=args.projections,
        binning=args.binning,
        prefix=args.prefix,
        seed=args.seed,
        exposure=args.exposure,
        images_per_projection=args.images,
        postmortem=not args.no_postmortem,
        postmortem_projections=args.postmortem_projections,
        experiment_id=args.resume or args.experiment_id,
        resume=args.resume,
        progress=not args.no_progress,
        sample_every=args.sample_every,
        figures_dir=figures_dir,
        reduce=not args.no_reduction,
    )


# -- SAXS/WAXS -----------------------------------------------------------------------
def _saxs_options(saxs: argparse.ArgumentParser) -> None:
    saxs.add_argument(
        "--beamline",
        choices=("synchrotron", "lab"),
        default="synchrotron",
        help="Elettra-like SAXS beamline (default) or a Xeuss-like laboratory",
    )
    saxs.add_argument("--cycles", type=int, default=1, help="full cycles (default 1)")
    saxs.add_argument(
        "--grid",
        type=_grid,
        default=(4, 5),
        metavar="NXxNY",
        help="raster points across (x) and along (y) the stack (default 5x4)",
    )
    saxs.add_argument(
        "--raster-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start a raster every SECONDS of cell time (default: back to back, as in the paper)",
    )
    saxs.add_argument("--c-rate", type=float, default=1 / 20, help="C-rate (default 1/20)")
    saxs.add_argument(
        "--exposure",
        type=float,
        default=None,
        help="exposure per point, s (default 7 s synchrotron, 80 s lab)",
    )
    _add_resume(saxs)


def _run_saxs(args, target, figures_dir: Path | None):
    from .jobs import run_saxs

    return run_saxs(
        target=target,
        beamline=args.beamline,
        cycles=args.cycles,
        time_scale=args.time_scale,
        shape=args.grid,
        raster_every=args.raster_every,
        prefix=args.prefix,
        seed=args.seed,
        c_rate=args.c_rate,
        exposure=args.exposure,
        experiment_id=args.resume or args.experiment_id,
        resume=args.resume,
        progress=not args.no_progress,
        figures_dir=figures_dir,
        reduce=not args.no_reduction,
    )


register(
    Acquisition(
        "xct",
        "the operando XCT protocol (pressurized cell)",
        "operando.iocs.xct",
        _xct_options,
        _run_xct,
    )
)
register(
    Acquisition(
        "saxs",
        "the scanning operando SAXS/WAXS experiment",
        "operando.iocs.saxs",
        _saxs_options,
        _run_saxs,
    )
)
