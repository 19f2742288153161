"""Simulated scanning operando SAXS/WAXS station: a caproto IOC over the cell physics.

The PV contract is ``docs/saxs-pvs.md``; this module serves exactly those PVs
(and a few extra, listed in :class:`SaxsStation`). The physics lives in
``operando.iocs.physics`` (``saxs_cell``: the all-solid-state Li–S cell and its
cross-section; ``scattering_frames``: the two beamlines, their pyFAI geometries
and frame rendering); this is a thin shell that advances the cell on the
simulated clock, turns puts into technique/stage/shutter/sample changes, and
renders SAXS and WAXS frames into HDF5 files. The building blocks (clock,
motor records, potentiostat, detector + HDF5 plugin, station start-up) are
shared with the XCT station (``potentiostat.py``, ``detector.py``, ``station.py``,
``clock.py``, ``motor.py``, ``pvs.py``).

Run it::

    python -m operando.iocs.saxs --prefix SAXS: --time-scale 200 --data-dir ./data/saxs-frames
    python -m operando.iocs.saxs --prefix SAXS: --beamline lab
    python -m operando.iocs.saxs --prefix SAXS: --list-pvs

Coordinates
-----------
``stage:x`` and ``stage:y`` are the cell coordinates of ``saxs_cell`` at the beam
(minus ``--mount-offset``, default 0 0): x across the 5 mm window, 0 at the stack
centre (stack |x| <= 2.5 mm, PEEK body to |x| <= 10 mm); y vertical, 0 at the
bottom current collector / cathode interface (cathode 0-0.35, separator
0.35-0.85, anode 0.85-1.15 mm, steel collectors below and above). Soft limits
x -5..5 mm (stack plus 2.5 mm of body either side, wider than the 1 mm
synchrotron / 1.5 mm lab beam), y -2..3 mm (both collectors, for alignment
scans).

Ground truth for tests never goes through PVs: with ``--truth-file PATH`` the
IOC appends one JSON object per line: ``ioc_start``, ``technique_start``,
``half_cycle`` (a GCPL turn), ``technique_end`` (each with the cell's
``truth()``), ``shutter``, ``sample``, ``file_open``, ``file_close`` and one
``frame`` per detector frame (cell time, stage and cell x/y, slot, shutter,
detector, file/index, the beam footprint's composition, Li2S size, state of
discharge, capacities).
"""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from . import potentiostat
from .clock import ClockGroup
from .detector import DetectorCam, FrameDetector
from .motor import SimMotor
from .physics import scattering_frames as sf
from .physics.saxs_cell import SaxsCell, SaxsCellParams
from .pvs import ClippedDouble, ClippedInteger, char_pv, keyed_normal
from .station import Station, serve, station_arg_parser, station_kwargs

__all__ = ["SaxsStation", "main"]

MODES = ("OCV", "CC", "GCPL")
DIRECTIONS = ("rest", "discharge", "charge")
SLOTS = ("cell", "empty_cell")
BEAMLINES = tuple(sf.BEAMLINES)


def _direction(current_a: float) -> str:
    return "rest" if current_a == 0 else ("discharge" if current_a > 0 else "charge")


