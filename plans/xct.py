"""Plans of the operando X-ray CT experiment (pressurized Li | HSE | Li cell).

- ``scan3d``: darks, flats and projections as the streams ``dark``, ``flat`` and
  ``primary``, the cell recorded in the ``cell`` stream meanwhile.
- ``radiogram``: source on, one frame, source off.
- ``plating``: constant current for a duration, a radiogram every 30 min of cell
  time, force and potential recorded continuously in the ``cell`` stream; stops
  on a short circuit.
- ``xct_operando``: the whole protocol, cycle after cycle (OCV + 3D scan, then
  plating), until the cell fails or the cycles are done, then the post-mortem
  scans.

Each run's start document carries ``experiment_id``, ``cell``, ``technique``
(``"xct"``), ``step`` (``scan3d``, ``plating``, ``postmortem``) and ``cycle``.
All waits are on the hardware (clock, technique, motors, detector); no
wall-clock sleep.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np

from ..constants import HOUR, LI_ELECTRODE_DIAMETER_MM
from ..devices.common import Technique
from ..devices.xct import XCTStation
from . import validation as check
from .resume import remaining_duration
from .stubs import (
    CellRecorder,
    MsgGenerator,
    checkpointed_read,
    experiment_md,
    now,
    record_pauses,
    start_technique,
    technique_running,
    wait_technique,
    wait_until,
)
from .validation import checked_plan

logger = logging.getLogger(__name__)


#: Paper protocol: current density per cycle (µA/cm²); the last value repeats.
PAPER_CURRENT_DENSITIES = (2.0, 20.0, 40.0)
#: The nominal Li electrode (ø4 mm) the current density refers to.
ELECTRODE_DIAMETER_MM = LI_ELECTRODE_DIAMETER_MM
#: Below this |Ewe| (V) under current, the cell is short-circuited.
SHORT_THRESHOLD_V = 1e-3
#: Flats: move the cell this far sideways, out of the field of view (mm).
FLAT_OFFSET_MM = 10.0
#: Objectives of the post-mortem scans (scan name -> detector objective).
POSTMORTEM_SCANS = {"overview": "4X-wide", "highres": "20X"}
#: At most this many radiograms in one plating step.
MAX_RADIOGRAMS = 10_000


def electrode_area_cm2(diameter_mm: float = ELECTRODE_DIAMETER_MM) -> float:
    return math.pi * (diameter_mm / 20.0) ** 2


def current_for_density(j_uA_cm2: float, diameter_mm: float = ELECTRODE_DIAMETER_MM) -> float:
    """Cell current (A) for a current density (µA/cm²) over the electrode."""
    return j_uA_cm2 * 1e-6 * electrode_area_cm2(diameter_mm)


def _base_md(plan_name: str, plan_args: dict, station: XCTStation, **kwargs) -> dict:
    return experiment_md(
        plan_name, plan_args, technique="xct", detectors=[station.ct_det.name], **kwargs
    )


@dataclass(frozen=True)
class _Limits:
    """What the station's PVs allow (control limits, enum strings), or the documented
    ranges when ``station`` is None (the command line, before any IOC runs)."""

    exposure: check.Bound = check.ACQUIRE_TIME
    images: check.Bound = check.NUM_EXPOSURES
    kv: check.Bound = check.SOURCE_KV.intersect(check.KV)
    current: check.Bound = check.PSTAT_CURRENT
    potential: check.Bound = check.PSTAT_POTENTIAL
    duration: check.Bound = check.STEP_DURATION.intersect(check.PSTAT_DURATION)
    filters: tuple = check.FILTERS
    objectives: tuple = check.OBJECTIVES

    @classmethod
    def of(cls, station: XCTStation | None) -> _Limits:
        if station is None:
            return cls()
        cam, pstat = station.ct_det.cam, station.pstat
        return cls(
            exposure=check.signal_bound(cam.acquire_time, check.ACQUIRE_TIME),
            images=check.signal_bound(cam.num_exposures, check.NUM_EXPOSURES),
            kv=check.signal_bound(station.source.kv, check.SOURCE_KV).intersect(check.KV),
            current=check.signal_bound(pstat.current_sp, check.PSTAT_CURRENT),
            potential=check.signal_bound(pstat.e_max, check.PSTAT_POTENTIAL),
            duration=check.STEP_DURATION.intersect(
                check.signal_bound(pstat.duration, check.PSTAT_DURATION)
            ),
            filters=check.enum_strings(station.source.filter, check.FILTERS),
            objectives=check.enum_strings(cam.objective, check.OBJECTIVES),
        )


def _check_run_md(*, cycle, experiment_id, cell, md, step=None) -> None:
    check.optional("cycle", cycle, check.RUN_CYCLE)
    check.text("experiment_id", experiment_id)
    check.text("cell", cell)
    check.mapping("md", md)
    if step is not None:
        check.text("step", step, optional=False)


def _check_source(lim: _Limits, kv, filter) -> None:
    check.number("kv", kv, lim.kv)
    check.choice("filter", filter, lim.filters)


def _check_flat_offset(station: XCTStation | None, flat_offset, num_flats: int) -> float:
    offset = check.number("flat_offset", flat_offset, check.Bound(unit="mm"))
    if num_flats and abs(offset) < check.FLAT_OFFSET_MIN_MM:
        raise check.PlanArgumentError(
            f"flat_offset = {offset:g} mm leaves the cell in the field of view: "
            f"|flat_offset| must be >= {check.FLAT_OFFSET_MIN_MM:g} mm"
        )
    if num_flats and station is not None:
        x0 = station.stage.x.position
        check.motor_positions(station.stage.x, (x0 + offset,), "flat-field position")
    return offset


def _check_samples(sample_every, span_s: float) -> float:
    every = check.number("sample_every", sample_every, check.SAMPLE_EVERY)
    if span_s / every > check.MAX_CELL_SAMPLES:
        raise check.PlanArgumentError(
            f"sample_every = {every:g} s records the cell {span_s / every:.0f} times in "
            f"{check.duration_text(span_s)}, more than the allowed {check.MAX_CELL_SAMPLES}"
        )
    return every


def _check_scan(
    station: XCTStation | None,
    lim: _Limits | None = None,
    *,
    num_projections,
    exposure,
    images_per_projection,
    num_darks,
    num_flats,
    start,
    stop,
    kv,
    filter,
    objective,
    flat_offset,
    sample_every,
    ocv_duration,
    cycle,
    step,
    experiment_id,
    cell,
    md,
):
    """Every argument of ``scan3d``; returns (projections, exposure, images)."""
    lim = lim or _Limits.of(station)
    n = check.number("num_projections", num_projections, check.PROJECTIONS)
    exposure = check.number("exposure", exposure, lim.exposure)
    k = check.number("images_per_projection", images_per_projection, lim.images)
    darks = check.number("num_darks", num_darks, check.DARKS_FLATS)
    flats = check.number("num_flats", num_flats, check.DARKS_FLATS)
    start = check.number("start", start, check.Bound(unit="deg"))
    stop = check.number("stop", stop, check.Bound(unit="deg"))
    if station is not None:
        check.motor_positions(station.stage.th, (start, stop), "rotation angle")
    check.number(
        "angular range stop - start",
        stop - start,
        check.ROTATION_SPAN,
        note=f" ({start:g}..{stop:g})",
    )
    _check_source(lim, kv, filter)
    if objective is not None:
        check.choice("objective", objective, lim.objectives)
    _check_flat_offset(station, flat_offset, flats)
    scan_s = (n + darks + flats) * k * exposure
    check.budget(
        "the 3D scan",
        scan_s,
        check.SCAN_DURATION,
        f"{n} projections + {darks} darks + {flats} flats, {k} x {exposure:g} s each",
    )
    ocv = check.optional("ocv_duration", ocv_duration, lim.duration)
    _check_samples(sample_every, max(scan_s, ocv or 0.0))
    _check_run_md(cycle=cycle, experiment_id=experiment_id, cell=cell, md=md, step=step)
    return n, exposure, k


def _configure_detector(
    station: XCTStation, exposure: float, images: int, objective: str | None
) -> MsgGenerator:
    cam = station.ct_det.cam
    args = [cam.acquire_time, exposure, cam.num_exposures, images]
    if objective is not None:
        args += [cam.objective, objective]
    yield from bps.mv(*args)


def _safe_state(station: XCTStation, *, stop_technique: bool) -> MsgGenerator:
    """Cleanup on any exit: source off, and the cell back at open circuit."""
    yield from bps.mv(station.source, "off")
    if stop_technique:
        yield from bps.stop(station.pstat)


def _frames(
    station: XCTStation,
    stream: str,
    count: int,
    extra: list,
    recorder: CellRecorder | None,
    restore=(),
) -> MsgGenerator:
    """``count`` frames into ``stream``, the detector staged (one HDF5 file) for them.

    ``restore`` (device, state) pairs are put back before every frame taken
    after a pause (the source, the flat-field position)."""
    if count == 0:
        return
    det = station.ct_det
    yield from bps.stage(det)
    for _ in range(count):
        yield from checkpointed_read([det, *extra], name=stream, restore=restore)
        if recorder is not None:
            yield from recorder.maybe_sample()
    yield from bps.unstage(det)


def _darks_and_flats(
    station: XCTStation,
    num_darks: int,
    num_flats: int,
    flat_offset: float,
    recorder: CellRecorder | None,
) -> MsgGenerator:
    extra = [station.clock]
    source = station.source
    yield from bps.checkpoint()
    yield from bps.mv(source, "off")
    yield from _frames(station, "dark", num_darks, extra, recorder, restore=[(source, "off")])
    if num_flats:
        x = station.stage.x
        x0 = x.position
        flat_x = x0 + flat_offset
        yield from bps.checkpoint()
        yield from bps.mv(x, flat_x)
        yield from bps.mv(source, "on")
        yield from _frames(station, "flat", num_flats, extra, recorder, restore=[(source, "on")])
        yield from bps.mv(x, x0)
        yield from bps.checkpoint()


def _projections(station: XCTStation, angles: np.ndarray, recorder: CellRecorder) -> MsgGenerator:
    det, th = station.ct_det, station.stage.th
    yield from bps.mv(station.source, "on")
    yield from bps.stage(det)
    for angle in angles:
        yield from bps.checkpoint()
        yield from bps.mv(th, float(angle))
        # After a pause the source goes on again (the RunEngine switched it
        # off); a move cut short is replayed from the checkpoint above.
        yield from checkpointed_read([det, th, station.clock], restore=[(station.source, "on")])
        yield from recorder.maybe_sample()
    yield from bps.unstage(det)
    yield from bps.mv(station.source, "off")


@checked_plan
def scan3d(
    station: XCTStation,
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
    flat_offset: float = FLAT_OFFSET_MM,
    sample_every: float = 60.0,
    ocv_duration: float | None = None,
    cycle: int | None = None,
    step: str = "scan3d",
    experiment_id: str | None = None,
    cell: str | None = None,
    md: dict | None = None,
) -> MsgGenerator:
    """A 3D CT scan: darks, flats, then ``num_projections`` angles over [start, stop].

    Defaults are the paper's: 1,601 projections, 3 images of 1.5 s each, 70 kV with
    the low-energy filter (2.25 h in all). With ``ocv_duration`` the potentiostat
    holds the cell at open circuit for that long (started before the scan, waited
    on after it), as the protocol's OCV step. Force, potential and cell time go
    to the ``cell`` stream every ``sample_every`` cell seconds.

    Arguments are checked when the plan is called, before anything moves.
    """
    with check.context("scan3d"):
        n, exposure, k = _check_scan(
            station,
            num_projections=num_projections,
            exposure=exposure,
            images_per_projection=images_per_projection,
            num_darks=num_darks,
            num_flats=num_flats,
            start=start,
            stop=stop,
            kv=kv,
            filter=filter,
            objective=objective,
            flat_offset=flat_offset,
            sample_every=sample_every,
            ocv_duration=ocv_duration,
            cycle=cycle,
            step=step,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
        )
    angles = np.linspace(start, stop, n)
    plan_args = dict(
        num_projections=n,
        exposure=exposure,
        images_per_projection=k,
        start=start,
        stop=stop,
        num_darks=num_darks,
        num_flats=num_flats,
        kv=kv,
        filter=filter,
        objective=objective,
        ocv_duration=ocv_duration,
    )
    _md = _base_md(
        "scan3d",
        plan_args,
        station,
        step=step,
        cycle=cycle,
        experiment_id=experiment_id,
        cell=cell,
        md=md,
    )
    _md.update(
        {
            "motors": [station.stage.th.name],
            "num_points": n,
            "shape": [n],
            "extents": [[start, stop]],
            "scan_time_estimate_s": n * k * exposure,
            "hints": {"dimensions": [([station.stage.th.name], "primary")]},
            "echem": "OCV" if ocv_duration is not None else None,
        }
    )
    recorder = CellRecorder(station.clock, [station.force, station.pstat], every=sample_every)

    overrun = {}

    def body():
        yield from recorder.sample()
        t_ocv = yield from now(station.clock)
        if ocv_duration is not None:
            yield from start_technique(station.pstat, Technique.ocv(ocv_duration))
            # A pause after this point never starts the OCV rest again: the
            # cell rests on through the pause (cell time goes on on a real or
            # scaled clock; on virtual time nothing waits, so none passes).
            yield from bps.checkpoint()
        yield from bps.mv(station.source.kv, kv, station.source.filter, filter)
        yield from _configure_detector(station, exposure, k, objective)
        yield from _darks_and_flats(station, num_darks, num_flats, flat_offset, recorder)
        yield from _projections(station, angles, recorder)
        yield from bps.mv(station.stage.th, float(angles[0]))
        t_done = yield from now(station.clock)
        if ocv_duration is not None and t_done > t_ocv + ocv_duration:
            # The acquisition fell behind the cell clock (a time scale too high
            # for this many frames): the cell sat longer at OCV than planned.
            overrun["s"] = t_done - (t_ocv + ocv_duration)
            logger.warning(
                "3D scan overran the %.2f h OCV step by %.2f h of cell time: "
                "lower the time scale or the number of projections",
                ocv_duration / HOUR,
                overrun["s"] / HOUR,
            )
        if ocv_duration is not None:
            # Keep recording the cell until the OCV step ends by itself.
            yield from recorder.record_until(t_ocv + ocv_duration)
            yield from wait_technique(station.pstat)
        yield from recorder.sample()

    def run():
        uid = yield from bps.open_run(md=_md)
        yield from bps.checkpoint()
        yield from bpp.finalize_wrapper(
            body(), _safe_state(station, stop_technique=ocv_duration is not None)
        )
        reason = ""
        if overrun:
            reason = (
                f"3D scan overran the OCV step by {overrun['s'] / HOUR:.2f} h of cell "
                f"time (acquisition slower than the cell clock)"
            )
        yield from bps.close_run(reason=reason)
        yield from bps.checkpoint()
        return uid

    return record_pauses(run(), station.clock)


def _check_radiogram(stream, extra) -> list:
    check.text("stream", stream, optional=False)
    if isinstance(extra, (str, bytes)) or not hasattr(extra, "__iter__"):
        raise check.PlanArgumentError(f"extra must be a list of readable devices, not {extra!r}")
    extra = list(extra)
    for dev in extra:
        if not callable(getattr(dev, "read", None)):
            raise check.PlanArgumentError(f"extra: {dev!r} is not a readable device")
    return extra


@checked_plan
def radiogram(station: XCTStation, *, stream: str = "primary", extra=()) -> MsgGenerator:
    """Source on (waits for it to be ready), one frame, source off.

    The detector must be staged; the frame and the cell time go to ``stream``.
    After a pause the source is switched on again before the frame is taken.
    """
    with check.context("radiogram"):
        extra = _check_radiogram(stream, extra)

    def run():
        yield from bps.mv(station.source, "on")
        yield from checkpointed_read(
            [station.ct_det, station.clock, station.force, station.pstat, *extra],
            name=stream,
            restore=[(station.source, "on")],
        )
        yield from bps.mv(station.source, "off")

    return run()


def _check_plating(
    station: XCTStation | None,
    lim: _Limits | None = None,
    *,
    current_density,
    duration,
    radiogram_every,
    sample_every,
    exposure,
    images_per_radiogram,
    num_darks,
    num_flats,
    kv,
    filter,
    electrode_diameter_mm,
    short_threshold,
    e_max,
    flat_offset,
    cycle,
    experiment_id,
    cell,
    md,
):
    """Every argument of ``plating``; returns (j, duration, radiogram_every, exposure,
    images, current)."""
    lim = lim or _Limits.of(station)
    d = check.number("electrode_diameter_mm", electrode_diameter_mm, check.ELECTRODE_DIAMETER)
    note = ""
    if isinstance(current_density, (int, float)) and math.isfinite(current_density):
        note = f" (a plating current of {current_for_density(current_density, d):.3g} A)"
    j = check.number("current_density", current_density, check.CURRENT_DENSITY, note=note)
    current = current_for_density(j, d)
    check.number("plating current", current, lim.current, note=f" ({j:g} µA/cm² over ø{d:g} mm)")
    duration = check.number("duration", duration, lim.duration)
    moved = check.plated_um(j, duration)
    if moved > check.LI_TOP_LAYER_UM:
        raise check.PlanArgumentError(
            f"current_density = {j:g} µA/cm² for {check.duration_text(duration)} strips "
            f"{moved:.1f} µm of Li, more than the {check.LI_TOP_LAYER_UM:g} µm top Li layer"
        )
    exposure = check.number("exposure", exposure, lim.exposure)
    k = check.number("images_per_radiogram", images_per_radiogram, lim.images)
    every = check.number(
        "radiogram_every",
        radiogram_every,
        check.Bound(exposure * k, check.STEP_DURATION.high, "s"),
        note=f" (a radiogram takes {k} x {exposure:g} s)",
    )
    if duration / every > MAX_RADIOGRAMS:
        raise check.PlanArgumentError(
            f"radiogram_every = {every:g} s takes {duration / every:.0f} radiograms in "
            f"{check.duration_text(duration)}, more than the allowed {MAX_RADIOGRAMS}"
        )
    _check_samples(sample_every, duration)
    darks = check.number("num_darks", num_darks, check.DARKS_FLATS)
    flats = check.number("num_flats", num_flats, check.DARKS_FLATS)
    check.budget("the darks and flats", (darks + flats) * k * exposure, check.SCAN_DURATION)
    _check_source(lim, kv, filter)
    threshold = check.number(
        "short_threshold", short_threshold, check.SHORT_THRESHOLD.intersect(lim.potential)
    )
    check.number(
        "e_max",
        e_max,
        lim.potential.intersect(check.Bound(threshold, None, "V", low_open=True)),
        note=" (must be above short_threshold)",
    )
    _check_flat_offset(station, flat_offset, flats)
    _check_run_md(cycle=cycle, experiment_id=experiment_id, cell=cell, md=md)
    return j, duration, every, exposure, k, current


@dataclass
class PlatingResult:
    """What a plating step ended with."""

    uid: str
    end_state: str
    shorted: bool
    short_time: float | None = None
    reason: str = ""
    radiograms: int = 0
    #: techniques started again for the charge left (one dict per restart)
    restarts: list = field(default_factory=list)


@checked_plan
def plating(
    station: XCTStation,
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
    electrode_diameter_mm: float = ELECTRODE_DIAMETER_MM,
    short_threshold: float = SHORT_THRESHOLD_V,
    e_max: float = 5.0,
    flat_offset: float = FLAT_OFFSET_MM,
    cycle: int | None = None,
    experiment_id: str | None = None,
    cell: str | None = None,
    md: dict | None = None,
) -> MsgGenerator:
    """Unidirectional plating at ``current_density`` (µA/cm²) for ``duration`` (cell s).

    Darks and flats first (streams ``dark`` and ``flat``), then the constant-current
    technique; a radiogram (``primary``) at its start and every ``radiogram_every``
    cell seconds, the source off between them; force, potential and current in the
    ``cell`` stream every ``sample_every`` cell seconds. The technique stops by
    itself when |Ewe| falls under ``short_threshold`` (a short circuit): the plan
    then records the reason in the stop document and returns a ``PlatingResult``
    with ``shorted=True``.
    """
    with check.context("plating"):
        j, duration, radiogram_every, exposure, k, current = _check_plating(
            station,
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

    plan_args = dict(
        current_density=j,
        duration=duration,
        radiogram_every=radiogram_every,
        sample_every=sample_every,
        exposure=exposure,
        images_per_radiogram=k,
        kv=kv,
        filter=filter,
        electrode_diameter_mm=electrode_diameter_mm,
    )
    _md = _base_md(
        "plating",
        plan_args,
        station,
        step="plating",
        cycle=cycle,
        experiment_id=experiment_id,
        cell=cell,
        md=md,
    )
    _md.update(
        {
            "echem": "CC",
            "current_density_uA_cm2": j,
            "current_A": current,
            "electrode_diameter_mm": electrode_diameter_mm,
            "duration_s": duration,
            "num_points": int(duration // radiogram_every) + 1,
            "hints": {"dimensions": [([station.clock.time.name], "primary")]},
        }
    )
    technique = Technique.constant_current(current, duration, e_min=short_threshold, e_max=e_max)
    recorder = CellRecorder(station.clock, [station.force, station.pstat], every=sample_every)
    result = PlatingResult(uid="", end_state="", shorted=False)

    def body():
        det = station.ct_det
        yield from bps.mv(station.source.kv, kv, station.source.filter, filter)
        yield from _configure_detector(station, exposure, k, None)
        yield from recorder.sample()
        yield from _darks_and_flats(station, num_darks, num_flats, flat_offset, None)
        yield from bps.stage(det)
        yield from bps.checkpoint()
        t0 = yield from now(station.clock)
        yield from start_technique(station.pstat, technique)
        # From here a pause never restarts the technique: the current keeps
        # flowing through the pause (only the source goes off), so a paused
        # plating passes the same charge as an uninterrupted one.
        yield from bps.checkpoint()
        yield from radiogram(station)
        result.radiograms += 1
        next_radiogram = t0 + radiogram_every
        t_end = t0 + duration
        charge_target = current * duration
        charge_before = 0.0  # charge of a technique lost on the way (see below)
        while True:
            while (yield from technique_running(station.pstat)):
                yield from bps.checkpoint()
                t_next = min(recorder.last + sample_every, next_radiogram, t_end)
                yield from wait_until(station.clock, t_next)
                yield from recorder.sample()
                # Radiograms on the grid strictly inside the plating window; the
                # last one is taken after the technique has ended.
                due = recorder.last >= next_radiogram - 1e-6 and next_radiogram < t_end - 1e-6
                if due and (yield from technique_running(station.pstat)):
                    yield from radiogram(station)
                    result.radiograms += 1
                    next_radiogram += radiogram_every
                    # Radiograms due during a pause (cell time went on) are not
                    # taken late in a burst: the grid goes on from now.
                    while next_radiogram <= recorder.last + 1e-6:
                        next_radiogram += radiogram_every
                if recorder.last >= t_end:
                    break
            yield from wait_technique(station.pstat)
            state = yield from bps.rd(station.pstat.state)
            if state == "done" or state == "limit":
                break
            # The technique was aborted under the plan (by hand on the
            # instrument, or a potentiostat restarted during a pause): plate
            # the charge that is left, so that the step passes its charge.
            passed = yield from bps.rd(station.pstat.charge)
            charge_before += float(passed)
            left = (charge_target - charge_before) / current
            if left <= 1e-3 * duration:
                break
            t_restart = yield from now(station.clock)
            logger.warning(
                "plating technique %s at cell time %.2f h with %.3g C of %.3g C passed: "
                "restarted for the remaining %.2f h",
                state,
                t_restart / HOUR,
                charge_before,
                charge_target,
                left / HOUR,
            )
            result.restarts.append(
                {"t": t_restart, "charge_before_c": charge_before, "duration_s": left}
            )
            remainder = Technique.constant_current(
                current, left, e_min=short_threshold, e_max=e_max
            )
            yield from bps.checkpoint()
            yield from start_technique(station.pstat, remainder)
            yield from bps.checkpoint()
            t_end = t_restart + left
        ewe = yield from bps.rd(station.pstat.ewe)
        t = yield from now(station.clock)
        result.end_state = str(state)
        # A last radiogram shows the cell as plating left it.
        yield from radiogram(station)
        result.radiograms += 1
        yield from bps.unstage(det)
        yield from recorder.sample()
        if state == "limit" and abs(ewe) < short_threshold:
            result.shorted = True
            result.short_time = t
            result.reason = (
                f"short circuit: |Ewe| = {abs(ewe) * 1e3:.3f} mV < "
                f"{short_threshold * 1e3:g} mV at cell time {t / HOUR:.2f} h; "
                f"plating stopped"
            )
        elif state == "limit":
            result.reason = f"potential limit reached (Ewe = {ewe:.4f} V); plating stopped"
        else:
            result.reason = f"plating finished ({state})"
        if result.restarts:
            result.reason += (
                f"; technique restarted {len(result.restarts)} time(s) for the charge left"
            )

    def run():
        result.uid = yield from bps.open_run(md=_md)
        yield from bps.checkpoint()
        yield from bpp.finalize_wrapper(body(), _safe_state(station, stop_technique=True))
        yield from bps.close_run(exit_status="success", reason=result.reason)
        yield from bps.checkpoint()
        return result

    return record_pauses(run(), station.clock)


def _check_postmortem(
    station: XCTStation | None, lim: _Limits | None = None, *, scans, failure, **scan_kwargs
) -> float:
    """Every argument of ``postmortem``; returns the scans' total time (cell s)."""
    lim = lim or _Limits.of(station)
    if not isinstance(scans, Mapping) or not scans:
        raise check.PlanArgumentError(
            f"scans must be a dict {{name: objective}} naming at least one scan, not {scans!r}"
        )
    options = check.keyword_defaults(scan3d)
    fixed = sorted({"objective", "step"} & set(scan_kwargs))
    if fixed:
        raise check.PlanArgumentError(
            f"{', '.join(fixed)} cannot be given: scans sets each scan's objective"
        )
    unknown = sorted(set(scan_kwargs) - set(options))
    if unknown:
        raise check.PlanArgumentError(
            f"unknown argument(s) {', '.join(unknown)}; postmortem takes scans, failure and "
            f"scan3d's {', '.join(k for k in options if k not in ('objective', 'step'))}"
        )
    check.mapping("failure", failure)
    total = 0.0
    for name, objective in scans.items():
        check.text("scans name", name, optional=False)
        kw = {**options, **scan_kwargs, "objective": objective, "step": "postmortem"}
        with check.context(f"scan {name!r}"):
            n, exposure, k = _check_scan(station, lim, **kw)
        total += (n + kw["num_darks"] + kw["num_flats"]) * k * exposure
    return total


