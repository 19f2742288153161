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

__all__ = ["Acquisition", "CheckedParser", "bounded", "register", "get", "names"]


@dataclass(frozen=True)
class Acquisition:
    """One experiment's acquisition entry points.

    * ``add_options(parser)``: the experiment's own command-line options;
    * ``run(args, target, figures_dir) -> JobReport``: the job, from parsed options;
    * ``check(args)``: the options checked together (``PlanArgumentError``), at
      parse time, before any IOC starts (optional).
    """

    name: str
    help: str
    ioc_module: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[..., object]
    check: Callable[[argparse.Namespace], None] | None = None


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


class CheckedParser(argparse.ArgumentParser):
    """An experiment's parser: after parsing, ``check(namespace)`` (when given)
    checks the options together, as the experiment's plan will, before any IOC
    starts; a ``PlanArgumentError`` becomes the usual one-line argparse error (exit 2)."""

    def __init__(self, *args, check: Callable | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.check = check

    def parse_known_args(self, args=None, namespace=None):
        from .plans.validation import PlanArgumentError

        namespace, extras = super().parse_known_args(args, namespace)
        if self.check is not None:
            try:
                self.check(namespace)
            except PlanArgumentError as err:
                self.error(str(err))
        return namespace, extras

    def error(self, message):
        """One line (not the whole usage) and exit status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def bounded(bound, *, integer: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` accepting a number inside ``bound`` (a ``Bound``)."""
    from .plans.validation import PlanArgumentError

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}; allowed: {bound}") from None
        try:
            return bound.check("value", value)
        except PlanArgumentError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("value = ")) from None

    parse.__name__ = "integer" if integer else "number"
    return parse


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
    from .plans.validation import PlanArgumentError, grid_shape

    try:
        nx, ny = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must look like 5x4, not {text!r}") from None
    try:
        return grid_shape("grid", (ny, nx))
    except PlanArgumentError as err:
        raise argparse.ArgumentTypeError(f"{text}: {err}") from None


# -- XCT ---------------------------------------------------------------------------
def _xct_options(xct: argparse.ArgumentParser) -> None:
    from .plans import validation as v

    xct.add_argument(
        "--cycles",
        type=bounded(v.CYCLES, integer=True),
        default=20,
        help=f"cycles at most ({v.CYCLES}); the run stops earlier when the cell fails (default 20)",
    )
    xct.add_argument(
        "--projections",
        type=bounded(v.PROJECTIONS, integer=True),
        default=1601,
        help=f"projections per 3D scan ({v.PROJECTIONS}; default 1601)",
    )
    xct.add_argument(
        "--postmortem-projections",
        type=bounded(v.PROJECTIONS, integer=True),
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
    xct.add_argument(
        "--exposure",
        type=bounded(v.ACQUIRE_TIME),
        default=1.5,
        help=f"exposure per image ({v.ACQUIRE_TIME}; default 1.5 s)",
    )
    xct.add_argument(
        "--images",
        type=bounded(v.NUM_EXPOSURES, integer=True),
        default=3,
        help=f"images averaged per projection ({v.NUM_EXPOSURES}; default 3)",
    )
    xct.add_argument(
        "--sample-every",
        type=bounded(v.SAMPLE_EVERY),
        default=60.0,
        help="record force and potential every this many cell seconds",
    )
    xct.add_argument("--no-postmortem", action="store_true", help="skip the post-mortem scans")
    _add_resume(xct)


def _check_xct(args) -> None:
    """The whole protocol's arguments, against the documented ranges (no IOC yet)."""
    from .constants import HOUR
    from .jobs import run_xct
    from .plans.validation import keyword_defaults
    from .plans.xct import check_xct_operando, xct_operando

    job, plan = keyword_defaults(run_xct), keyword_defaults(xct_operando)
    check_xct_operando(
        None,
        cycles=args.cycles,
        current_densities=plan["current_densities"],
        ocv_duration=job["ocv_hours"] * HOUR,
        plating_duration=job["plating_hours"] * HOUR,
        radiogram_every=plan["radiogram_every"],
        sample_every=args.sample_every,
        num_projections=args.projections,
        exposure=args.exposure,
        images_per_projection=args.images,
        postmortem_projections=args.postmortem_projections,
        do_postmortem=not args.no_postmortem,
        experiment_id=args.experiment_id,
        cell=plan["cell"],
        md=None,
    )


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
    from .plans import validation as v

    saxs.add_argument(
        "--beamline",
        choices=("synchrotron", "lab"),
        default="synchrotron",
        help="Elettra-like SAXS beamline (default) or a Xeuss-like laboratory",
    )
    cycles = v.CYCLES.intersect(v.PSTAT_CYCLES)
    saxs.add_argument(
        "--cycles",
        type=bounded(cycles, integer=True),
        default=1,
        help=f"full cycles ({cycles}; default 1)",
    )
    saxs.add_argument(
        "--grid",
        type=_grid,
        default=(4, 5),
        metavar="NXxNY",
        help=f"raster points across (x) and along (y) the stack (default 5x4; "
        f"{v.RASTER_AXIS.low}..{v.RASTER_AXIS.high} per axis, {v.MAX_RASTER_POINTS} in all)",
    )
    saxs.add_argument(
        "--raster-every",
        type=bounded(v.Bound(0.0, v.EXPERIMENT_DURATION.high, "s", low_open=True)),
        default=None,
        metavar="SECONDS",
        help="start a raster every SECONDS of cell time (default: back to back, as in the paper)",
    )
    saxs.add_argument(
        "--c-rate",
        type=bounded(v.C_RATE),
        default=1 / 20,
        help=f"C-rate ({v.C_RATE}; default 1/20)",
    )
    saxs.add_argument(
        "--exposure",
        type=bounded(v.ACQUIRE_TIME),
        default=None,
        help=f"exposure per point ({v.ACQUIRE_TIME}; default 7 s synchrotron, 80 s lab)",
    )
    saxs.add_argument(
        "--sample-every",
        type=bounded(v.SAMPLE_EVERY),
        default=60.0,
        help="record the cell (potential, current, charge) between rasters every this "
        "many cell seconds, and at every 20 mV of potential (default 60)",
    )
    _add_resume(saxs)


def _check_saxs(args) -> None:
    """The whole experiment's arguments, against the documented ranges (no IOC yet)."""
    from .plans.saxs import check_saxs_operando, saxs_waxs_operando
    from .plans.validation import keyword_defaults

    plan = keyword_defaults(saxs_waxs_operando)
    check_saxs_operando(
        None,
        cycles=args.cycles,
        c_rate=args.c_rate,
        e_min=plan["e_min"],
        e_max=plan["e_max"],
        shape=args.grid,
        bounds=None,
        raster_every=args.raster_every,
        ocv_rasters=plan["ocv_rasters"],
        exposure=args.exposure,
        sample_every=args.sample_every,
        snake=plan["snake"],
        experiment_id=args.experiment_id,
        cell=plan["cell"],
        md=None,
        beamline=args.beamline,
    )


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
        sample_every=args.sample_every,
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
        _check_xct,
    )
)
register(
    Acquisition(
        "saxs",
        "the scanning operando SAXS/WAXS experiment",
        "operando.iocs.saxs",
        _saxs_options,
        _run_saxs,
        _check_saxs,
    )
)