class CyclingPotentiostat(potentiostat.Potentiostat):
    """BioLogic-like potentiostat with OCV, CC and GCPL (galvanostatic cycling).

    PVs
    ---
    As the XCT potentiostat (mode, current_sp, duration, e_min, e_max, start,
    stop, state, ewe, i, charge, elapsed), plus
    cycles (GCPL full cycles, 1..100), c_rate (RO, |current_sp| in C),
    c_rate_current (RO, A of 1C from the sulfur loading), capacity (RO, mAh
    passed in the present half cycle), half_cycle (RO: 0 first discharge, 1 first
    charge, ... of the present technique), direction (RO: rest/discharge/charge).

    Current is positive on discharge. GCPL discharges at |current_sp| until
    Ewe reaches e_min, then charges at -|current_sp| until e_max, and so on for
    ``cycles`` full cycles (state ``done``), or until ``duration``. The turning
    points are the cell's exact times to the limits
    (:meth:`SaxsCell.time_to_limit`), not the loop tick. CC stops (``limit``)
    exactly at e_min on discharge / e_max on charge.
    """

    mode = pvproperty(
        value="OCV",
        enum_strings=MODES,
        dtype=ChannelType.ENUM,
        doc="Technique to run: OCV, CC or GCPL",
    )
    cycles = pvproperty(
        value=1,
        dtype=ClippedInteger,
        lower_ctrl_limit=1,
        upper_ctrl_limit=100,
        doc="GCPL full cycles (1..100)",
    )
    c_rate = pvproperty(
        value=0.0,
        read_only=True,
        precision=5,
        doc="C-rate of |current_sp| for this cell (0.05 at C/20)",
    )
    c_rate_current = pvproperty(
        value=0.0,
        read_only=True,
        units="A",
        precision=9,
        doc="Current of 1C for this cell (A, from its sulfur loading)",
    )
    capacity = pvproperty(
        value=0.0,
        read_only=True,
        units="mAh",
        precision=6,
        doc="Capacity passed in the present half cycle (mAh, >= 0)",
    )
    half_cycle = pvproperty(
        value=0,
        read_only=True,
        doc="Half cycle of the technique: 0 first discharge, 1 first charge",
    )
    direction = pvproperty(
        value="rest",
        enum_strings=DIRECTIONS,
        dtype=ChannelType.ENUM,
        read_only=True,
        doc="Present direction: rest/discharge/charge",
    )

    # -- cell model ----------------------------------------------------------------
    def limit_time(self, current_a: float, e_min: float, e_max: float) -> float:
        limit = e_min if current_a > 0 else e_max
        return float(self.cell.time_to_limit(current_a, limit))

    @c_rate_current.startup
    async def c_rate_current(self, instance, async_lib):
        await instance.write(float(self.cell.c_rate_current(1.0)))
        await self.setpoint_changed(float(self.current_sp.value))

    async def setpoint_changed(self, current_a: float) -> None:
        one_c = float(self.cell.c_rate_current(1.0))
        await self.c_rate.write(abs(current_a) / one_c if one_c > 0 else 0.0)

    # -- techniques ----------------------------------------------------------------
    def technique_current(self, mode: str) -> float:
        if mode == "GCPL":
            return abs(float(self.current_sp.value))  # discharge first
        return super().technique_current(mode)

    def begin_technique(self, now: float) -> dict:
        tech = super().begin_technique(now)
        tech["half"] = 0
        if tech["mode"] == "GCPL":
            tech["cycles"] = int(self.cycles.value)
        return tech

    def _segment_capacity(self, t: float) -> float:
        tech = self.technique
        return abs(tech["current"]) * max(t - tech["seg_t0"], 0.0) / 3.6  # A s -> mAh

    async def publish_technique(self, t: float) -> None:
        await super().publish_technique(t)
        tech = self.technique
        await self.capacity.write(self._segment_capacity(t))
        await self.half_cycle.write(int(tech["half"]))
        await self.direction.write(_direction(tech["current"]))

    async def technique_ended(self, tech: dict, reason: str, t_end: float) -> None:
        await self.direction.write("rest")

    async def handle_event(self, kind: str, t: float) -> None:
        if kind == "limit" and self.technique["mode"] == "GCPL":
            await self._turn(t)
        else:
            await super().handle_event(kind, t)

    async def _turn(self, t: float) -> None:
        """A GCPL half cycle reached its limit at ``t`` (the cell is there)."""
        tech = self.technique
        capacity = self._segment_capacity(t)
        ewe = self.cell_voltage(tech["current"])
        record = {
            "event": "half_cycle",
            "t": t,
            "ended": int(tech["half"]),
            "ended_direction": _direction(tech["current"]),
            "capacity_mah": capacity,
            "ewe_v": ewe,
            "current_a": tech["current"],
        }
        if tech["half"] + 1 >= 2 * tech["cycles"]:
            self.station.truth.write(dict(record, half=None, truth=self.cell.truth()))
            await self._finish("done", t)
            return
        tech["q0"] = self.technique_charge(t)
        tech["half"] += 1
        tech["current"] = -tech["current"]
        tech["seg_t0"] = t
        self.applied_current = tech["current"]
        tech["t_limit"] = self._limit_at(tech, t)
        self.station.truth.write(
            dict(
                record,
                half=tech["half"],
                direction=_direction(tech["current"]),
                truth=self.cell.truth(),
            )
        )
        await self.publish_technique(t)


