"""Plans of the scanning operando SAXS/WAXS experiment (all-solid-state Li–S cell).

- ``align``: vertical and horizontal transmission scans locating the stack and
  its layers; returns the grid bounds.
- ``background``: SAXS and WAXS frames of the empty cell.
- ``raster``: a grid of points (``bluesky.plans.grid_scan``, optionally snaking),
  SAXS and WAXS at every point with the cell's time, voltage and capacity.
- ``saxs_waxs_operando``: align, background, rasters at open circuit, then
  rasters repeated while the potentiostat cycles the cell, the cell recorded
  between them (``cycling`` runs, ``cell`` stream).

Each run's start document carries ``experiment_id``, ``cell``, ``technique``
(``"saxs_waxs"``), ``step`` (``alignment``, ``background``, ``ocv``,
``operando``, ``cycling``) and ``cycle``.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, field

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.utils import Msg
from ophyd import Signal

from ..callbacks.core import stream_columns
from ..constants import HOUR
from ..devices.common import Technique
from ..devices.saxs import SaxsStation
from . import validation as check
from .alignment import GridBounds, cathode_layer, segment_profile, window_extent
from .stubs import (
    CELL_STREAM,
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

#: Exposure per point and detector, by beamline (paper: 7 s at Elettra, 80 s on the Xeuss).
EXPOSURE = {"synchrotron": 7.0, "lab": 80.0}
#: The paper's grid: 5 x 4 points, 1 mm (width, x) by 0.1 mm (height, y).
GRID_SHAPE = (4, 5)
GRID_STEP = (0.1, 1.0)


@dataclass(frozen=True)
class _Limits:
    """What the station's PVs allow (control limits), or the documented ranges when
    ``station`` is None (the command line, before any IOC runs)."""

    exposure: check.Bound = check.ACQUIRE_TIME
    current: check.Bound = check.PSTAT_CURRENT
    potential: check.Bound = check.PSTAT_POTENTIAL
    cycles: check.Bound = check.CYCLES.intersect(check.PSTAT_CYCLES)

    @classmethod
    def of(cls, station: SaxsStation | None) -> _Limits:
        if station is None:
            return cls()
        pstat = station.pstat
        return cls(
            exposure=check.signal_bound(
                station.saxs.cam.acquire_time, check.ACQUIRE_TIME
            ).intersect(check.signal_bound(station.waxs.cam.acquire_time, check.ACQUIRE_TIME)),
            current=check.signal_bound(pstat.current_sp, check.PSTAT_CURRENT),
            potential=check.signal_bound(pstat.e_max, check.PSTAT_POTENTIAL),
            cycles=check.CYCLES.intersect(check.signal_bound(pstat.cycles, check.PSTAT_CYCLES)),
        )


def _check_run_md(*, cycle=None, experiment_id, cell, md, step=None) -> None:
    check.optional("cycle", cycle, check.RUN_CYCLE)
    check.text("experiment_id", experiment_id)
    check.text("cell", cell)
    check.mapping("md", md)
    if step is not None:
        check.text("step", step, optional=False)


def _exposure(station: SaxsStation | None, lim: _Limits, exposure, beamline=None) -> float:
    """The exposure per point: given, or the beamline's (``beam.config``)."""
    if exposure is None:
        if beamline is None and station is not None:
            beamline = station.beam.config.get()
        exposure = EXPOSURE.get(beamline, 7.0)
    return check.number("exposure", exposure, lim.exposure)


def _md(plan_name, plan_args, station: SaxsStation, **kwargs) -> dict:
    return experiment_md(plan_name, plan_args, technique="saxs_waxs", **kwargs)


def _cell_readables(station: SaxsStation):
    return [station.clock, station.pstat]


def _closed(station: SaxsStation):
    yield from bps.mv(station.shutter, "close")


def _transmission_profile(station: SaxsStation, motor, positions, *, step, md) -> MsgGenerator:
    positions = [float(p) for p in positions]
    trans = []

    def body():
        yield from bps.mv(station.shutter, "open")
        for p in positions:
            yield from bps.checkpoint()
            yield from bps.mv(motor, p)
            reading = yield from checkpointed_read(
                [station.diode, motor, station.clock],
                restore=[(station.shutter, "open")],
            )
            trans.append(reading[station.diode.trans.name]["value"])

    @bpp.run_decorator(
        md=dict(
            md,
            motors=[motor.name],
            num_points=len(positions),
            shape=[len(positions)],
            extents=[[min(positions), max(positions)]],
            hints={"dimensions": [([motor.name], "primary")]},
        )
    )
    def run():
        yield from bpp.finalize_wrapper(body(), _closed(station))

    yield from record_pauses(run(), station.clock)
    return np.asarray(positions), np.asarray(trans)