@checked_plan
def postmortem(
    station: XCTStation,
    *,
    scans=POSTMORTEM_SCANS,
    failure: dict | None = None,
    done=(),
    **scan_kwargs,
) -> MsgGenerator:
    """The post-mortem scans (overview with the wide field of view, then high resolution)."""
    with check.context("postmortem"):
        _check_postmortem(station, scans=scans, failure=failure, **scan_kwargs)
    scan_kwargs = dict(scan_kwargs)
    user_md = scan_kwargs.pop("md", None) or {}

    def run():
        uids = []
        for name, objective in scans.items():
            if name in done:
                continue
            md = dict(user_md)
            md.update({"postmortem_scan": name, "failure": failure or {}})
            uid = yield from scan3d(
                station, objective=objective, step="postmortem", md=md, **scan_kwargs
            )
            uids.append(uid)
        yield from _configure_detector(
            station,
            scan_kwargs.get("exposure", 1.5),
            scan_kwargs.get("images_per_projection", 3),
            "4X",
        )
        return uids

    return run()


def _charge_passed(station: XCTStation, point, cycle: int, catalog) -> MsgGenerator:
    """The charge (C) the interrupted platings of ``cycle`` passed: what their
    ``cell`` streams recorded last, or, when the potentiostat still runs the
    interrupted constant current or has ended it (the station went on
    without the plan), its own count."""
    from .resume import _runs, last_value

    runs = _runs(catalog) if catalog is not None else None
    cut = point.interrupted("plating", cycle)
    recorded = []
    for r in cut:
        q = last_value(runs[r.uid], "cell", station.pstat.charge.name) if runs is not None else 0
        recorded.append(0.0 if not math.isfinite(q) else abs(q))
    state = yield from bps.rd(station.pstat.state)
    mode = yield from bps.rd(station.pstat.mode)
    if state in ("running", "done", "limit") and mode == "CC" and recorded:
        live = yield from bps.rd(station.pstat.charge)
        recorded[-1] = max(recorded[-1], abs(float(live)))
    return float(sum(recorded))


