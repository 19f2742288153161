"""Simulated operando X-ray CT station: a caproto IOC over the cell physics.

The PV contract is ``docs/xct-pvs.md``; this module serves exactly those PVs
(and a few extra, listed in :class:`XCTStation`). The physics lives in
``operando.iocs.physics`` (no EPICS there); this is a thin shell that advances
the cell model on the simulated clock, turns puts into technique/stage/source
changes, and renders detector frames into HDF5 files.

Run it::

    python -m operando.iocs.xct --prefix XCT: --time-scale 200 --data-dir ./data/xct-frames
    python -m operando.iocs.xct --prefix XCT: --list-pvs

Ground truth for tests never goes through PVs: with ``--truth-file PATH`` the
IOC appends one JSON object per line for every event of interest (``ioc_start``,
``technique_start``, ``technique_end``, ``source``, ``short``, ``file_open``,
``file_close``, ``frame``).
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
from caproto import AlarmSeverity, AlarmStatus, ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from . import potentiostat
from .clock import ClockGroup
from .detector import DetectorCam, FrameDetector
from .motor import SimMotor
from .physics.materials import effective_energy_kev, i0_rate, objective_flux_factor
from .physics.xct_cell import CellParams, XCTCell
from .physics.xct_phantom import DetectorGeometry, Projector
from .pvs import ClippedDouble, ClippedInteger, TruthLog, keyed_normal
from .station import Station, serve, station_arg_parser, station_kwargs

__all__ = ["XCTStation", "ClippedDouble", "ClippedInteger", "TruthLog", "main"]

TECHNIQUE_STATES = potentiostat.TECHNIQUE_STATES
FILTERS = ("None", "LE1", "LE2", "LE3", "HE1")
OBJECTIVES = ("4X", "4X-wide", "20X")
BINNINGS = (1, 2, 4)


async def _first_event(*events: asyncio.Event) -> None:
    """Return when any of ``events`` is set."""
    waiters = [asyncio.ensure_future(ev.wait()) for ev in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _particles_of(geom):
    """The particle array of a cell geometry, whatever its container."""
    if isinstance(geom, dict):
        return geom.get("particles")
    return getattr(geom, "particles", None)


# -- clock.py: the clock; motor.py: motors; potentiostat.py, detector.py, station.py --


class Potentiostat(potentiostat.Potentiostat):
    """The shared SP-150e-like potentiostat (PVs: see :class:`potentiostat.Potentiostat`)
    on the XCT cell.

    The XCT cell model (:class:`XCTCell`: ``t``, ``potential_v``) is advanced
    every ``tick`` s wall with the applied current; a technique ends exactly at
    its duration (cell time); a short circuit is logged to the truth file.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._short_logged = False

    def cell_time(self) -> float:
        return float(self.cell.t)

    def cell_voltage(self, current_a: float) -> float:
        return float(self.cell.potential_v(current_a))

    def limit_time(self, current_a: float, e_min: float, e_max: float) -> float:
        """The short circuit, exactly: Ewe drops to I·R_short when the ionic
        throughput reaches the cell's threshold; a limit if that is outside
        [e_min, e_max]."""
        shorted_ewe = current_a * self.cell.params.r_short_ohm
        if e_min <= shorted_ewe <= e_max:
            return math.inf
        return float(self.cell.time_to_short(current_a))

    def advance_cell(self, t: float) -> None:
        super().advance_cell(t)
        cell = self.cell
        if cell.shorted and not self._short_logged:
            self._short_logged = True
            self.station.truth.write({"event": "short", "t": cell.short_time, "t_detected": t})