def _check_align(station: SaxsStation | None, *, y_range, y_num, x_range, x_num, **run_md):
    """Every argument of ``align``; returns the y and x positions."""
    y_range = check.pair("y_range", y_range, "mm", increasing=True)
    x_range = check.pair("x_range", x_range, "mm", increasing=True)
    y_num = check.number("y_num", y_num, check.ALIGN_POINTS)
    x_num = check.number("x_num", x_num, check.ALIGN_POINTS)
    ys = np.linspace(*y_range, y_num)
    xs = np.linspace(*x_range, x_num)
    if station is not None:
        check.motor_positions(station.stage.y, ys, "alignment y")
        check.motor_positions(station.stage.x, xs, "alignment x")
    _check_run_md(**run_md)
    return ys, xs


@checked_plan
def align(
    station: SaxsStation,
    *,
    y_range=(-0.5, 1.5),
    y_num: int = 41,
    x_range=(-4.0, 4.0),
    x_num: int = 33,
    experiment_id: str | None = None,
    cell: str | None = None,
    md: dict | None = None,
) -> MsgGenerator:
    """Vertical then horizontal transmission scans; returns ``GridBounds``.

    The vertical scan (``stage.y``) finds the layers of the stack and picks the
    cathode (the most transmitting layer); the horizontal scan (``stage.x``, at
    the cathode's mid-height) finds the window of the cell body.
    """
    with check.context("align"):
        ys, xs = _check_align(
            station,
            y_range=y_range,
            y_num=y_num,
            x_range=x_range,
            x_num=x_num,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
        )
    args = dict(y_range=y_range, y_num=y_num, x_range=x_range, x_num=x_num)

    def plan():
        yield from bps.mv(station.sample, "cell", station.stage.x, float(np.mean(x_range)))
        base = _md(
            "align",
            args,
            station,
            step="alignment",
            cycle=None,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
        )
        pos, trans = yield from _transmission_profile(
            station, station.stage.y, ys, step="alignment", md=dict(base, direction="vertical")
        )
        layers = segment_profile(pos, trans)
        cathode = cathode_layer(layers)
        yield from bps.mv(station.stage.y, 0.5 * (cathode.lo + cathode.hi))
        pos, trans = yield from _transmission_profile(
            station, station.stage.x, xs, step="alignment", md=dict(base, direction="horizontal")
        )
        x_lo, x_hi = window_extent(pos, trans)
        return GridBounds(x=(x_lo, x_hi), y=(cathode.lo, cathode.hi), layers=layers)

    return plan()


def _configure(station: SaxsStation, exposure: float) -> MsgGenerator:
    yield from bps.mv(
        station.saxs.cam.acquire_time, exposure, station.waxs.cam.acquire_time, exposure
    )


def _check_background(
    station: SaxsStation | None, *, x, y, exposure, num_frames, beamline=None, **run_md
):
    """Every argument of ``background``; returns (exposure, frames)."""
    lim = _Limits.of(station)
    x = check.number("x", x, check.Bound(unit="mm"))
    y = check.number("y", y, check.Bound(unit="mm"))
    if station is not None:
        check.motor_positions(station.stage.x, (x,), "background x")
        check.motor_positions(station.stage.y, (y,), "background y")
    exposure = _exposure(station, lim, exposure, beamline)
    n = check.number("num_frames", num_frames, check.FRAMES)
    _check_run_md(**run_md)
    return exposure, n