@dataclass
class OperandoResult:
    experiment_id: str
    runs: list = field(default_factory=list)
    cycles_done: int = 0
    failure: dict | None = None


def check_xct_operando(
    station: XCTStation | None,
    *,
    cycles,
    current_densities,
    ocv_duration,
    plating_duration,
    radiogram_every,
    sample_every,
    num_projections,
    exposure,
    images_per_projection,
    postmortem_projections,
    do_postmortem,
    experiment_id,
    cell,
    md,
) -> tuple[int, list]:
    """The whole protocol's arguments: every cycle's scan and plating, the post-mortem
    scans, and the total time; returns (cycles, current densities).

    ``station`` None checks against the documented ranges (no motor limits).
    """
    lim = _Limits.of(station)
    cycles = check.number("cycles", cycles, check.CYCLES)
    if isinstance(current_densities, (str, bytes, Mapping)) or not isinstance(
        current_densities, Iterable
    ):
        raise check.PlanArgumentError(
            f"current_densities must be a list of current densities in µA/cm², "
            f"not {current_densities!r}"
        )
    densities = list(current_densities)
    if not densities:
        raise check.PlanArgumentError("current_densities must name at least one value")
    ocv = check.number("ocv_duration", ocv_duration, lim.duration)
    plating_s = check.number("plating_duration", plating_duration, lim.duration)
    check.optional("postmortem_projections", postmortem_projections, check.PROJECTIONS)
    do_postmortem = check.flag("do_postmortem", do_postmortem)
    common = dict(experiment_id=experiment_id, cell=cell, md=md)
    with check.context("3D scans"):
        n, exposure, k = _check_scan(
            station,
            lim,
            **{
                **check.keyword_defaults(scan3d),
                "num_projections": num_projections,
                "exposure": exposure,
                "images_per_projection": images_per_projection,
                "sample_every": sample_every,
                "ocv_duration": ocv,
                **common,
            },
        )
    scan_time = n * k * exposure
    if scan_time > ocv:
        raise check.PlanArgumentError(
            f"the 3D scan ({check.duration_text(scan_time)}) does not fit in the OCV step "
            f"(ocv_duration = {check.duration_text(ocv)}): fewer projections, shorter "
            f"exposure or a longer OCV"
        )
    for i, j in enumerate(densities):
        used = f"cycle {i + 1} plating" if i < cycles else f"unused in {cycles} cycles"
        with check.context(f"{used} (current_densities[{i}])"):
            densities[i] = _check_plating(
                station,
                lim,
                **{
                    **check.keyword_defaults(plating),
                    "current_density": j,
                    "duration": plating_s,
                    "radiogram_every": radiogram_every,
                    "sample_every": sample_every,
                    "exposure": exposure,
                    "images_per_radiogram": k,
                    **common,
                },
            )[0]
    per_cycle = [densities[min(c, len(densities) - 1)] for c in range(cycles)]
    stripped = sum(check.plated_um(j, plating_s) for j in per_cycle)
    if stripped > check.LI_TOP_LAYER_UM:
        raise check.PlanArgumentError(
            f"{cycles} platings of {check.duration_text(plating_s)} at current_densities "
            f"{densities} µA/cm² strip {stripped:.1f} µm of Li, more than the "
            f"{check.LI_TOP_LAYER_UM:g} µm top Li layer"
        )
    postmortem_s = 0.0
    if do_postmortem:
        with check.context("post-mortem"):
            postmortem_s = _check_postmortem(
                station,
                lim,
                scans=POSTMORTEM_SCANS,
                failure=None,
                num_projections=n if postmortem_projections is None else postmortem_projections,
                exposure=exposure,
                images_per_projection=k,
                sample_every=sample_every,
                cycle=None,
                **common,
            )
    check.budget(
        "the protocol",
        cycles * (ocv + plating_s) + postmortem_s,
        check.EXPERIMENT_DURATION,
        f"{cycles} cycles of {check.duration_text(ocv + plating_s)} and the post-mortem scans",
    )
    return cycles, densities