class ForceSensor(PVGroup):
    """KM10z load cell (0-500 N) read through a GSV-3USB bridge amplifier.

    PVs
    ---
    bridge (mV/V, RO): 2 mV/V at 500 N, clipped at full scale.
    force (N, RO): bridge / 2 mV/V * 500 N - offset; alarm limits 450 N (MINOR,
        HIGH) and 500 N (MAJOR, HIHI) on the load the sensor carries; over-range
        reads as 500 N with a MAJOR alarm.
    tare (put 1): take the present force as the zero offset.
    offset (N, RO): tare offset.
    """

    full_scale_n = 500.0
    full_scale_mv_v = 2.0
    warning_n = 450.0
    noise_n = 0.02
    period = 0.1  # wall s between updates (scaled time; virtual: at every advance)

    bridge = pvproperty(
        value=0.0,
        read_only=True,
        units="mV/V",
        precision=6,
        doc="GSV-3USB bridge signal (2 mV/V at 500 N)",
    )
    force = pvproperty(
        value=0.0,
        read_only=True,
        units="N",
        precision=3,
        upper_alarm_limit=500.0,
        upper_warning_limit=450.0,
        doc="Force (N) = bridge/2 mV/V*500 N - tare offset",
    )
    tare = pvproperty(value=0, doc="Put 1: take the current force as zero offset")
    offset = pvproperty(value=0.0, read_only=True, units="N", precision=3, doc="Tare offset (N)")

    rng_stream = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._load = 0.0

    async def _update(self, t: float | None = None) -> None:
        station = self.parent
        noise = keyed_normal(station.seed, self.rng_stream, station.simclock.now(), self.noise_n)
        load = float(station.cell.force_n) + noise
        load = min(load, self.full_scale_n)
        self._load = load
        bridge = load / self.full_scale_n * self.full_scale_mv_v
        if load >= self.full_scale_n:
            status, severity = AlarmStatus.HIHI, AlarmSeverity.MAJOR_ALARM
        elif load >= self.warning_n:
            status, severity = AlarmStatus.HIGH, AlarmSeverity.MINOR_ALARM
        else:
            status, severity = AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM
        force = bridge / self.full_scale_mv_v * self.full_scale_n - self.offset.value
        await self.bridge.write(bridge, verify_value=False, status=status, severity=severity)
        await self.force.write(force, verify_value=False, status=status, severity=severity)

    @force.startup
    async def force(self, instance, async_lib):
        # virtual time: a step hook after the potentiostat's, so the cell is at t
        await self.parent.simclock.follow(self._update, self.period)

    @tare.putter
    async def tare(self, instance, value):
        if value:
            await self.offset.write(self._load)
            await self._update()
        return 0


class XraySource(PVGroup):
    """Micro-focus X-ray tube (Xradia 620 Versa: up to 70 kV, 10 W).

    PVs
    ---
    on (0/1): put with completion; completes when the source is ready (after a
        warm-up of ``warmup_s`` cell s) or off (at once). While the interlock is
        tripped a put of 1 waits for the reset, then warms up.
    on_rbv (RO): 1 when ready. Frames are dark unless on_rbv = 1.
    kv (kV, clipped 0..70), ua (uA, clipped 0..150), filter (None/LE1/LE2/LE3/HE1).
    fault (0/1): the interlock (door, vacuum, high voltage); put 1 to trip it
        (fault injection): the source switches off at once and stays off.
    fault_msg (RO): why it tripped.
    reset (put 1): clear the fault (the source stays off until switched on).
    """

    warmup_s = 10.0  # cell s

    on = pvproperty(
        value=0,
        dtype=ClippedInteger,
        lower_ctrl_limit=0,
        upper_ctrl_limit=1,
        doc="Put 1/0 with completion: completes when ready / off",
    )
    on_rbv = pvproperty(value=0, read_only=True, doc="Source state (1: ready)")
    kv = pvproperty(
        value=70.0,
        dtype=ClippedDouble,
        lower_ctrl_limit=0.0,
        upper_ctrl_limit=70.0,
        units="kV",
        precision=2,
        doc="Tube voltage (kV), clipped to 0..70",
    )
    ua = pvproperty(
        value=143.0,
        dtype=ClippedDouble,
        lower_ctrl_limit=0.0,
        upper_ctrl_limit=150.0,
        units="uA",
        precision=2,
        doc="Tube current (uA), clipped to 0..150",
    )
    filter = pvproperty(
        value="LE1", enum_strings=FILTERS, dtype=ChannelType.ENUM, doc="Low-energy filter"
    )
    fault = pvproperty(
        value=0,
        dtype=ClippedInteger,
        lower_ctrl_limit=0,
        upper_ctrl_limit=1,
        doc="Interlock fault: 1 = tripped, source off (put 1 to inject; reset to clear)",
    )
    fault_msg = pvproperty(
        value="", dtype=ChannelType.STRING, read_only=True, doc="Why the interlock tripped"
    )
    reset = pvproperty(value=0, doc="Put 1: clear the interlock fault")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._wanted = False
        self._ready_at: float | None = None
        self._clear = asyncio.Event()  # set while the interlock is clear
        self._clear.set()
        self._tripped = asyncio.Event()  # set while it is tripped
        self._off = asyncio.Event()

    @fault.putter
    async def fault(self, instance, value):
        if not value:
            return instance.value  # only reset clears it
        if not instance.value:
            self._clear.clear()
            self._tripped.set()
            self._ready_at = None
            await self.fault_msg.write("interlock tripped (injected)")
            if self.on_rbv.value:
                await self.on_rbv.write(0)
                self._log("off")
            self.parent.truth.write(
                {"event": "source_fault", "t": self.parent.simclock.now(), "fault": 1}
            )
            self._autosave()
        return 1

    @reset.putter
    async def reset(self, instance, value):
        if value and self.fault.value:
            await self.fault.write(0, verify_value=False)
            await self.fault_msg.write("")
            self._tripped.clear()
            self._clear.set()
            self.parent.truth.write(
                {"event": "source_fault", "t": self.parent.simclock.now(), "fault": 0}
            )
            self._autosave()
        return 0

    def _autosave(self) -> None:
        from .station import request_autosave

        request_autosave(self)

    def save_state(self) -> dict:
        return {"wanted": self._wanted, "ready_at": self._ready_at}

    def restore_state(self, state: dict) -> None:
        self._wanted = bool(state.get("wanted"))
        self._ready_at = state.get("ready_at")
        if self.fault.value:
            self._clear.clear()
            self._tripped.set()

    @property
    def emitting(self) -> bool:
        return bool(self.on_rbv.value) and self.kv.value > 0 and self.ua.value > 0

    def _log(self, state: str) -> None:
        self.parent.truth.write(
            {
                "event": "source",
                "t": self.parent.simclock.now(),
                "state": state,
                "kv": self.kv.value,
                "ua": self.ua.value,
                "filter": self.filter.value,
            }
        )

    @on.putter
    async def on(self, instance, value):
        clock = self.parent.simclock
        if not value:
            self._wanted = False
            self._ready_at = None
            self._off.set()
            if self.on_rbv.value:
                await self.on_rbv.write(0)
                self._log("off")
                self._autosave()
            return 0
        await instance.write(1, verify_value=False)
        if self.on_rbv.value:
            return 1
        self._wanted = True
        off = self._off = asyncio.Event()
        while self._wanted and not off.is_set():
            if self.fault.value:  # interlock tripped: wait for the reset (or an off)
                await _first_event(self._clear, off)
                self._ready_at = None
                continue
            if self._ready_at is None:
                self._ready_at = clock.now() + self.warmup_s
            if clock.now() >= self._ready_at:
                break
            await clock.sleep_until_or(self._ready_at, self._tripped)
        if self._wanted and not off.is_set() and not self.fault.value and not self.on_rbv.value:
            await self.on_rbv.write(1)
            self._log("on")
            self._autosave()
        return 1 if self.on_rbv.value else 0