@checked_plan
def background(
    station: SaxsStation,
    *,
    x: float = 0.0,
    y: float = 0.0,
    exposure: float | None = None,
    num_frames: int = 1,
    experiment_id: str | None = None,
    cell: str | None = None,
    md: dict | None = None,
) -> MsgGenerator:
    """SAXS and WAXS frames of the empty cell (slot ``empty_cell``) for background subtraction."""
    beamline = station.beam.config.get()
    with check.context("background"):
        exposure, n = _check_background(
            station,
            x=x,
            y=y,
            exposure=exposure,
            num_frames=num_frames,
            beamline=beamline,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
        )
    dets = [station.saxs, station.waxs, station.diode, *_cell_readables(station)]
    _m = _md(
        "background",
        dict(x=x, y=y, exposure=exposure, num_frames=n),
        station,
        step="background",
        cycle=None,
        experiment_id=experiment_id,
        cell=cell,
        md=md,
    )
    _m.update(detectors=[station.saxs.name, station.waxs.name], num_points=n, beamline=beamline)

    def body():
        yield from _configure(station, exposure)
        yield from bps.mv(station.sample, "empty_cell", station.stage.x, x, station.stage.y, y)
        yield from bps.mv(station.shutter, "open")
        restore = [(station.shutter, "open")]
        for _ in range(n):
            yield from checkpointed_read(dets, restore=restore)

    def cleanup():
        yield from _closed(station)
        yield from bps.mv(station.sample, "cell")

    @bpp.stage_decorator([station.saxs, station.waxs])
    @bpp.run_decorator(md=_m)
    def run():
        yield from bpp.finalize_wrapper(body(), cleanup())

    return record_pauses(run(), station.clock)


def _check_grid(station: SaxsStation | None, x_range, y_range, shape):
    """A (ny, nx) grid over x_range × y_range, inside the stages' soft limits."""
    ny, nx = check.grid_shape("shape", shape)
    x_range = check.pair("x_range", x_range, "mm")
    y_range = check.pair("y_range", y_range, "mm")
    for name, (lo, hi), n in (("x", x_range, nx), ("y", y_range, ny)):
        if n > 1 and lo == hi:
            raise check.PlanArgumentError(
                f"{name} range {lo}..{hi} gives a zero step for {n} points"
            )
    if station is not None:
        check.motor_positions(station.stage.x, x_range, "raster x")
        check.motor_positions(station.stage.y, y_range, "raster y")
    return ny, nx


def _check_raster(
    station: SaxsStation | None,
    lim: _Limits | None = None,
    *,
    x_range,
    y_range,
    shape,
    snake,
    exposure,
    beamline=None,
    **run_md,
):
    """Every argument of ``raster``; returns (exposure, ny, nx)."""
    lim = lim or _Limits.of(station)
    ny, nx = _check_grid(station, x_range, y_range, shape)
    check.flag("snake", snake)
    exposure = _exposure(station, lim, exposure, beamline)
    check.budget(
        "the raster",
        ny * nx * exposure,
        check.RASTER_DURATION,
        f"{ny} x {nx} points x {exposure:g} s",
    )
    _check_run_md(**run_md)
    return exposure, ny, nx


@checked_plan
def raster(
    station: SaxsStation,
    *,
    x_range,
    y_range,
    shape=GRID_SHAPE,
    snake: bool = True,
    exposure: float | None = None,
    step: str = "operando",
    cycle: int | None = None,
    experiment_id: str | None = None,
    cell: str | None = None,
    md: dict | None = None,
) -> MsgGenerator:
    """SAXS and WAXS at every point of a (ny, nx) grid over x_range × y_range.

    The slow axis is ``stage.y`` (across the stack), the fast one ``stage.x``;
    with ``snake`` the fast axis reverses on alternate rows. Every point also
    records the diode, the cell time, Ewe, current and capacity. The shutter is
    open only during the raster. Validated against the stages' limits first.
    """
    beamline = station.beam.config.get()
    with check.context("raster"):
        exposure, ny, nx = _check_raster(
            station,
            x_range=x_range,
            y_range=y_range,
            shape=shape,
            snake=snake,
            exposure=exposure,
            beamline=beamline,
            step=step,
            cycle=cycle,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
        )
    dets = [station.saxs, station.waxs, station.diode, *_cell_readables(station)]
    _m = _md(
        "raster",
        dict(x_range=x_range, y_range=y_range, shape=shape, snake=snake, exposure=exposure),
        station,
        step=step,
        cycle=cycle,
        experiment_id=experiment_id,
        cell=cell,
        md=md,
    )
    _m["beamline"] = beamline

    def per_step(detectors, step, pos_cache):
        # bluesky's one_nd_step, and after a pause the shutter open again (the
        # RunEngine closed it) before the point is taken again.
        yield from bps.checkpoint()
        yield from bps.move_per_step(step, pos_cache)
        yield from checkpointed_read([*detectors, *step], restore=[(station.shutter, "open")])

    def body():
        yield from _configure(station, exposure)
        yield from bps.mv(station.sample, "cell")
        yield from bps.mv(station.shutter, "open")
        return (
            yield from bp.grid_scan(
                dets,
                station.stage.y,
                *y_range,
                ny,
                station.stage.x,
                *x_range,
                nx,
                snake_axes=snake,
                per_step=per_step,
                md=_m,
            )
        )

    return record_pauses(bpp.finalize_wrapper(body(), _closed(station)), station.clock)


