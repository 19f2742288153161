"""Plans for the queue server: the station plans with arguments a queue can check.

bluesky-queueserver validates every parameter of a queued plan from its
annotations before it accepts the plan (plain types, ranges, enums for choices,
devices by name), so a mistyped parameter is refused at once, not 30 hours into
a protocol. The station plans (:mod:`operando.plans.xct`, :mod:`operando.plans.saxs`)
take a station dataclass, which a queue cannot name: :func:`queue_namespace`
builds thin plans bound to given stations (``xct_scan3d``, ``saxs_raster``, ...;
choices read from the hardware: the filter and objective PVs' enum strings),
``count`` and ``mv`` restricted to the stations' devices by name, and names for
the SAXS/WAXS devices. ``profile_collection/startup/30-queue-plans.py`` puts
them into the namespace: the queue server and an IPython session get the same
plans. The annotations only matter to the queue server; called directly the
plans behave as plain bluesky plans.
"""

import dataclasses
import typing

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import bluesky.preprocessors as bpp
from bluesky_queueserver import parameter_annotation_decorator

from ..constants import HOUR
from ..devices.common import Technique
from . import saxs as saxs_plans
from . import validation as check
from . import xct as xct_plans
from .stubs import (
    CellRecorder,
    MsgGenerator,
    experiment_md,
    now,
    start_technique,
    technique_running,
    wait_technique,
    wait_until,
)

#: The queue-facing plan of each station plan.
QUEUE_PLANS = {
    "xct_scan3d": "scan3d",
    "xct_radiogram": "radiogram",
    "xct_plating": "plating",
    "xct_postmortem": "postmortem",
    "xct_protocol": "xct_operando",
    "saxs_align": "align",
    "saxs_background": "background",
    "saxs_raster": "raster",
    "saxs_protocol": "saxs_waxs_operando",
}
#: Queue plans of their own: one potentiostat technique, the cell recorded.
TECHNIQUE_PLANS = ("xct_technique", "saxs_technique")

#: Names of the SAXS/WAXS station's devices in the namespace (the XCT ones are
#: the station's own names: clock, pstat, force, source, ct_det, stage).
SAXS_DEVICE_NAMES = {
    "clock": "saxs_clock",
    "pstat": "saxs_pstat",
    "stage": "saxs_stage",
    "sample": "saxs_sample",
    "shutter": "saxs_shutter",
    "diode": "saxs_diode",
    "beam": "saxs_beam",
    "saxs": "saxs_det",
    "waxs": "waxs_det",
    "ring": "saxs_ring",
}

#: The steps a raster may be recorded as (the start document's ``step``).
RASTER_STEPS = ("ocv", "operando")

_EXPERIMENT_DOC = {
    "experiment_id": {"description": "experiment id stored in every run (default: a new one)"},
    "cell": {"description": "cell description stored in every run"},
    "md": {"description": "extra start-document metadata"},
}


def _annotate(description: str, **parameters) -> typing.Callable:
    """``parameter_annotation_decorator`` with the experiment metadata described too."""
    return parameter_annotation_decorator(
        {"description": description, "parameters": {**_EXPERIMENT_DOC, **parameters}}
    )


def _range(low=None, high=None, description: str | None = None) -> dict:
    out = {}
    if low is not None:
        out["min"] = low
    if high is not None:
        out["max"] = high
    if description:
        out["description"] = description
    return out


def _choice(type_name: str, values, description: str, *, optional: bool = False, many=False):
    annotation = f"typing.List[{type_name}]" if many else type_name
    if optional:
        annotation = f"typing.Optional[{annotation}]"
    return {
        "annotation": annotation,
        "enums": {type_name: list(values)},
        "description": description,
    }


def _limits(motor, description: str) -> dict:
    """A motor's soft limits as the parameter's range (none when it publishes none)."""
    low, high = motor.limits
    out = {"description": description}
    if not low == high == 0:
        out.update(min=float(low), max=float(high))
    return out


def _enum_strings(signal, fallback) -> tuple[str, ...]:
    """The choices an enum PV publishes (the hardware's, e.g. its filter names)."""
    strs = getattr(signal, "enum_strs", None)
    return tuple(strs) if strs else tuple(fallback)