class CTCam(DetectorCam):
    """Camera of the CT detector (areaDetector-like names).

    PVs
    ---
    AcquireTime (s, clipped to [1e-3, 3600]), NumExposures (1..100),
    Objective (4X/4X-wide/20X), BinX (1/2/4, both axes), Acquire (put 1 with
    completion: one frame), Acquire_RBV (1 while acquiring), ArrayCounter (RW,
    frames acquired; put to reset), ArrayCounter_RBV, SizeX_RBV (columns),
    SizeY_RBV (rows), PixelSize_RBV (um at the sample, after binning).
    """

    objective = pvproperty(
        name="Objective",
        value="4X",
        enum_strings=OBJECTIVES,
        dtype=ChannelType.ENUM,
        doc="Optics (voxel 3.4/5.44/0.68 um)",
    )
    bin_x = pvproperty(
        name="BinX",
        value=4,
        dtype=ClippedInteger,
        lower_ctrl_limit=1,
        upper_ctrl_limit=4,
        doc="Binning 1, 2 or 4 (both axes)",
    )
    pixel_size = pvproperty(
        name="PixelSize_RBV",
        value=0.0,
        read_only=True,
        units="um",
        precision=4,
        doc="Pixel size at the sample after binning (um)",
    )

    @objective.putter
    async def objective(self, instance, value):
        await self.parent.set_optics(objective=value)
        return value

    @bin_x.putter
    async def bin_x(self, instance, value):
        value = max(b for b in BINNINGS if b <= max(int(value), 1))
        await self.parent.set_optics(binning=value)
        return value


