"""Ophyd devices of the scanning operando SAXS/WAXS station, and their factory.

The PV contract is ``docs/saxs-pvs.md``. ``make_saxs_station(prefix)`` builds and
names every device from one prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Kind

from .common import (
    CharArraySignalRO,
    CheckedSignal,
    CompletionSignal,
    HDF5AreaDetector,
    HDF5Cam,
    Motor,
    Potentiostat,
    SimClock,
    Station,
    TwoStateDevice,
)


class CyclingPotentiostat(Potentiostat):
    """Potentiostat with galvanostatic cycling (``Technique.cycling``) and capacity readbacks."""

    cycles = Cpt(CheckedSignal, "cycles", kind=Kind.config)
    c_rate_current = Cpt(EpicsSignalRO, "c_rate_current", kind=Kind.config)
    capacity = Cpt(EpicsSignalRO, "capacity", kind=Kind.hinted)
    half_cycle = Cpt(EpicsSignalRO, "half_cycle", kind=Kind.normal)
    direction = Cpt(EpicsSignalRO, "direction", string=True, kind=Kind.normal)


class Shutter(TwoStateDevice):
    """Fast shutter: ``set("open")`` / ``set("close")`` finish when it has moved;
    ``stop()`` closes it."""

    open_cmd = Cpt(CompletionSignal, "open", expected=0.02, kind=Kind.omitted)
    open_rbv = Cpt(EpicsSignalRO, "open_rbv", kind=Kind.normal)

    command_name = "open_cmd"
    states = {"open": 1, "close": 0, "closed": 0, 1: 1, 0: 0}
    safe_state = "close"


class SampleHolder(TwoStateDevice):
    """Two-slot holder: the operando ``cell`` or the ``empty_cell`` (background)."""

    slot = Cpt(CompletionSignal, "select", string=True, expected=2.0, kind=Kind.normal)

    command_name = "slot"
    states = {"cell": "cell", "empty_cell": "empty_cell"}


class Diode(Device):
    """Beam-stop diode: the transmitted fraction at the present position."""

    trans = Cpt(EpicsSignalRO, "trans", kind=Kind.hinted)


class StorageRing(Device):
    """The storage ring: ``current`` (mA) drops to 0 at a beam dump and comes back
    at the refill; a suspender (``SuspendFloor``) waits on it. ``dump()`` dumps
    the beam (fault injection on the simulator)."""

    current = Cpt(EpicsSignalRO, "current", kind=Kind.normal)
    refill_s = Cpt(EpicsSignal, "refill_s", kind=Kind.config)
    next_dump = Cpt(EpicsSignalRO, "next_dump", kind=Kind.omitted)
    dumps = Cpt(EpicsSignalRO, "dumps", kind=Kind.omitted)
    dump_cmd = Cpt(EpicsSignal, "dump", kind=Kind.omitted)

    #: stored current with beam (mA)
    nominal_ma = 310.0

    def dump(self) -> None:
        self.dump_cmd.put(1, wait=True)


class Beam(Device):
    config = Cpt(EpicsSignalRO, "config", string=True, kind=Kind.config)
    energy_kev = Cpt(EpicsSignalRO, "energy_kev", kind=Kind.config)
    wavelength_A = Cpt(EpicsSignalRO, "wavelength_A", kind=Kind.config)
    size_h_um = Cpt(EpicsSignalRO, "size_h_um", kind=Kind.config)
    size_v_um = Cpt(EpicsSignalRO, "size_v_um", kind=Kind.config)


class ScatteringCam(HDF5Cam):
    geometry = Cpt(CharArraySignalRO, "Geometry_RBV", kind=Kind.config)
    poni_file = Cpt(CharArraySignalRO, "PoniFile_RBV", kind=Kind.config)


class SaxsCam(ScatteringCam):
    beamstop_radius = Cpt(EpicsSignalRO, "BeamstopRadius_RBV", kind=Kind.config)


class ScatteringDetector(HDF5AreaDetector):
    """A Pilatus/Eiger-like detector: int32 frames into HDF5, its pyFAI geometry as config.

    The geometry (``cam.geometry``, JSON of ``AzimuthalIntegrator.get_config()``)
    goes into every descriptor's configuration, so the run records it.
    """

    image_dtype = "<i4"
    cam = Cpt(ScatteringCam, "cam:")

    def geometry(self) -> dict:
        return json.loads(self.cam.geometry.get())


class SaxsDetector(ScatteringDetector):
    cam = Cpt(SaxsCam, "cam:")


class ScanStage(Device):
    x = Cpt(Motor, "x", labels={"motors"})
    y = Cpt(Motor, "y", labels={"motors"})


@dataclass
class SaxsStation(Station):
    clock: SimClock
    pstat: CyclingPotentiostat
    stage: ScanStage
    sample: SampleHolder
    shutter: Shutter
    diode: Diode
    beam: Beam
    saxs: SaxsDetector
    waxs: ScatteringDetector
    ring: StorageRing


def make_saxs_station(
    prefix: str = "SAXS:",
    *,
    write_path: str | Path = "",
    connect: bool = True,
    timeout: float = 10.0,
) -> SaxsStation:
    """Build the SAXS/WAXS station's devices from the IOC prefix."""
    station = SaxsStation(
        clock=SimClock(f"{prefix}clock:", name="clock"),
        pstat=CyclingPotentiostat(f"{prefix}pstat:", name="pstat"),
        stage=ScanStage(f"{prefix}stage:", name="stage"),
        sample=SampleHolder(f"{prefix}sample:", name="sample"),
        shutter=Shutter(f"{prefix}shutter:", name="shutter"),
        diode=Diode(f"{prefix}diode:", name="diode", labels={"detectors"}),
        beam=Beam(f"{prefix}beam:", name="beam"),
        saxs=SaxsDetector(
            f"{prefix}saxs:", name="saxs", write_path=write_path, labels={"detectors"}
        ),
        waxs=ScatteringDetector(
            f"{prefix}waxs:", name="waxs", write_path=write_path, labels={"detectors"}
        ),
        ring=StorageRing(f"{prefix}ring:", name="ring"),
    )
    station.attach_clock()
    if connect:
        station.wait_for_connection(timeout=timeout)
    return station