def _pair(name: str, value) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise check.PlanArgumentError(f"{name} must be [start, stop], not {value!r}") from None
    return lo, hi


def _plain(result):
    """A plan result as plain data (the queue server records JSON)."""
    if dataclasses.is_dataclass(result):
        return dataclasses.asdict(result)
    return result


# -- XCT ----------------------------------------------------------------------


def _xct_plans(xct, catalog=None) -> dict:
    filters = _enum_strings(xct.source.filter, ("None", "LE1", "LE2", "LE3", "HE1"))
    objectives = _enum_strings(xct.ct_det.cam.objective, ("4X", "4X-wide", "20X"))
    scan_ranges = dict(
        num_projections=_range(2, description="projections over [start, stop]"),
        exposure=_range(1e-3, 3600.0, "seconds per image"),
        images_per_projection=_range(1, 100, "images averaged per projection"),
        num_darks=_range(0),
        num_flats=_range(0),
        kv=_range(1.0, 70.0, "source voltage, kV"),
        filter=_choice("Filter", filters, "source filter"),
        sample_every=_range(1e-3, description="cell stream period, cell seconds"),
    )

    @_annotate(
        "A 3D CT scan: darks, flats, then projections over [start, stop] degrees; "
        "the cell (force, potential) in the 'cell' stream. With ocv_duration the "
        "cell is held at open circuit for that long (cell seconds) meanwhile.",
        **scan_ranges,
        objective=_choice("Objective", objectives, "detector objective", optional=True),
        start=_limits(xct.stage.th, "first angle, degrees"),
        stop=_limits(xct.stage.th, "last angle, degrees"),
        ocv_duration=_range(1e-3, description="OCV step, cell seconds (None: no technique)"),
    )
    def xct_scan3d(
        *,
        num_projections: int = 1601,
        exposure: float = 1.5,
        images_per_projection: int = 3,
        start: float = 0.0,
        stop: float = 360.0,
        num_darks: int = 10,
        num_flats: int = 10,
        kv: float = 70.0,
        filter: str = "LE1",
        objective: str | None = None,
        flat_offset: float = xct_plans.FLAT_OFFSET_MM,
        sample_every: float = 60.0,
        ocv_duration: float | None = None,
        cycle: int | None = None,
        experiment_id: str | None = None,
        cell: str | None = None,
        md: dict | None = None,
    ) -> MsgGenerator:
        """A 3D CT scan of the XCT station (``operando.plans.xct.scan3d``); returns its uid."""
        return (
            yield from xct_plans.scan3d(
                xct,
                num_projections=num_projections,
                exposure=exposure,
                images_per_projection=images_per_projection,
                start=start,
                stop=stop,
                num_darks=num_darks,
                num_flats=num_flats,
                kv=kv,
                filter=filter,
                objective=objective,
                flat_offset=flat_offset,
                sample_every=sample_every,
                ocv_duration=ocv_duration,
                cycle=cycle,
                experiment_id=experiment_id,
                cell=cell,
                md=md,
            )
        )

    @_annotate(
        "One radiogram as a run of its own: source on, one frame (with the cell "
        "time, force and potential), source off.",
        exposure=scan_ranges["exposure"],
        images=_range(1, 100, "images averaged in the frame"),
        kv=scan_ranges["kv"],
        filter=scan_ranges["filter"],
        objective=_choice("Objective", objectives, "detector objective", optional=True),
    )
    def xct_radiogram(
        *,
        exposure: float = 1.5,
        images: int = 3,
        kv: float = 70.0,
        filter: str = "LE1",
        objective: str | None = None,
        cycle: int | None = None,
        experiment_id: str | None = None,
        cell: str | None = None,
        md: dict | None = None,
    ) -> MsgGenerator:
        """One radiogram (``operando.plans.xct.radiogram``) in a run; returns its uid."""
        exposure = check.positive("exposure", exposure)
        check.within("exposure", exposure, 1e-3, 3600.0, "s")
        images = check.positive_int("images", images)
        check.within("kv", kv, 1.0, 70.0, "kV")
        cam = xct.ct_det.cam
        plan_args = dict(exposure=exposure, images=images, kv=kv, filter=filter)
        _md = experiment_md(
            "xct_radiogram",
            dict(plan_args, objective=objective),
            technique="xct",
            step="radiogram",
            cycle=cycle,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
            detectors=[xct.ct_det.name],
            num_points=1,
        )

        def body():
            settings = [cam.acquire_time, exposure, cam.num_exposures, images]
            if objective is not None:
                settings += [cam.objective, objective]
            yield from bps.mv(xct.source.kv, kv, xct.source.filter, filter, *settings)
            yield from bps.stage(xct.ct_det)
            yield from xct_plans.radiogram(xct)
            yield from bps.unstage(xct.ct_det)

        @bpp.run_decorator(md=_md)
        def run():
            yield from bpp.finalize_wrapper(body(), bps.mv(xct.source, "off"))

        return (yield from run())

    @_annotate(
        "Unidirectional plating at current_density (uA/cm2 over the electrode) for "
        "duration cell seconds, a radiogram every radiogram_every; stops on a short circuit.",
        current_density=_range(1e-6, description="uA/cm2"),
        duration=_range(1e-3, description="cell seconds"),
        radiogram_every=_range(1e-3, description="cell seconds"),
        sample_every=scan_ranges["sample_every"],
        exposure=scan_ranges["exposure"],
        images_per_radiogram=_range(1, 100),
        num_darks=_range(0),
        num_flats=_range(0),
        kv=scan_ranges["kv"],
        filter=scan_ranges["filter"],
        electrode_diameter_mm=_range(1e-3, description="mm"),
        short_threshold=_range(0.0, description="V: |Ewe| under it under current is a short"),
    )
    def xct_plating(
        *,
        current_density: float,
        duration: float = 6 * HOUR,
        radiogram_every: float = 0.5 * HOUR,
        sample_every: float = 60.0,
        exposure: float = 1.5,
        images_per_radiogram: int = 3,
        num_darks: int = 5,
        num_flats: int = 5,
        kv: float = 70.0,
        filter: str = "LE1",
        electrode_diameter_mm: float = xct_plans.ELECTRODE_DIAMETER_MM,
        short_threshold: float = xct_plans.SHORT_THRESHOLD_V,
        e_max: float = 5.0,
        flat_offset: float = xct_plans.FLAT_OFFSET_MM,
        cycle: int | None = None,
        experiment_id: str | None = None,
        cell: str | None = None,
        md: dict | None = None,
    ) -> MsgGenerator:
        """Plating (``operando.plans.xct.plating``); returns its result as a dict."""
        result = yield from xct_plans.plating(
            xct,
            current_density=current_density,
            duration=duration,
            radiogram_every=radiogram_every,
            sample_every=sample_every,
            exposure=exposure,
            images_per_radiogram=images_per_radiogram,
            num_darks=num_darks,
            num_flats=num_flats,
            kv=kv,
            filter=filter,
            electrode_diameter_mm=electrode_diameter_mm,
            short_threshold=short_threshold,
            e_max=e_max,
            flat_offset=flat_offset,
            cycle=cycle,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
        )
        return _plain(result)

    scan_names = tuple(xct_plans.POSTMORTEM_SCANS)

    @_annotate(
        "The post-mortem scans: overview (wide field of view) and highres (high "
        "resolution objective), or those listed in scans.",
        scans=_choice("PostmortemScan", scan_names, "which scans, in order", many=True),
        **scan_ranges,
    )
    def xct_postmortem(
        *,
        scans: list[str] = scan_names,
        num_projections: int = 1601,
        exposure: float = 1.5,
        images_per_projection: int = 3,
        num_darks: int = 10,
        num_flats: int = 10,
        kv: float = 70.0,
        filter: str = "LE1",
        sample_every: float = 60.0,
        experiment_id: str | None = None,
        cell: str | None = None,
        md: dict | None = None,
    ) -> MsgGenerator:
        """Post-mortem scans (``operando.plans.xct.postmortem``); returns their uids."""
        unknown = [s for s in scans if s not in xct_plans.POSTMORTEM_SCANS]
        if unknown or not scans:
            raise check.PlanArgumentError(
                f"scans must name some of {list(xct_plans.POSTMORTEM_SCANS)}, not {list(scans)}"
            )
        uids = yield from xct_plans.postmortem(
            xct,
            scans={s: xct_plans.POSTMORTEM_SCANS[s] for s in scans},
            num_projections=num_projections,
            exposure=exposure,
            images_per_projection=images_per_projection,
            num_darks=num_darks,
            num_flats=num_flats,
            kv=kv,
            filter=filter,
            sample_every=sample_every,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
        )
        return list(uids)

    @_annotate(
        "The operando XCT protocol: per cycle OCV with a 3D scan, then plating at the "
        "cycle's current density (the last value repeats), until the cell fails or the "
        "cycles are done; then the post-mortem scans.",
        cycles=_range(1),
        current_densities=_range(1e-6, description="uA/cm2 per cycle, the last repeating"),
        ocv_duration=_range(1e-3, description="cell seconds"),
        plating_duration=_range(1e-3, description="cell seconds"),
        radiogram_every=_range(1e-3, description="cell seconds"),
        sample_every=scan_ranges["sample_every"],
        num_projections=scan_ranges["num_projections"],
        exposure=scan_ranges["exposure"],
        images_per_projection=scan_ranges["images_per_projection"],
        postmortem_projections=_range(2, description="None: as num_projections"),
    )
    def xct_protocol(
        *,
        cycles: int = 20,
        current_densities: list[float] = xct_plans.PAPER_CURRENT_DENSITIES,
        ocv_duration: float = 3 * HOUR,
        plating_duration: float = 6 * HOUR,
        radiogram_every: float = 0.5 * HOUR,
        sample_every: float = 60.0,
        num_projections: int = 1601,
        exposure: float = 1.5,
        images_per_projection: int = 3,
        postmortem_projections: int | None = None,
        do_postmortem: bool = True,
        experiment_id: str | None = None,
        cell: str = "Li|LLZTO-PEO|Li",
        md: dict | None = None,
        resume: str | None = None,
    ) -> MsgGenerator:
        """The whole protocol (``operando.plans.xct.xct_operando``); returns its result."""
        result = yield from xct_plans.xct_operando(
            xct,
            cycles=cycles,
            current_densities=tuple(current_densities),
            ocv_duration=ocv_duration,
            plating_duration=plating_duration,
            radiogram_every=radiogram_every,
            sample_every=sample_every,
            num_projections=num_projections,
            exposure=exposure,
            images_per_projection=images_per_projection,
            postmortem_projections=postmortem_projections,
            do_postmortem=do_postmortem,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
            resume=resume,
            catalog=catalog if resume else None,
        )
        return _plain(result)

    return {
        "xct_technique": _technique_plan("xct_technique", xct, [xct.force, xct.pstat], "xct"),
        "xct_scan3d": xct_scan3d,
        "xct_radiogram": xct_radiogram,
        "xct_plating": xct_plating,
        "xct_postmortem": xct_postmortem,
        "xct_protocol": xct_protocol,
    }