class CTDetector(FrameDetector):
    """Xradia-620-Versa-like CT detector: ``cam:`` and ``HDF1:`` (see those groups).

    An Acquire waits NumExposures x AcquireTime of cell time, then renders the
    frame (images averaged) from the cell geometry, stage th/x/z and source
    state at that moment (source not ready: a dark frame), in a worker thread,
    writes it to the open HDF5 file (uint16, if capturing), and completes.
    """

    cam = SubGroup(CTCam, prefix="cam:")
    frame_dtype = np.uint16
    file_name = "xct"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._projectors: dict = {}
        self.objective = "4X"
        self.binning = int(self.station.binning)
        self.geometry = DetectorGeometry.for_objective(self.objective, binning=self.binning)

    def frame_shape(self) -> tuple[int, int]:
        return int(self.geometry.n_rows), int(self.geometry.n_cols)

    def file_attrs(self) -> dict:
        return {
            "objective": self.objective,
            "binning": self.binning,
            "pixel_size_um": float(self.geometry.pixel_um),
        }

    async def publish_size(self) -> None:
        await super().publish_size()
        await self.cam.pixel_size.write(float(self.geometry.pixel_um))

    async def startup(self) -> None:
        """Publish the initial binning, file path and frame geometry."""
        await self.cam.bin_x.write(self.binning, verify_value=False)
        await super().startup()

    async def set_optics(self, *, objective=None, binning=None) -> None:
        """Change objective and/or binning (refused while a file is open; waits
        for a frame being acquired)."""
        objective = self.objective if objective is None else str(objective)
        binning = self.binning if binning is None else int(binning)
        if (objective, binning) == (self.objective, self.binning):
            return
        async with self._lock:
            if self.writer.is_open:
                raise RuntimeError(
                    "cannot change the objective or binning while capturing "
                    "(the open file's frame shape is fixed): put Capture 0"
                )
            self.geometry = DetectorGeometry.for_objective(objective, binning=binning)
            self.objective, self.binning = objective, binning
            await self.publish_size()

    # -- frames ---------------------------------------------------------------
    def _projector(self, snap: dict) -> Projector:
        energy_kev = snap["energy_kev"]
        key = (snap["objective"], snap["binning"], round(energy_kev, 2))
        proj = self._projectors.get(key)
        if proj is None:
            if len(self._projectors) > 8:
                self._projectors.clear()
            proj = Projector(
                snap["det_geometry"],
                energy_kev=energy_kev,
                axis_offset_px=self.station.axis_offset_px,
                seed=self.station.seed,
            )
            self._projectors[key] = proj
        return proj

    def snapshot(self, *, t_start, t, n_exposures, acquire_time) -> dict:
        station = self.station
        src = station.src
        kv, ua, filt = float(src.kv.value), float(src.ua.value), src.filter.value
        source_on = src.emitting
        energy = float(effective_energy_kev(kv if kv > 0 else 70.0, filt))
        # open-beam counts per full-size pixel and exposure (binning averages)
        counts = (
            (float(i0_rate(kv, ua, filt)) * acquire_time * objective_flux_factor(self.objective))
            if source_on
            else 0.0
        )
        stage = station.stage
        return dict(
            t_start=t_start,
            t=t,
            theta_deg=stage.th.position,
            stage_x_mm=stage.x.position,
            stage_y_mm=stage.y.position,
            stage_z_mm=stage.z.position,
            source_on=source_on,
            kv=kv,
            ua=ua,
            filter=filt,
            energy_kev=energy,
            counts_per_exposure=counts,
            n_exposures=n_exposures,
            acquire_time=acquire_time,
            objective=self.objective,
            binning=self.binning,
            pixel_um=float(self.geometry.pixel_um),
            det_geometry=self.geometry,
            geometry=station.cell.geometry(),  # a frozen snapshot
            truth=station.cell.truth() if station.truth else None,
        )

    def render(self, snap: dict) -> np.ndarray:
        proj = self._projector(snap)
        if snap["source_on"]:
            transmission = proj.transmission(
                snap["geometry"],
                snap["theta_deg"],
                stage_x_mm=snap["stage_x_mm"],
                stage_z_mm=snap["stage_z_mm"],
            )
        else:  # dark frame: no need to project
            det = snap["det_geometry"]
            transmission = np.ones((int(det.n_rows), int(det.n_cols)))
        return proj.frame(
            transmission,
            snap["counts_per_exposure"],
            snap["n_exposures"],
            self._rng,
            source_on=snap["source_on"],
        )

    def frame_truth(self, snap: dict, frame: np.ndarray) -> dict:
        record = {k: v for k, v in snap.items() if k not in ("geometry", "det_geometry")}
        record.update(frame_mean=float(np.mean(frame)), particles=_particles_of(snap["geometry"]))
        return record