class ScanStage(PVGroup):
    """Sample stage: motor records x (mm, -5..5, 2 mm/s) and y (mm, -2..3, 1 mm/s).

    x is horizontal across the cell's 5 mm window, y vertical across the stack
    (cell coordinates at the beam, see the module doc). Moves run in cell time.
    """

    x = SubGroup(
        SimMotor,
        prefix="x",
        velocity=2.0,
        acceleration=0.1,
        limits=(-5.0, 5.0),
        egu="mm",
        precision=4,
    )
    y = SubGroup(
        SimMotor,
        prefix="y",
        velocity=1.0,
        acceleration=0.1,
        limits=(-2.0, 3.0),
        egu="mm",
        precision=4,
    )


class SampleHolder(PVGroup):
    """Two-slot sample holder.

    PVs
    ---
    select (enum cell/empty_cell): put with completion; completes when the slot
        is in the beam (``switch_s`` cell s; at once if already there).
    select_rbv (RO, extra): the slot in the beam.
    """

    switch_s = 2.0  # cell s

    select = pvproperty(
        value="cell",
        enum_strings=SLOTS,
        dtype=ChannelType.ENUM,
        doc="Slot in the beam: cell or empty_cell (put with completion)",
    )
    select_rbv = pvproperty(
        value="cell",
        enum_strings=SLOTS,
        dtype=ChannelType.ENUM,
        read_only=True,
        doc="Slot in the beam",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.slot = "cell"

    @select.putter
    async def select(self, instance, value):
        station = self.parent
        await instance.write(value, verify_value=False)
        if value != self.slot:
            await station.simclock.sleep(self.switch_s)
            if instance.value == value:  # not re-targeted meanwhile
                self.slot = value
                await self.select_rbv.write(value)
                station.truth.write({"event": "sample", "t": station.simclock.now(), "slot": value})
        return value


class Shutter(PVGroup):
    """Fast shutter.

    PVs
    ---
    open (0/1): put with completion; completes when the shutter has moved
        (``move_s`` cell s). Frames taken closed hold no scattering.
    open_rbv (RO).
    """

    move_s = 0.02  # cell s

    open_cmd = pvproperty(
        name="open",
        value=0,
        dtype=ClippedInteger,
        lower_ctrl_limit=0,
        upper_ctrl_limit=1,
        doc="Put 1/0 with completion: open/close",
    )
    open_rbv = pvproperty(value=0, read_only=True, doc="1: open")

    @property
    def is_open(self) -> bool:
        return bool(self.open_rbv.value)

    @open_cmd.putter
    async def open_cmd(self, instance, value):
        station = self.parent
        value = int(bool(value))
        await instance.write(value, verify_value=False)
        if value != self.open_rbv.value:
            await station.simclock.sleep(self.move_s)
            if instance.value == value:
                await self.open_rbv.write(value)
                station.truth.write(
                    {"event": "shutter", "t": station.simclock.now(), "open": value}
                )
        return value


class Diode(PVGroup):
    """Beam-stop diode.

    PVs
    ---
    trans (RO): footprint-mean transmission of the cell (or the empty cell) at
        the present stage position, times (1 + 0.2 % noise); 0 with the shutter
        closed. Recomputed on every read and at 10 Hz (monitors).
    """

    period = 0.1  # wall s
    rel_noise = 2e-3

    trans = pvproperty(
        value=0.0,
        read_only=True,
        precision=8,
        doc="Transmitted fraction at the present position (0: closed)",
    )

    rng_stream = 6

    async def measure(self) -> float:
        station = self.parent
        if not station.beam_available:
            return 0.0
        t_cell = await station.pstat.update()  # the cell now (through any technique event)
        t = station.footprint().transmission
        noise = keyed_normal(station.seed, self.rng_stream, t_cell, self.rel_noise)
        return max(float(t) * (1.0 + noise), 0.0)

    async def _publish(self, t: float | None = None) -> None:
        value = await self.measure()
        if value != self.trans.value:
            await self.trans.write(value)

    @trans.startup
    async def trans(self, instance, async_lib):
        await self.parent.simclock.follow(self._publish, self.period)

    @trans.getter
    async def trans(self, instance):
        return await self.measure()


class StorageRing(PVGroup):
    """The storage ring feeding the beamline (synchrotron set-up; the lab source
    never dumps unless a dump is injected).

    PVs
    ---
    current (mA, RO): stored beam current; ``nominal_ma`` with beam, 0 after a
        dump until the refill.
    dump (put 1): dump the beam now (fault injection).
    refill_s (s, RW): cell seconds from a dump to the refill (default 600).
    next_dump (s, RO): cell time of the next scheduled dump (``--beam-dumps``;
        -1 when none is left).
    dumps (RO): beam dumps so far.

    While the beam is down the diode reads 0 and the detectors see no scattering
    (as with the shutter closed); the potentiostat goes on cycling the cell.
    The refill is a background operation of the station: on virtual time the
    clock moves to it while a client waits out the dump (a suspended RunEngine
    does, ``clock:waiting`` 2); a client waiting on its own operations only
    meets it on the way, if their ends lie beyond it.
    """

    nominal_ma = 310.0

    current = pvproperty(
        value=0.0, read_only=True, units="mA", precision=2, doc="Stored beam current (mA)"
    )
    dump = pvproperty(value=0, doc="Put 1: dump the beam now (refills after refill_s)")
    refill_s = pvproperty(
        value=600.0,
        dtype=ClippedDouble,
        lower_ctrl_limit=0.0,
        upper_ctrl_limit=1e6,
        units="s",
        precision=1,
        doc="Cell seconds from a dump to the refill",
    )
    next_dump = pvproperty(
        value=-1.0,
        read_only=True,
        units="s",
        precision=1,
        doc="Cell time of the next scheduled dump (-1: none)",
    )
    dumps = pvproperty(value=0, read_only=True, doc="Beam dumps so far")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.beam_on = True
        self.refill_at: float | None = None
        self._refilled = asyncio.Event()

    @property
    def station(self):
        return self.parent

    def schedule(self) -> list[float]:
        return self.station.beam_dumps

    def _next_scheduled(self) -> float:
        sched = self.schedule()
        return sched[0] if sched else math.inf

    def save_state(self) -> dict:
        return {"beam_on": self.beam_on, "refill_at": self.refill_at}

    def restore_state(self, state: dict) -> None:
        self.beam_on = bool(state.get("beam_on", True))
        self.refill_at = state.get("refill_at")

    async def _publish(self) -> None:
        await self.current.write(self.nominal_ma if self.beam_on else 0.0)
        nxt = self._next_scheduled()
        await self.next_dump.write(nxt if math.isfinite(nxt) else -1.0)

    async def _dump(self, t: float, why: str) -> None:
        station = self.station
        if self.beam_on:
            self.beam_on = False
            self.refill_at = t + float(self.refill_s.value)
            self._refilled.clear()
            await self.dumps.write(int(self.dumps.value) + 1)
            station.truth.write(
                {"event": "beam_dump", "t": t, "why": why, "refill_at": self.refill_at}
            )
            asyncio.get_running_loop().create_task(self._refill())
        await self._publish()
        from .station import request_autosave

        request_autosave(self)

    async def _refill(self) -> None:
        clock = self.station.simclock
        while self.refill_at is not None and clock.now() < self.refill_at:
            # the station's own operation: it drives the clock only while the client
            # waits out the dump (suspended), else the clock stops there on its way
            await clock.sleep_until(self.refill_at, background=True)
        if not self.beam_on:
            self.beam_on = True
            self.refill_at = None
            self.station.truth.write({"event": "beam_refill", "t": clock.now()})
            await self._publish()
            from .station import request_autosave

            request_autosave(self)

    async def _check_schedule(self, t: float) -> None:
        sched = self.schedule()
        fired = False
        while sched and sched[0] <= t:
            sched.pop(0)
            fired = True
        if fired:
            await self._dump(t, "scheduled")
        elif self.next_dump.value != (sched[0] if sched else -1.0):
            await self._publish()

    @current.startup
    async def current(self, instance, async_lib):
        clock = self.station.simclock
        await self._publish()
        if not self.beam_on:  # restored while down: the refill is still due
            asyncio.get_running_loop().create_task(self._refill())
        if clock.virtual:
            clock.add_event_source(self._next_scheduled)
            clock.add_step_hook(self._check_schedule)
            return
        while True:
            nxt = self._next_scheduled()
            if math.isfinite(nxt):
                await clock.sleep_until(nxt)
            else:
                await asyncio.sleep(0.2)
            await self._check_schedule(clock.now())

    @dump.putter
    async def dump(self, instance, value):
        if value:
            await self._dump(self.station.simclock.now(), "injected")
        return 0


class Beam(PVGroup):
    """The beam of the chosen set-up (``--beamline``).

    PVs (all RO)
    ---
    config (synchrotron/lab), energy_kev, wavelength_A, size_h_um (horizontal,
    along x), size_v_um (vertical, along y).
    """

    config = pvproperty(
        value="",
        dtype=ChannelType.STRING,
        read_only=True,
        doc="Beamline set-up: synchrotron or lab",
    )
    energy_kev = pvproperty(
        value=0.0, read_only=True, units="keV", precision=4, doc="Photon energy (keV)"
    )
    wavelength_A = pvproperty(
        value=0.0, read_only=True, units="A", precision=5, doc="Wavelength (Angstrom)"
    )
    size_h_um = pvproperty(
        value=0.0, read_only=True, units="um", precision=1, doc="Beam size, horizontal (x), um"
    )
    size_v_um = pvproperty(
        value=0.0, read_only=True, units="um", precision=1, doc="Beam size, vertical (y), um"
    )

    @config.startup
    async def config(self, instance, async_lib):
        bl = self.parent.beamline
        await instance.write(bl.name)
        await self.energy_kev.write(float(bl.energy_kev))
        await self.wavelength_A.write(float(bl.wavelength_m * 1e10))
        await self.size_h_um.write(float(bl.beam_w_mm * 1e3))
        await self.size_v_um.write(float(bl.beam_h_mm * 1e3))


# -- detectors ------------------------------------------------------------------------


class ScatteringCam(DetectorCam):
    """Camera of a SAXS/WAXS detector (Pilatus/Eiger-like).

    PVs
    ---
    As the XCT camera's AcquireTime, NumExposures (summed into one frame),
    Acquire, Acquire_RBV, ArrayCounter, ArrayCounter_RBV, SizeX_RBV, SizeY_RBV;
    Geometry_RBV (char[8192], JSON of the pyFAI ``ai.get_config()``),
    PoniFile_RBV (char[256], path of the PONI file), Model_RBV (extra: pyFAI
    detector name).
    """

    geometry = char_pv(
        "Geometry_RBV",
        max_length=8192,
        read_only=True,
        doc="pyFAI geometry as JSON (ai.get_config(); pyFAI.load accepts it)",
    )
    poni_file = char_pv(
        "PoniFile_RBV", read_only=True, doc="PONI file with the same geometry (in the data dir)"
    )
    model = pvproperty(
        name="Model_RBV",
        value="",
        dtype=ChannelType.STRING,
        read_only=True,
        doc="Detector model (pyFAI detector name)",
    )


class SaxsCam(ScatteringCam):
    """The SAXS camera: :class:`ScatteringCam` plus BeamstopRadius_RBV (m)."""

    beamstop_radius = pvproperty(
        name="BeamstopRadius_RBV",
        value=0.0,
        read_only=True,
        units="m",
        precision=6,
        doc="Beamstop radius on the detector (m); mask it",
    )


class ScatteringDetector(FrameDetector):
    """A SAXS or WAXS detector of the chosen beamline: ``cam:`` and ``HDF1:``.

    An Acquire waits NumExposures x AcquireTime of cell time, then (worker
    thread) renders the frame for the cell state, stage position, sample slot
    and shutter at that moment (``scattering_frames.render_point`` with the
    summed exposure), writes it (int32, ``/entry/data/data``, SWMR) to the open
    file and completes. Shutter closed: no scattering, zeros (module gaps -1,
    the detector reads no dark current).
    """

    cam = SubGroup(ScatteringCam, prefix="cam:")
    frame_dtype = np.int32
    role = "waxs"
    rng_stream = 5

    @property
    def file_name(self) -> str:
        return self.role

    @property
    def prepared(self) -> dict:
        """The prepared geometry of this detector (:meth:`SaxsStation.prepare`)."""
        return self.station.prepare()[self.role]

    def frame_shape(self) -> tuple[int, int]:
        return self.prepared["shape"]

    def file_attrs(self) -> dict:
        s = self.prepared
        bl = self.station.beamline
        return {
            "beamline": bl.name,
            "detector_role": self.role,
            "detector": s["model"],
            "energy_kev": float(bl.energy_kev),
            "wavelength_m": float(bl.wavelength_m),
            "geometry": s["geometry_json"],
            "beamstop_radius_m": s["beamstop_radius_m"],
        }

    async def startup(self) -> None:
        """Publish the geometry, PONI path, model, frame size and default exposure."""
        # main() prepares before serving; otherwise build it off the event loop
        await asyncio.get_running_loop().run_in_executor(None, self.station.prepare)
        s = self.prepared
        cam = self.cam
        await cam.geometry.write(s["geometry_json"])
        await cam.poni_file.write(s["poni_file"])
        await cam.model.write(s["model"])
        if self.station.restored is None:
            await cam.acquire_time.write(float(self.station.beamline.exposure_s))
            await cam.num_exposures.write(1)
        await super().startup()

    def snapshot(self, *, t_start, t, n_exposures, acquire_time) -> dict:
        station = self.station
        cell = station.cell
        pstat = station.pstat
        x, y = station.stage.x.position, station.stage.y.position
        cx, cy = station.cell_xy(x, y)
        slot = station.sample.slot
        footprint = station.footprint()
        return dict(
            detector=self.role,
            t_start=t_start,
            t=t,
            stage_x_mm=x,
            stage_y_mm=y,
            cell_x_mm=cx,
            cell_y_mm=cy,
            slot=slot,
            shutter_open=station.beam_available,
            beamline=station.beamline.name,
            n_exposures=n_exposures,
            acquire_time=acquire_time,
            exposure_s=n_exposures * acquire_time,
            footprint=footprint,
            li2s_size_nm=footprint.li2s_size_nm,
            state_of_discharge=cell.state_of_discharge,
            capacity_mah=cell.capacity_mah,
            half_cycle_capacity_mah=cell.half_cycle_capacity_mah,
            pstat_half_cycle=int(pstat.half_cycle.value),
            pstat_direction=pstat.direction.value,
            pstat_capacity_mah=pstat.capacity.value,
            ewe_v=float(pstat.ewe.value),
        )

    def render(self, snap: dict) -> np.ndarray:
        bl = self.station.beamline
        if snap["shutter_open"]:
            return sf.render_point(
                bl, snap["footprint"], self._rng, roles=(self.role,), exposure_s=snap["exposure_s"]
            )[self.role]
        setup = bl.detector(self.role)
        arrays = sf.pixel_arrays(bl.integrator(self.role), setup.beamstop_radius_m)
        frame = np.zeros(self.frame_shape(), np.int32)
        frame[arrays["gap"]] = -1
        return frame

    def frame_truth(self, snap: dict, frame: np.ndarray) -> dict:
        counts = frame[frame > 0]
        return dict(snap, frame_sum=int(counts.sum(dtype=np.int64)), frame_max=int(frame.max()))


class SaxsDetector(ScatteringDetector):
    __doc__ = ScatteringDetector.__doc__ + "\n    SAXS: also cam:BeamstopRadius_RBV.\n"

    cam = SubGroup(SaxsCam, prefix="cam:")
    role = "saxs"
    rng_stream = 4

    async def startup(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.station.prepare)
        await self.cam.beamstop_radius.write(float(self.prepared["beamstop_radius_m"]))
        await super().startup()


class WaxsDetector(ScatteringDetector):
    __doc__ = ScatteringDetector.__doc__

    role = "waxs"


# -- station ----------------------------------------------------------------------------


class SaxsStation(Station):
    """Simulated scanning operando SAXS/WAXS station (all-solid-state Li-S cell).

    PVs (prefix P; the contract is docs/saxs-pvs.md)
    ---
    P clock:time, clock:scale, clock:wait, clock:hold
    P pstat:mode (OCV/CC/GCPL), current_sp, c_rate, c_rate_current, duration,
      cycles, e_min, e_max, start, stop, state, ewe, i, charge, elapsed,
      capacity, half_cycle, direction
    P stage:x, stage:y (motor records; x -5..5 mm, y -2..3 mm)
    P sample:select (cell/empty_cell) (extra: sample:select_rbv)
    P shutter:open, shutter:open_rbv
    P diode:trans
    P ring:current, dump, refill_s, next_dump, dumps
    P beam:config, energy_kev, wavelength_A, size_h_um, size_v_um
    P saxs:cam:AcquireTime, NumExposures, Acquire, ArrayCounter_RBV, SizeX_RBV,
      SizeY_RBV, Geometry_RBV, PoniFile_RBV, BeamstopRadius_RBV
      (extra: Acquire_RBV, ArrayCounter, Model_RBV)
    P waxs:cam:(the same without BeamstopRadius_RBV)
    P saxs:HDF1:*, waxs:HDF1:* FilePath, FileName, FileNumber, FullFileName_RBV,
      Capture, Capture_RBV, NumCaptured_RBV
    """

    clock = SubGroup(ClockGroup, prefix="clock:")
    pstat = SubGroup(CyclingPotentiostat, prefix="pstat:")
    stage = SubGroup(ScanStage, prefix="stage:")
    sample = SubGroup(SampleHolder, prefix="sample:")
    shutter = SubGroup(Shutter, prefix="shutter:")
    diode = SubGroup(Diode, prefix="diode:")
    beam = SubGroup(Beam, prefix="beam:")
    ring = SubGroup(StorageRing, prefix="ring:")
    saxs = SubGroup(SaxsDetector, prefix="saxs:")
    waxs = SubGroup(WaxsDetector, prefix="waxs:")

    def __init__(
        self,
        *args,
        beamline: str = "synchrotron",
        time_scale: float = 1.0,
        seed: int = 0,
        data_dir="./data/saxs-frames",
        truth_file=None,
        cell_params: SaxsCellParams | None = None,
        mount_offset: tuple[float, float] = (0.0, 0.0),
        beam_dumps=(),
        hold: bool = False,
        **kwargs,
    ):
        # Set before PVGroup.__init__: the subgroups find them through .parent.
        self.beam_dumps = sorted(float(t) for t in beam_dumps)
        self.beamline = sf.get_beamline(beamline)
        self.cell_params = cell_params or SaxsCellParams()
        self.cell = SaxsCell(self.cell_params, seed=int(seed))
        self.mount_offset = (float(mount_offset[0]), float(mount_offset[1]))
        self._prepared: dict | None = None
        self._prepare_lock = threading.Lock()
        super().__init__(
            *args,
            time_scale=time_scale,
            seed=seed,
            data_dir=data_dir,
            truth_file=truth_file,
            hold=hold,
            **kwargs,
        )

    def prepare(self) -> dict:
        """Build both detectors' geometries (idempotent, thread-safe).

        Per role: frame ``shape``, ``model``, ``geometry_json`` (``ai.get_config()``),
        ``poni_file`` (written in the data dir, replaced if present: ``ai.write``
        appends), ``beamstop_radius_m``; also warms the per-pixel caches so the
        first frame renders at full speed. ``main()`` calls it before serving.
        """
        with self._prepare_lock:
            if self._prepared is None:
                import json

                bl = self.beamline
                self.data_dir.mkdir(parents=True, exist_ok=True)
                out = {}
                for role in ("saxs", "waxs"):
                    setup = bl.detector(role)
                    ai = bl.integrator(role)
                    poni = self.data_dir / f"{role}_{bl.name}.poni"
                    bl.write_poni(role, poni)
                    sf.pixel_arrays(ai, setup.beamstop_radius_m)
                    bl.q_grid(role)
                    out[role] = {
                        "shape": tuple(int(n) for n in ai.detector.shape),
                        "model": setup.detector,
                        "geometry_json": json.dumps(bl.geometry(role)),
                        "poni_file": str(poni),
                        "beamstop_radius_m": float(setup.beamstop_radius_m),
                    }
                self._prepared = out
            return self._prepared

    @property
    def beam_available(self) -> bool:
        """X-rays on the sample: the shutter open and beam in the ring."""
        return self.shutter.is_open and self.ring.beam_on

    def save_models(self) -> dict:
        return {
            "cell": self.cell,
            "slot": self.sample.slot,
            "ring": self.ring.save_state(),
            "beam_dumps": list(self.beam_dumps),
        }

    def restore_models(self, models: dict) -> None:
        super().restore_models(models)
        self.sample.slot = models.get("slot", self.sample.slot)
        self.ring.restore_state(models.get("ring", {}))
        self.beam_dumps[:] = models.get("beam_dumps", self.beam_dumps)

    def cell_xy(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        """Cell coordinates at the beam for stage position (x, y)."""
        return x_mm - self.mount_offset[0], y_mm - self.mount_offset[1]

    def footprint(self):
        """What the beam crosses now (cell as it is; slot; stage readbacks)."""
        bl = self.beamline
        cx, cy = self.cell_xy(self.stage.x.position, self.stage.y.position)
        return self.cell.composition_at(
            cx,
            cy,
            bl.beam_w_mm,
            bl.beam_h_mm,
            bl.energy_kev,
            empty=self.sample.slot == "empty_cell",
        )

    def start_info(self) -> dict:
        return {
            "beamline": self.beamline.name,
            "mount_offset_mm": self.mount_offset,
            "cell_params": self.cell_params,
            "truth": self.cell.truth(),
        }


def main(argv=None) -> None:
    parser, split_args = station_arg_parser(
        SaxsStation, default_prefix="SAXS:", default_data_dir="./data/saxs-frames", argv=argv
    )
    parser.add_argument(
        "--beamline",
        default="synchrotron",
        choices=BEAMLINES,
        help="beamline set-up (default synchrotron)",
    )
    parser.add_argument(
        "--mount-offset",
        type=float,
        nargs=2,
        default=(0.0, 0.0),
        metavar=("DX", "DY"),
        help="stage position (mm) of the cell origin (default 0 0)",
    )
    parser.add_argument(
        "--beam-dumps",
        default="",
        metavar="T1,T2,...",
        help="cell times (s) of scheduled beam dumps (each refills after ring:refill_s)",
    )
    args = parser.parse_args(argv)
    kwargs = station_kwargs(parser, args)
    try:
        dumps = [float(v) for v in args.beam_dumps.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--beam-dumps must be cell times in s, not {args.beam_dumps!r}")
    if not all(math.isfinite(v) and v >= 0 for v in dumps):
        parser.error("--beam-dumps must be finite cell times >= 0")
    if not all(math.isfinite(v) for v in args.mount_offset):
        parser.error("--mount-offset must be finite")
    ioc_options, run_options = split_args(args)
    ioc = SaxsStation(
        beamline=args.beamline,
        mount_offset=tuple(args.mount_offset),
        beam_dumps=dumps,
        **kwargs,
        **ioc_options,
    )
    ioc.prepare()  # pyFAI geometries and PONI files before serving
    serve(ioc, run_options)


if __name__ == "__main__":
    main()