# -- SAXS/WAXS ------------------------------------------------------------------


def _saxs_plans(saxs, catalog=None) -> dict:
    # The grid of the last alignment in this namespace: rasters queued after
    # saxs_align use it unless given ranges.
    aligned: dict = {}

    def grid(shape) -> dict:
        if "bounds" not in aligned:
            raise check.PlanArgumentError(
                "no x_range/y_range given and no saxs_align run yet in this environment"
            )
        return aligned["bounds"].grid(tuple(int(v) for v in shape))

    exposure = _range(1e-3, 3600.0, "seconds per point and detector (None: the beamline's)")
    shape = _range(1, description="[ny, nx] points")

    @_annotate(
        "Vertical then horizontal transmission scans locating the cathode and the "
        "cell window; later rasters without ranges use the grid they find.",
        y_num=_range(5),
        x_num=_range(5),
        y_range=_limits(saxs.stage.y, "[start, stop] of stage y, mm"),
        x_range=_limits(saxs.stage.x, "[start, stop] of stage x, mm"),
    )
    def saxs_align(
        *,
        y_range: list[float] = (-0.5, 1.5),
        y_num: int = 41,
        x_range: list[float] = (-4.0, 4.0),
        x_num: int = 33,
        experiment_id: str | None = None,
        cell: str | None = None,
        md: dict | None = None,
    ) -> MsgGenerator:
        """Alignment (``operando.plans.saxs.align``); returns the bounds found."""
        bounds = yield from saxs_plans.align(
            saxs,
            y_range=_pair("y_range", y_range),
            y_num=y_num,
            x_range=_pair("x_range", x_range),
            x_num=x_num,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
        )
        aligned["bounds"] = bounds
        return {"x": list(bounds.x), "y": list(bounds.y)}

    @_annotate(
        "SAXS and WAXS frames of the empty cell for background subtraction, at x, y "
        "(None: the centre of the last alignment's grid, or 0).",
        exposure=exposure,
        num_frames=_range(1),
        x=_limits(saxs.stage.x, "stage x, mm"),
        y=_limits(saxs.stage.y, "stage y, mm"),
    )
    def saxs_background(
        *,
        x: float | None = None,
        y: float | None = None,
        exposure: float | None = None,
        num_frames: int = 1,
        experiment_id: str | None = None,
        cell: str | None = None,
        md: dict | None = None,
    ) -> MsgGenerator:
        """Background (``operando.plans.saxs.background``); returns its uid."""
        if "bounds" in aligned and (x is None or y is None):
            g = grid(saxs_plans.GRID_SHAPE)
            x = sum(g["x_range"]) / 2 if x is None else x
            y = sum(g["y_range"]) / 2 if y is None else y
        return (
            yield from saxs_plans.background(
                saxs,
                x=0.0 if x is None else x,
                y=0.0 if y is None else y,
                exposure=exposure,
                num_frames=num_frames,
                experiment_id=experiment_id,
                cell=cell,
                md=md,
            )
        )

    @_annotate(
        "SAXS and WAXS at every point of a [ny, nx] grid over x_range x y_range "
        "(None: the last alignment's grid), with the cell's time, Ewe and capacity.",
        shape=shape,
        exposure=exposure,
        step=_choice("RasterStep", RASTER_STEPS, "the run's step"),
        x_range=_limits(saxs.stage.x, "[start, stop] of stage x, mm (None: the alignment's)"),
        y_range=_limits(saxs.stage.y, "[start, stop] of stage y, mm (None: the alignment's)"),
    )
    def saxs_raster(
        *,
        x_range: list[float] | None = None,
        y_range: list[float] | None = None,
        shape: list[int] = saxs_plans.GRID_SHAPE,
        snake: bool = True,
        exposure: float | None = None,
        step: str = "operando",
        cycle: int | None = None,
        experiment_id: str | None = None,
        cell: str | None = None,
        md: dict | None = None,
    ) -> MsgGenerator:
        """A raster (``operando.plans.saxs.raster``); returns its uid."""
        if x_range is None or y_range is None:
            g = grid(shape)
            x_range = g["x_range"] if x_range is None else x_range
            y_range = g["y_range"] if y_range is None else y_range
        return (
            yield from saxs_plans.raster(
                saxs,
                x_range=_pair("x_range", x_range),
                y_range=_pair("y_range", y_range),
                shape=tuple(shape),
                snake=snake,
                exposure=exposure,
                step=step,
                cycle=cycle,
                experiment_id=experiment_id,
                cell=cell,
                md=md,
            )
        )

    @_annotate(
        "The operando SAXS/WAXS experiment: alignment (unless realign is False: the "
        "last one), background, rasters at open circuit, then rasters while the cell "
        "cycles (GCPL at c_rate between e_min and e_max V).",
        cycles=_range(1),
        c_rate=_range(1e-6, description="C-rate of the cycling (1/20 = C/20)"),
        shape=shape,
        raster_every=_range(1e-3, description="cell seconds (None: back to back)"),
        ocv_rasters=_range(0),
        exposure=exposure,
        sample_every=_range(0.1, description="cell seconds between samples of the cell record"),
        max_half_cycle_share=_range(0.0, 1.0, "share of a half cycle a raster may span"),
    )
    def saxs_protocol(
        *,
        cycles: int = 1,
        c_rate: float = 1 / 20,
        e_min: float = 0.6,
        e_max: float = 2.4,
        shape: list[int] = saxs_plans.GRID_SHAPE,
        raster_every: float | None = None,
        ocv_rasters: int = 1,
        exposure: float | None = None,
        snake: bool = True,
        sample_every: float = 60.0,
        max_half_cycle_share: float = 0.1,
        realign: bool = True,
        experiment_id: str | None = None,
        cell: str = "Li-In|Li6PS5Cl|S-C (50:30:20)",
        md: dict | None = None,
        resume: str | None = None,
    ) -> MsgGenerator:
        """The whole experiment (``operando.plans.saxs.saxs_waxs_operando``); returns its result."""
        bounds = None
        if not realign:
            if "bounds" not in aligned:
                raise check.PlanArgumentError(
                    "realign=False needs a saxs_align run earlier in this environment"
                )
            bounds = aligned["bounds"]
        result = yield from saxs_plans.saxs_waxs_operando(
            saxs,
            cycles=cycles,
            c_rate=c_rate,
            e_min=e_min,
            e_max=e_max,
            shape=tuple(shape),
            bounds=bounds,
            raster_every=raster_every,
            ocv_rasters=ocv_rasters,
            exposure=exposure,
            snake=snake,
            sample_every=sample_every,
            max_half_cycle_share=max_half_cycle_share,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
            resume=resume,
            catalog=catalog if resume else None,
        )
        if result.bounds is not None:
            aligned["bounds"] = result.bounds
        out = _plain(result)
        out.pop("bounds", None)
        if result.bounds is not None:
            out["bounds"] = {"x": list(result.bounds.x), "y": list(result.bounds.y)}
        return out

    return {
        "saxs_technique": _technique_plan("saxs_technique", saxs, [saxs.pstat], "saxs_waxs"),
        "saxs_align": saxs_align,
        "saxs_background": saxs_background,
        "saxs_raster": saxs_raster,
        "saxs_protocol": saxs_protocol,
    }