@checked_plan
def xct_operando(
    station: XCTStation,
    *,
    cycles: int = 20,
    current_densities=PAPER_CURRENT_DENSITIES,
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
    resume=None,
    catalog=None,
) -> MsgGenerator:
    """The operando XCT protocol, repeated until the cell fails or ``cycles`` are done.

    Per cycle (9 h with the defaults): OCV for ``ocv_duration`` with a 3D scan
    during it, then plating for ``plating_duration`` at the cycle's current density
    (``current_densities[k]``, the last value repeating: 2, 20, then 40 µA/cm²).
    A short circuit stops the cycling; the post-mortem scans follow. Returns an
    ``OperandoResult`` with every run uid.

    ``resume``: the id of an interrupted experiment (read from ``catalog``, a
    Tiled client) or a :class:`~.resume.ResumePoint`: its completed steps are
    not taken again, its dangling runs get a stop document (``abort``), and the
    protocol goes on at the first step that did not complete, under the same
    experiment id; an interrupted plating passes the charge it had left
    (``docs/resume.md``).
    """
    with check.context("xct_operando"):
        cycles, densities = check_xct_operando(
            station,
            cycles=cycles,
            current_densities=current_densities,
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
        )
    scan_kw = dict(
        num_projections=num_projections,
        exposure=exposure,
        images_per_projection=images_per_projection,
        sample_every=sample_every,
    )
    from .resume import resolve

    point = resolve(resume, catalog, technique="xct")
    if point is not None:
        if experiment_id and experiment_id != point.experiment_id:
            raise check.PlanArgumentError(
                f"experiment_id {experiment_id!r} differs from the resumed {point.experiment_id!r}"
            )
        experiment_id = point.experiment_id
    experiment_id = experiment_id or f"xct-{uuid.uuid4().hex[:8]}"
    common = dict(experiment_id=experiment_id, cell=cell, md=md)
    result = OperandoResult(experiment_id=experiment_id)

    def step_md(step, cycle, **extra):
        """The user's md, plus what a resumed step was resumed from."""
        out = dict(md or {})
        cut = point.interrupted(step, cycle) if point is not None else []
        if cut:
            out["resumes"] = [r.uid for r in cut]
        out.update(extra)
        return out

    def protocol():
        for cycle in range(1, cycles + 1):
            j = densities[min(cycle - 1, len(densities) - 1)]
            done = point.completed("scan3d", cycle) if point is not None else None
            if done is not None:
                result.runs.append(("scan3d", cycle, done.uid))
            else:
                uid = yield from scan3d(
                    station,
                    ocv_duration=ocv_duration,
                    cycle=cycle,
                    **scan_kw,
                    **dict(common, md=step_md("scan3d", cycle)),
                )
                result.runs.append(("scan3d", cycle, uid))
            done = point.completed("plating", cycle) if point is not None else None
            if done is not None:
                result.runs.append(("plating", cycle, done.uid))
                result.cycles_done = cycle
                if done.reason.startswith("short circuit"):
                    result.failure = {
                        "cycle": cycle,
                        "time_s": None,
                        "reason": done.reason,
                        "run": done.uid,
                    }
                    break
                continue
            duration, extra = plating_duration, {}
            if point is not None and point.interrupted("plating", cycle):
                passed = yield from _charge_passed(station, point, cycle, catalog)
                duration = remaining_duration(plating_duration, current_for_density(j), passed)
                extra = {"charge_before_c": passed, "duration_planned_s": plating_duration}
                logger.info(
                    "resuming the plating of cycle %d: %.3g C passed, %.2f h left",
                    cycle,
                    passed,
                    duration / HOUR,
                )
            if duration > 1e-3 * plating_duration:
                plated = yield from plating(
                    station,
                    current_density=j,
                    duration=duration,
                    radiogram_every=radiogram_every,
                    sample_every=sample_every,
                    exposure=exposure,
                    images_per_radiogram=images_per_projection,
                    cycle=cycle,
                    **dict(common, md=step_md("plating", cycle, **extra)),
                )
                result.runs.append(("plating", cycle, plated.uid))
            else:
                plated = None
            result.cycles_done = cycle
            if plated is not None and plated.shorted:
                result.failure = {
                    "cycle": cycle,
                    "time_s": plated.short_time,
                    "reason": plated.reason,
                    "run": plated.uid,
                }
                break
        if do_postmortem:
            pm_kw = dict(scan_kw)
            if postmortem_projections is not None:
                pm_kw["num_projections"] = postmortem_projections
            done = {}
            if point is not None:
                for name in POSTMORTEM_SCANS:
                    run = point.completed("postmortem", None, postmortem_scan=name)
                    if run is not None:
                        done[name] = run.uid
            result.runs += [("postmortem", None, u) for u in done.values()]
            uids = yield from postmortem(
                station,
                failure=result.failure,
                cycle=None,
                done=tuple(done),
                **pm_kw,
                **common,
            )
            result.runs += [("postmortem", None, u) for u in uids]
        return result

    return protocol()