class SampleStage(PVGroup):
    """Sample stage: motor records th (deg, +-720, 30 deg/s), x, y, z (mm, +-25, 2 mm/s).

    x is across the beam, y along it, z vertical; th rotates about the vertical
    axis through x = 0. Moves run in cell time.
    """

    th = SubGroup(
        SimMotor,
        prefix="th",
        velocity=30.0,
        acceleration=0.1,
        limits=(-720.0, 720.0),
        egu="deg",
        precision=4,
    )
    x = SubGroup(
        SimMotor,
        prefix="x",
        velocity=2.0,
        acceleration=0.1,
        limits=(-25.0, 25.0),
        egu="mm",
        precision=4,
    )
    y = SubGroup(
        SimMotor,
        prefix="y",
        velocity=2.0,
        acceleration=0.1,
        limits=(-25.0, 25.0),
        egu="mm",
        precision=4,
    )
    z = SubGroup(
        SimMotor,
        prefix="z",
        velocity=2.0,
        acceleration=0.1,
        limits=(-25.0, 25.0),
        egu="mm",
        precision=4,
    )


class XCTStation(Station):
    """Simulated operando X-ray CT station (pressurized cell, lab CT scanner).

    PVs (prefix P; the contract is docs/xct-pvs.md)
    ---
    P clock:time, clock:scale, clock:wait (extra: clock:hold)
    P pstat:mode, current_sp, duration, e_min, e_max, start, stop, state, ewe, i,
      charge, elapsed
    P force:bridge, force, tare, offset
    P src:on, on_rbv, kv, ua, filter
    P det:cam:AcquireTime, NumExposures, Objective, BinX, Acquire,
      ArrayCounter_RBV, SizeX_RBV, SizeY_RBV, PixelSize_RBV
      (extra: Acquire_RBV, ArrayCounter)
    P det:HDF1:FilePath, FileName, FileNumber, FullFileName_RBV, Capture,
      Capture_RBV, NumCaptured_RBV
    P stage:th, stage:x, stage:y, stage:z (motor records)
    """

    clock = SubGroup(ClockGroup, prefix="clock:")
    pstat = SubGroup(Potentiostat, prefix="pstat:")
    force = SubGroup(ForceSensor, prefix="force:")
    src = SubGroup(XraySource, prefix="src:")
    det = SubGroup(CTDetector, prefix="det:")
    stage = SubGroup(SampleStage, prefix="stage:")

    def __init__(
        self,
        *args,
        time_scale: float = 1.0,
        seed: int = 0,
        binning: int = 4,
        data_dir="./data/xct-frames",
        truth_file=None,
        cell_params: CellParams | None = None,
        axis_offset_px: float = 3.7,
        hold: bool = False,
        **kwargs,
    ):
        if binning not in BINNINGS:
            raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")
        # Set before PVGroup.__init__: the subgroups find them through .parent.
        self.binning = int(binning)
        self.axis_offset_px = float(axis_offset_px)
        self.cell_params = cell_params or CellParams()
        self.cell = XCTCell(self.cell_params, seed=int(seed))
        super().__init__(
            *args,
            time_scale=time_scale,
            seed=seed,
            data_dir=data_dir,
            truth_file=truth_file,
            hold=hold,
            **kwargs,
        )

    def save_models(self) -> dict:
        return {
            "cell": self.cell,
            "source": self.src.save_state(),
            "optics": (self.det.objective, self.det.binning),
        }

    def restore_models(self, models: dict) -> None:
        super().restore_models(models)
        if "source" in models:
            self._restored_source = models["source"]
        if "optics" in models:
            objective, binning = models["optics"]
            det = self.det
            det.objective, det.binning = objective, int(binning)
            det.geometry = DetectorGeometry.for_objective(objective, binning=int(binning))

    def restore(self, state: dict) -> None:
        super().restore(state)
        self.src.restore_state(getattr(self, "_restored_source", {}) or {})

    def start_info(self) -> dict:
        return {
            "binning": self.binning,
            "axis_offset_px": self.axis_offset_px,
            "cell_params": self.cell_params,
            "truth": self.cell.truth(),
        }


def main(argv=None) -> None:
    parser, split_args = station_arg_parser(
        XCTStation, default_prefix="XCT:", default_data_dir="./data/xct-frames", argv=argv
    )
    parser.add_argument(
        "--binning",
        type=int,
        default=4,
        choices=BINNINGS,
        metavar="B",
        help="initial detector binning 1, 2 or 4 (default 4)",
    )
    args = parser.parse_args(argv)
    kwargs = station_kwargs(parser, args)
    ioc_options, run_options = split_args(args)
    ioc = XCTStation(binning=args.binning, **kwargs, **ioc_options)
    serve(ioc, run_options)


if __name__ == "__main__":
    main()