# -- the potentiostat ----------------------------------------------------------------


def _technique_plan(name: str, station, readables: list, technique_md: str):
    """``<station>_technique``: one potentiostat technique to its end, the cell recorded."""
    pstat = station.pstat
    modes = _enum_strings(pstat.mode, ("OCV", "CC"))

    @_annotate(
        "One potentiostat technique run to its end (OCV; CC: constant current; GCPL: "
        "galvanostatic cycling between e_min and e_max), the cell (time, potential, "
        "current) recorded in the 'cell' stream every sample_every cell seconds.",
        mode=_choice("Technique", modes, "the technique"),
        duration=_range(1e-3, description="cell seconds (GCPL: at most)"),
        current=_limits(pstat.current_sp, "A (CC: signed; GCPL: its magnitude)"),
        cycles=_range(1, description="GCPL: full cycles"),
        sample_every=_range(1e-3, description="cell stream period, cell seconds"),
    )
    def plan(
        *,
        mode: str = "OCV",
        duration: float = 3 * HOUR,
        current: float = 0.0,
        e_min: float = -10.0,
        e_max: float = 10.0,
        cycles: int = 1,
        sample_every: float = 60.0,
        experiment_id: str | None = None,
        cell: str | None = None,
        md: dict | None = None,
    ) -> MsgGenerator:
        """A potentiostat technique in a run of its own (``step="echem"``); returns its uid."""
        duration = check.positive("duration", duration)
        sample_every = check.positive("sample_every", sample_every)
        if mode not in modes:
            raise check.PlanArgumentError(f"mode must be one of {list(modes)}, not {mode!r}")
        if not e_min < e_max:
            raise check.PlanArgumentError(f"e_min ({e_min} V) must be below e_max ({e_max} V)")
        if mode == "OCV":
            technique = Technique.ocv(duration)
        else:
            check.signal_range(pstat.current_sp, current, "current", "A")
            if mode == "GCPL":
                technique = Technique.cycling(
                    current,
                    e_min=e_min,
                    e_max=e_max,
                    cycles=check.positive_int("cycles", cycles),
                    duration=duration,
                )
            else:
                technique = Technique.constant_current(current, duration, e_min=e_min, e_max=e_max)
        recorder = CellRecorder(station.clock, readables, every=sample_every)
        args = dict(mode=mode, duration=duration, current=current, e_min=e_min, e_max=e_max)
        _md = experiment_md(
            name,
            dict(args, cycles=cycles, sample_every=sample_every),
            technique=technique_md,
            step="echem",
            cycle=None,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
            echem=mode,
        )
        end = {}

        def body():
            yield from recorder.sample()
            t_end = recorder.last + duration
            yield from start_technique(pstat, technique)
            while (yield from technique_running(pstat)):
                yield from bps.checkpoint()
                yield from wait_until(station.clock, min(recorder.last + sample_every, t_end))
                yield from recorder.sample()
                if recorder.last >= t_end:
                    break
            yield from wait_technique(pstat)
            end["state"] = yield from bps.rd(pstat.state)
            end["t"] = yield from now(station.clock)
            yield from recorder.sample()

        def run():
            uid = yield from bps.open_run(md=_md)
            yield from bpp.finalize_wrapper(body(), bps.stop(pstat))
            yield from bps.close_run(reason=f"{mode} ended ({end.get('state', '')})")
            return uid

        return (yield from run())

    plan.__name__ = plan.__qualname__ = name
    return plan