#: Ewe change (V) between two samples of the cycling record (besides ``sample_every``).
CELL_SAMPLE_DE = 0.02
#: the cycling record samples ever closer to a turning potential until this near (V)
LIMIT_APPROACH = 0.005
#: the shortest interval between two samples of the cycling record (cell s)
MIN_SAMPLE_STEP = 0.1
#: the second sample of a record comes this soon (cell s): a slope to go on with
PROBE_STEP = 10.0
#: the stream of an operando raster's share of its half cycle (one event)
SHARE_STREAM = "half_cycle_share"


class _CycleRecorder(CellRecorder):
    """The cell while it cycles: a sample every ``every`` cell seconds, every
    :data:`CELL_SAMPLE_DE` of Ewe, and ever closer as Ewe nears the turning
    potential (``e_min`` on discharge, ``e_max`` on charge), so the recorded
    curve reaches both limits (a turn comes within seconds of a steep wall)."""

    def __init__(self, station: SaxsStation, *, every: float, e_min: float, e_max: float):
        super().__init__(station.clock, [station.pstat], every=every)
        self.pstat = station.pstat
        self.e_min, self.e_max = e_min, e_max
        self.reading: dict = {}
        self.prev: tuple | None = None  # (t, ewe, half cycle) of the sample before
        #: the largest capacity (mAh) seen in each half cycle
        self.seen: dict[int, float] = {}

    def value(self, signal):
        return self.reading.get(signal.name, {}).get("value")

    def sample(self) -> MsgGenerator:
        last = None
        if self.reading:
            last = (self.last, self.value(self.pstat.ewe), self.value(self.pstat.half_cycle))
        self.reading = yield from checkpointed_read(self.readables, name=self.stream)
        self.last = float(self.value(self.clock.time))
        self.prev = last
        _note(self.seen, self.value(self.pstat.capacity), self.value(self.pstat.half_cycle))

    def running(self) -> bool:
        return self.value(self.pstat.state) == "running"

    def next_time(self) -> float:
        step = self.every
        ewe, half = self.value(self.pstat.ewe), self.value(self.pstat.half_cycle)
        if self.prev is None or self.prev[2] != half:
            # A new record or a new half cycle: no slope yet (a turn may be near).
            step = min(step, PROBE_STEP)
        direction = self.value(self.pstat.direction)
        if self.prev is not None and self.prev[2] == half and self.last > self.prev[0]:
            slope = abs(float(ewe) - float(self.prev[1])) / (self.last - self.prev[0])
            if slope > 0:
                step = min(step, CELL_SAMPLE_DE / slope)
                limit = {"discharge": self.e_min, "charge": self.e_max}.get(direction)
                if limit is not None:
                    gap = abs(float(ewe) - limit)
                    if gap > LIMIT_APPROACH:
                        step = min(step, 0.5 * gap / slope)
        return self.last + max(step, MIN_SAMPLE_STEP)


def _note(seen: dict, capacity, half) -> None:
    if capacity is not None and half is not None:
        seen[int(half)] = max(seen.get(int(half), 0.0), float(capacity))


def _record_cycling(station: SaxsStation, recorder: _CycleRecorder, t_end: float, md: dict):
    """A ``cycling`` run: the cell (``cell`` stream) until cell time ``t_end`` or the
    technique's end; returns its uid."""

    def run():
        uid = yield from bps.open_run(md=md)
        yield from bps.checkpoint()
        recorder.reading, recorder.prev = {}, None
        yield from recorder.sample()
        while recorder.last < t_end - 1e-6 and recorder.running():
            yield from bps.checkpoint()
            yield from wait_until(station.clock, min(recorder.next_time(), t_end))
            yield from recorder.sample()
        yield from bps.close_run()
        yield from bps.checkpoint()
        return uid

    return (yield from record_pauses(run(), station.clock))


