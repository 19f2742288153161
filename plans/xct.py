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


def electrode_area_cm2(diameter_mm: float = ELECTRODE_DIAMETER_MM) -> float:
    return math.pi * (diameter_mm / 20.0) ** 2


def current_for_density(j_uA_cm2: float, diameter_mm: float = ELECTRODE_DIAMETER_MM) -> float:
    """Cell current (A) for a current density (µA/cm²) over the electrode."""
    return j_uA_cm2 * 1e-6 * electrode_area_cm2(diameter_mm)


def _base_md(plan_name: str, plan_args: dict, station: XCTStation, **kwargs) -> dict:
    return experiment_md(
        plan_name, plan_args, technique="xct", detectors=[station.ct_det.name], **kwargs
    )


def _check_scan_args(
    station: XCTStation,
    *,
    num_projections,
    exposure,
    images_per_projection,
    num_darks,
    num_flats,
    start,
    stop,
    kv,
    flat_offset,
):
    n = check.positive_int("num_projections", num_projections, minimum=2)
    exposure = check.positive("exposure", exposure)
    check.within("exposure", exposure, 1e-3, 3600.0, "s")
    k = check.positive_int("images_per_projection", images_per_projection)
    check.within("images_per_projection", k, 1, 100)
    check.positive_int("num_darks", num_darks, minimum=0)
    check.positive_int("num_flats", num_flats, minimum=0)
    if not (math.isfinite(start) and math.isfinite(stop)) or stop <= start:
        raise check.PlanArgumentError(f"angular range must have stop > start, not {start}..{stop}")
    check.motor_positions(station.stage.th, (start, stop), "rotation angle")
    check.within("kv", kv, 1.0, 70.0, "kV")
    x0 = station.stage.x.position
    check.motor_positions(station.stage.x, (x0 + flat_offset,), "flat-field position")
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

    Arguments are checked before anything moves.
    """
    n, exposure, k = _check_scan_args(
        station,
        num_projections=num_projections,
        exposure=exposure,
        images_per_projection=images_per_projection,
        num_darks=num_darks,
        num_flats=num_flats,
        start=start,
        stop=stop,
        kv=kv,
        flat_offset=flat_offset,
    )
    if ocv_duration is not None:
        check.positive("ocv_duration", ocv_duration)
    check.positive("sample_every", sample_every)
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

    return (yield from record_pauses(run(), station.clock))


def radiogram(station: XCTStation, *, stream: str = "primary", extra=()) -> MsgGenerator:
    """Source on (waits for it to be ready), one frame, source off.

    The detector must be staged; the frame and the cell time go to ``stream``.
    After a pause the source is switched on again before the frame is taken.
    """
    yield from bps.mv(station.source, "on")
    yield from checkpointed_read(
        [station.ct_det, station.clock, station.force, station.pstat, *extra],
        name=stream,
        restore=[(station.source, "on")],
    )
    yield from bps.mv(station.source, "off")


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
    j = check.positive("current_density", current_density)
    duration = check.positive("duration", duration)
    radiogram_every = check.positive("radiogram_every", radiogram_every)
    check.positive("sample_every", sample_every)
    exposure = check.positive("exposure", exposure)
    check.within("exposure", exposure, 1e-3, 3600.0, "s")
    k = check.positive_int("images_per_radiogram", images_per_radiogram)
    check.within("kv", kv, 1.0, 70.0, "kV")
    check.positive("electrode_diameter_mm", electrode_diameter_mm)
    current = current_for_density(j, electrode_diameter_mm)
    check.signal_range(station.pstat.current_sp, current, "plating current", "A")
    x0 = station.stage.x.position
    check.motor_positions(station.stage.x, (x0 + flat_offset,), "flat-field position")

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

    return (yield from record_pauses(run(), station.clock))


def postmortem(
    station: XCTStation,
    *,
    scans=POSTMORTEM_SCANS,
    failure: dict | None = None,
    done=(),
    **scan_kwargs,
) -> MsgGenerator:
    """The post-mortem scans (overview with the wide field of view, then high
    resolution); the scans named in ``done`` (completed before a resume) are not
    taken again."""
    uids = []
    user_md = scan_kwargs.pop("md", None) or {}
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
        station, scan_kwargs.get("exposure", 1.5), scan_kwargs.get("images_per_projection", 3), "4X"
    )
    return uids


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
    cycles = check.positive_int("cycles", cycles)
    densities = [check.positive("current density", j) for j in current_densities]
    if not densities:
        raise check.PlanArgumentError("current_densities must name at least one value")
    check.positive("ocv_duration", ocv_duration)
    check.positive("plating_duration", plating_duration)
    for j in densities:
        check.signal_range(
            station.pstat.current_sp, current_for_density(j), f"current for {j} µA/cm²", "A"
        )
    scan_kw = dict(
        num_projections=num_projections,
        exposure=exposure,
        images_per_projection=images_per_projection,
        sample_every=sample_every,
    )
    # Check the scan arguments now, before the first cycle moves anything.
    _check_scan_args(
        station,
        num_projections=num_projections,
        exposure=exposure,
        images_per_projection=images_per_projection,
        num_darks=10,
        num_flats=10,
        start=0.0,
        stop=360.0,
        kv=70.0,
        flat_offset=FLAT_OFFSET_MM,
    )
    scan_time = num_projections * images_per_projection * exposure
    if scan_time > ocv_duration:
        raise check.PlanArgumentError(
            f"the 3D scan ({scan_time / HOUR:.2f} h) does not fit in the OCV step "
            f"({ocv_duration / HOUR:.2f} h): fewer projections, shorter exposure or a longer OCV"
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

    return (yield from protocol())