# -- common -----------------------------------------------------------------------


def _common_plans(devices: dict) -> dict:
    from ophyd import EpicsMotor

    readable = sorted(devices)
    motors = sorted(
        f"{name}.{attr}"
        for name, dev in devices.items()
        for attr in getattr(dev, "component_names", ())
        if isinstance(getattr(dev, attr), EpicsMotor)
    )

    @parameter_annotation_decorator(
        {
            "description": "Take one or more readings from the stations' devices.",
            "parameters": {
                "detectors": {
                    "annotation": "typing.List[Readable]",
                    "devices": {"Readable": readable},
                    "description": "devices to read, by name",
                },
                "num": {"min": 1},
                "delay": {"min": 0},
            },
        }
    )
    def count(
        detectors: list, num: int = 1, delay: float = 0.0, md: dict | None = None
    ) -> MsgGenerator:
        """``bluesky.plans.count`` of devices of the stations."""
        return (yield from bp.count(list(detectors), num=num, delay=delay, md=md))

    @parameter_annotation_decorator(
        {
            "description": "Move motors of the stations: motor1, position1, motor2, ...",
            "parameters": {
                "args": {
                    "annotation": "typing.Union[Motor, float]",
                    "devices": {"Motor": motors},
                    "description": "motor1, position1, motor2, position2, ...",
                }
            },
        }
    )
    def mv(*args) -> MsgGenerator:
        """``bluesky.plan_stubs.mv`` of motors of the stations (within their limits)."""
        if len(args) % 2 or not args:
            raise check.PlanArgumentError(f"mv takes motor, position pairs, not {args!r}")
        for motor, position in zip(args[::2], args[1::2]):
            if not hasattr(motor, "limits"):
                raise check.PlanArgumentError(f"{motor!r} is not a motor of the stations")
            check.motor_positions(motor, (float(position),))
        # nothing returned: the worker reports a plan's result as JSON (statuses are not)
        yield from bps.mv(*args)

    return {"count": count, "mv": mv}


def saxs_devices(saxs) -> dict:
    """The SAXS/WAXS station's devices under their namespace names (``saxs_stage``, ...)."""
    return {SAXS_DEVICE_NAMES[name]: dev for name, dev in saxs.devices().items()}


def queue_namespace(*, xct=None, saxs=None, catalog=None) -> dict:
    """The queue-facing plans (and the SAXS/WAXS device names) for the stations given.

    ``catalog`` (the session's Tiled client) lets the protocols resume an
    interrupted experiment (``resume=ID``). The XCT devices are expected in the
    namespace under the station's names
    (``clock``, ``stage``, ...), as ``10-xct-devices.py`` puts them; the SAXS/WAXS
    ones are returned here as ``saxs_stage``, ``saxs_det``, ... (:data:`SAXS_DEVICE_NAMES`).
    """
    namespace, devices = {}, {}
    if xct is not None:
        namespace.update(_xct_plans(xct, catalog))
        devices.update(xct.devices())
    if saxs is not None:
        namespace.update(_saxs_plans(saxs, catalog))
        named = saxs_devices(saxs)
        namespace.update(named)
        devices.update(named)
    if devices:
        namespace.update(_common_plans(devices))
    return namespace