def half_cycle_passed(c0: float, h0: int, c1: float, h1: int, expected: float) -> float:
    """Capacity (mAh) passed between (capacity ``c0``, half cycle ``h0``) and
    (``c1``, ``h1``): across a turn, what the half cycle of ``h0`` had left of
    ``expected`` plus ``c1`` (and ``expected`` per whole half cycle between)."""
    if h1 == h0:
        return max(c1 - c0, 0.0)
    return max(expected - c0, 0.0) + max(h1 - h0 - 1, 0) * expected + c1


def _share_signals():
    keys = ("share", "capacity_start", "capacity_end", "half_cycle_start", "half_cycle_end")
    return {k: Signal(name=f"raster_{k}", value=math.nan) for k in (*keys, "expected_mah")}


def _flag_share(plan, station: SaxsStation, expected_of, max_share: float, out: dict, seen: dict):
    """``plan`` (one raster run) with its share of the half cycle: the
    potentiostat's capacity read at its ``open_run`` and at its ``close_run``,
    over ``expected_of(half cycle)`` (mAh); one event in the ``half_cycle_share``
    stream, and above ``max_share`` a warning and the stop document's
    ``reason`` says so. ``out`` gets ``share`` and ``flagged``."""
    pstat = station.pstat
    at_start: dict = {}
    made: list = []

    def read_state():
        c = yield from bps.rd(pstat.capacity)
        h = yield from bps.rd(pstat.half_cycle)
        _note(seen, c, h)
        return float(c), int(h)

    def after_open():
        at_start["c"], at_start["h"] = yield from read_state()

    def before_close(msg):
        c1, h1 = yield from read_state()
        c0, h0 = at_start.get("c", c1), at_start.get("h", h1)
        expected = float(expected_of(h0))
        passed = half_cycle_passed(c0, h0, c1, h1, expected)
        share = passed / expected if expected > 0 else math.nan
        flagged = bool(math.isfinite(share) and share > max_share)
        out.update(share=share, flagged=flagged, passed_mah=passed, expected_mah=expected)
        signals = _share_signals()
        values = dict(
            share=share,
            capacity_start=c0,
            capacity_end=c1,
            half_cycle_start=h0,
            half_cycle_end=h1,
            expected_mah=expected,
        )
        for key, sig in signals.items():
            sig.put(float(values[key]))
        yield from bps.trigger_and_read(list(signals.values()), name=SHARE_STREAM)
        kwargs = dict(msg.kwargs)
        if flagged:
            note = (
                f"raster spans {share:.1%} of half cycle {h0} ({passed:.4g} of "
                f"{expected:.4g} mAh), more than max_half_cycle_share = {max_share:g}"
            )
            logger.warning("%s: %s", at_start.get("uid", "raster"), note)
            reason = kwargs.get("reason") or ""
            kwargs["reason"] = f"{note}; {reason}" if reason else note
        closing = Msg("close_run", msg.obj, *msg.args, run=msg.run, **kwargs)
        made.append(closing)
        return (yield closing)

    def proc(msg):
        if msg.command == "open_run":
            return None, after_open()
        if msg.command == "close_run" and not any(msg is m for m in made):
            return before_close(msg), None
        return None, None

    return (yield from bpp.plan_mutator(plan, proc))


@dataclass
class SaxsResult:
    experiment_id: str
    bounds: GridBounds | None = None
    runs: list = field(default_factory=list)
    end_state: str = ""
    #: (uid, share of its half cycle) of every operando raster (``share``, ``flagged``)
    shares: list = field(default_factory=list)


def check_saxs_operando(
    station: SaxsStation | None,
    *,
    cycles,
    c_rate,
    e_min,
    e_max,
    shape,
    bounds,
    raster_every,
    ocv_rasters,
    exposure,
    snake,
    experiment_id,
    cell,
    md,
    one_c: float | None = None,
    beamline: str | None = None,
    sample_every=60.0,
    max_half_cycle_share=0.1,
) -> float | None:
    """The whole experiment's arguments (alignment, background and every raster
    included); returns the cycling current (A), None when ``station`` is None and
    ``one_c`` (the current of 1C) is not given."""
    lim = _Limits.of(station)
    cycles = check.number("cycles", cycles, lim.cycles)
    c_rate = check.number("c_rate", c_rate, check.C_RATE)
    window = check.LIS_WINDOW.intersect(lim.potential)
    e_min = check.number("e_min", e_min, window)
    e_max = check.number(
        "e_max",
        e_max,
        window.intersect(check.Bound(e_min, None, "V", low_open=True)),
        note=f" (must be above e_min = {e_min:g} V)",
    )
    cycling_s = 2 * cycles / c_rate * HOUR  # at most: a full discharge and charge per cycle
    check.budget(
        "the cycling",
        cycling_s,
        check.EXPERIMENT_DURATION,
        f"{cycles} cycles at C/{1 / c_rate:g}",
    )
    if station is not None:
        one_c = float(station.pstat.c_rate_current.get())
    current = None
    if one_c is not None:
        if not (math.isfinite(one_c) and one_c > 0):
            raise check.PlanArgumentError(
                f"the potentiostat gives {one_c!r} A for 1C (pstat:c_rate_current): "
                f"no cycling current for c_rate = {c_rate:g}"
            )
        current = c_rate * one_c
        check.number("cycling current", current, lim.current, note=f" (c_rate = {c_rate:g})")
    check.optional(
        "raster_every",
        raster_every,
        check.Bound(0.0, check.EXPERIMENT_DURATION.high, "s", low_open=True),
    )
    check.number("ocv_rasters", ocv_rasters, check.OCV_RASTERS)
    every = check.number("sample_every", sample_every, check.SAMPLE_EVERY)
    if cycling_s / every > check.MAX_CELL_SAMPLES:
        raise check.PlanArgumentError(
            f"sample_every = {every:g} s records the cell {cycling_s / every:.0f} times in "
            f"{check.duration_text(cycling_s)}, more than the allowed {check.MAX_CELL_SAMPLES}"
        )
    check.number("max_half_cycle_share", max_half_cycle_share, check.Bound(0.0, 1.0, low_open=True))
    ny, nx = check.grid_shape("shape", shape)
    if station is not None:
        beamline = station.beam.config.get()
    common = dict(experiment_id=experiment_id, cell=cell, md=md)
    if bounds is None:
        with check.context("alignment"):
            _check_align(station, **{**check.keyword_defaults(align), **common})
    else:
        if not isinstance(bounds, GridBounds):
            raise check.PlanArgumentError(f"bounds must be a GridBounds or None, not {bounds!r}")
        check.pair("bounds.x", bounds.x, "mm", increasing=True)
        check.pair("bounds.y", bounds.y, "mm", increasing=True)
        grid = bounds.grid((ny, nx))
        with check.context("raster"):
            _check_grid(station, grid["x_range"], grid["y_range"], (ny, nx))
    check.flag("snake", snake)
    exposure = _exposure(station, lim, exposure, beamline)
    check.budget(
        "each raster",
        ny * nx * exposure,
        check.RASTER_DURATION,
        f"{ny} x {nx} points x {exposure:g} s",
    )
    _check_run_md(**common)
    return current


@checked_plan
def saxs_waxs_operando(
    station: SaxsStation,
    *,
    cycles: int = 1,
    c_rate: float = 1 / 20,
    e_min: float = 0.6,
    e_max: float = 2.4,
    shape=GRID_SHAPE,
    bounds: GridBounds | None = None,
    raster_every: float | None = None,
    ocv_rasters: int = 1,
    exposure: float | None = None,
    snake: bool = True,
    sample_every: float = 60.0,
    max_half_cycle_share: float = 0.1,
    experiment_id: str | None = None,
    cell: str = "Li-In|Li6PS5Cl|S-C (50:30:20)",
    md: dict | None = None,
    resume=None,
    catalog=None,
) -> MsgGenerator:
    """The operando experiment: align, background, OCV rasters, then rasters while cycling.

    The potentiostat cycles the cell galvanostatically at ``c_rate`` (C from the
    cell's sulfur loading, as the potentiostat publishes it) between ``e_min``
    and ``e_max`` for ``cycles`` full cycles; a raster starts every
    ``raster_every`` cell seconds (back to back when None) until the cycling
    ends, and once more after. Between two rasters a ``cycling`` run records
    the cell (``cell`` stream: clock and potentiostat) every ``sample_every``
    cell seconds, more often where Ewe changes fast and up to the turning
    potentials. An operando raster that passes more than
    ``max_half_cycle_share`` of its half cycle's expected capacity (the last
    completed half cycle of the same kind, else the cell's nominal 1C x 1 h)
    says so in its stop document's ``reason`` and the log; every operando
    raster has its share in its ``half_cycle_share`` stream. Returns a
    ``SaxsResult``.

    ``resume``: the id of an interrupted experiment (read from ``catalog``, a
    Tiled client) or a :class:`~.resume.ResumePoint`: the alignment is rebuilt
    from its stored profiles, completed steps are not taken again, dangling
    runs get a stop document (``abort``), and the rasters go on where they
    stopped, on the cycling that ran on in the meantime (``docs/resume.md``).
    """
    with check.context("saxs_waxs_operando"):
        current = check_saxs_operando(
            station,
            cycles=cycles,
            c_rate=c_rate,
            e_min=e_min,
            e_max=e_max,
            shape=shape,
            bounds=bounds,
            raster_every=raster_every,
            ocv_rasters=ocv_rasters,
            exposure=exposure,
            snake=snake,
            experiment_id=experiment_id,
            cell=cell,
            md=md,
            sample_every=sample_every,
            max_half_cycle_share=max_half_cycle_share,
        )
    from .resume import resolve

    point = resolve(resume, catalog, technique="saxs_waxs")
    if point is not None:
        if experiment_id and experiment_id != point.experiment_id:
            raise check.PlanArgumentError(
                f"experiment_id {experiment_id!r} differs from the resumed {point.experiment_id!r}"
            )
        experiment_id = point.experiment_id
        if bounds is None:
            bounds = _stored_bounds(station, point, catalog)
    experiment_id = experiment_id or f"saxs-{uuid.uuid4().hex[:8]}"
    common = dict(experiment_id=experiment_id, cell=cell)
    result = SaxsResult(experiment_id=experiment_id, bounds=bounds)
    if point is not None:
        result.runs += [
            (r.step if r.step != "alignment" else "alignment", r.cycle, r.uid)
            for r in point.runs
            if r.completed and r.step in ("alignment", "background")
        ]

    if point is not None:
        result.runs += [
            ("cycling", r.cycle, r.uid) for r in point.runs if r.completed and r.step == "cycling"
        ]
    recorder = _CycleRecorder(station, every=sample_every, e_min=e_min, e_max=e_max)
    seen = recorder.seen  # the largest capacity of each half cycle, rasters and record

    def record(kind, cycle, uid):
        result.runs.append((kind, cycle, uid))

    def expected_capacity(half: int) -> float:
        """The capacity (mAh) half cycle ``half`` should pass: the last completed
        one of its kind, else the cell's nominal (1C for 1 h)."""
        done_halves = [h for h in seen if h < max(seen) and h % 2 == half % 2 and h < half]
        if done_halves and seen[max(done_halves)] > 0:
            return seen[max(done_halves)]
        return float(station.pstat.c_rate_current.get()) * 1000.0

    def one_raster(step, cycle, index, **extra):
        grid = result.bounds.grid(shape)
        extra_md = dict(md or {}, raster_index=index, **extra)
        if step == "operando":
            extra_md["max_half_cycle_share"] = max_half_cycle_share
        plan = raster(
            station,
            shape=shape,
            snake=snake,
            exposure=exposure,
            step=step,
            cycle=cycle,
            md=extra_md,
            **grid,
            **common,
        )
        share: dict = {}
        if step == "operando":
            plan = _flag_share(plan, station, expected_capacity, max_half_cycle_share, share, seen)
        uid = yield from plan
        record(step, cycle, uid)
        if share:
            result.shares.append((uid, share))

    def cycling_record(cycle, index, t0, t_end):
        base = _md(
            "saxs_waxs_operando",
            dict(sample_every=sample_every, e_min=e_min, e_max=e_max),
            station,
            step="cycling",
            cycle=cycle,
            md=dict(md or {}, raster_index=index, cycling_t0=t0),
            **common,
        )
        base.update(
            sample_every=sample_every,
            hints={"dimensions": [([station.clock.time.name], CELL_STREAM)]},
        )
        uid = yield from _record_cycling(station, recorder, t_end, base)
        record("cycling", cycle, uid)

    def done(step, **match):
        return point.completed(step, None, **match) if point is not None else None

    def plan():
        if result.bounds is None:
            result.bounds = yield from align(station, **common, md=md)
            grid = result.bounds.grid(shape)
            _check_grid(station, grid["x_range"], grid["y_range"], shape)
        centre = result.bounds.grid(shape)
        if done("background") is None:
            uid = yield from background(
                station,
                x=float(np.mean(centre["x_range"])),
                y=float(np.mean(centre["y_range"])),
                exposure=exposure,
                md=md,
                **common,
            )
            record("background", None, uid)
        operando_runs = [r for r in (point.runs if point else []) if r.step == "operando"]
        cycling = operando_runs or (
            point is not None and (yield from bps.rd(station.pstat.state)) == "running"
        )
        if not cycling:
            for k in range(ocv_rasters):
                if done("ocv", raster_index=k) is None:
                    yield from one_raster("ocv", 0, k)
        elif point is not None:
            result.runs += [
                ("ocv", 0, r.uid) for r in point.runs if r.completed and r.step == "ocv"
            ]
        kept = [r for r in operando_runs if r.completed]
        result.runs += [("operando", r.cycle, r.uid) for r in kept]
        if any(r.start.get("final_raster") for r in kept):
            result.end_state = "done"
            return result
        state = yield from bps.rd(station.pstat.state)
        if kept and "cycling_t0" in kept[0].start and state in ("running", "done", "limit"):
            # The cycling went on without the plan: the rasters go on with it.
            t0 = float(kept[0].start["cycling_t0"])
            index = max(int(r.start.get("raster_index", 0)) for r in kept) + 1
        else:
            if point is not None and operando_runs:
                logger.warning(
                    "the potentiostat no longer runs the cycling of %s (state %s): started again",
                    experiment_id,
                    state,
                )
            technique = Technique.cycling(current, e_min=e_min, e_max=e_max, cycles=cycles)
            yield from start_technique(station.pstat, technique)
            t0 = yield from now(station.clock)
            index = 0
        while (yield from technique_running(station.pstat)):
            half = yield from bps.rd(station.pstat.half_cycle)
            yield from one_raster("operando", int(half) // 2 + 1, index, cycling_t0=t0)
            index += 1
            if raster_every is not None and (yield from technique_running(station.pstat)):
                t_due = t0 + index * raster_every
                if (yield from now(station.clock)) < t_due:
                    half = yield from bps.rd(station.pstat.half_cycle)
                    yield from cycling_record(int(half) // 2 + 1, index, t0, t_due)
                yield from wait_until(station.clock, t_due)
        yield from wait_technique(station.pstat)
        result.end_state = str((yield from bps.rd(station.pstat.state)))
        yield from one_raster("operando", cycles, index, cycling_t0=t0, final_raster=True)
        return result

    return bpp.finalize_wrapper(plan(), _stop_cycling(station))


def _stored_bounds(station: SaxsStation, point, catalog) -> GridBounds | None:
    """The grid of a resumed experiment, from its stored alignment profiles
    (None when they are not both there: the alignment is taken again)."""
    from .resume import _runs

    profiles = {}
    runs = _runs(catalog)
    for r in point.runs:
        if r.step == "alignment" and r.completed:
            motor = r.start.get("motors", [""])[0]
            cols = stream_columns(runs[r.uid]["primary"])
            if motor in cols and station.diode.trans.name in cols:
                profiles[r.start.get("direction")] = (
                    np.asarray(cols[motor], float),
                    np.asarray(cols[station.diode.trans.name], float),
                )
    if not {"vertical", "horizontal"} <= set(profiles):
        return None
    layers = segment_profile(*profiles["vertical"])
    cathode = cathode_layer(layers)
    x_lo, x_hi = window_extent(*profiles["horizontal"])
    return GridBounds(x=(x_lo, x_hi), y=(cathode.lo, cathode.hi), layers=layers)


def _stop_cycling(station: SaxsStation):
    yield from _closed(station)
    yield from bps.stop(station.pstat)
