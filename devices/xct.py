"""Ophyd devices of the operando X-ray CT station, and the factory that names them.

The PV contract is ``docs/xct-pvs.md``. ``make_xct_station(prefix)`` builds every
device from one prefix (code as configuration: the same call reaches the
simulator or a real station).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Kind

from .common import (
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

#: cell seconds the source takes to be ready (its warm-up)
SOURCE_WARMUP_S = 10.0


class ForceSensor(Device):
    """KM10z load cell read through a GSV-3USB bridge amplifier (2 mV/V at 500 N)."""

    force = Cpt(EpicsSignalRO, "force", kind=Kind.hinted)
    bridge = Cpt(EpicsSignalRO, "bridge", kind=Kind.normal)
    offset = Cpt(EpicsSignalRO, "offset", kind=Kind.config)
    tare_cmd = Cpt(EpicsSignal, "tare", kind=Kind.omitted)

    def tare(self) -> None:
        """Take the present force as the zero (only before force is applied)."""
        self.tare_cmd.put(1, wait=True)


class XraySource(TwoStateDevice):
    """Micro-focus X-ray tube: on/off (with warm-up), kV, µA and filter.

    ``set("on")``/``set(1)`` returns a status that finishes when the source is
    ready; ``set("off")`` when it is off (dark frames from then on). ``stop()``
    switches it off. ``fault`` is the interlock (1: tripped, source off; a
    suspender waits on it), ``reset()`` clears it.
    """

    on = Cpt(CompletionSignal, "on", expected=SOURCE_WARMUP_S, kind=Kind.omitted)
    on_rbv = Cpt(EpicsSignalRO, "on_rbv", kind=Kind.normal)
    kv = Cpt(CheckedSignal, "kv", kind=Kind.config)
    ua = Cpt(CheckedSignal, "ua", kind=Kind.config)
    filter = Cpt(CheckedSignal, "filter", string=True, kind=Kind.config)
    fault = Cpt(EpicsSignalRO, "fault", kind=Kind.omitted)
    fault_msg = Cpt(EpicsSignalRO, "fault_msg", string=True, kind=Kind.omitted)
    reset_cmd = Cpt(EpicsSignal, "reset", kind=Kind.omitted)

    def reset(self) -> None:
        """Clear the interlock fault (the source stays off until switched on)."""
        self.reset_cmd.put(1, wait=True)

    command_name = "on"
    states = {"on": 1, "off": 0, 1: 1, 0: 0}
    safe_state = "off"


class CTCam(HDF5Cam):
    objective = Cpt(CheckedSignal, "Objective", string=True, kind=Kind.config)
    binning = Cpt(CheckedSignal, "BinX", kind=Kind.config)
    pixel_size = Cpt(EpicsSignalRO, "PixelSize_RBV", kind=Kind.config)


class CTDetector(HDF5AreaDetector):
    """Xradia-like CT detector: NumExposures images of AcquireTime averaged per frame."""

    cam = Cpt(CTCam, "cam:")


class SampleStage(Device):
    """Rotation (deg) and x/y/z translations (mm), each a motor record."""

    th = Cpt(Motor, "th", labels={"motors"})
    x = Cpt(Motor, "x", labels={"motors"})
    y = Cpt(Motor, "y", labels={"motors"})
    z = Cpt(Motor, "z", labels={"motors"})


@dataclass
class XCTStation(Station):
    """Every device of the station, named as the variables a user types."""

    clock: SimClock
    pstat: Potentiostat
    force: ForceSensor
    source: XraySource
    ct_det: CTDetector
    stage: SampleStage


def make_xct_station(
    prefix: str = "XCT:",
    *,
    write_path: str | Path = "",
    connect: bool = True,
    timeout: float = 10.0,
) -> XCTStation:
    """Build the XCT station's devices from the IOC prefix.

    ``write_path`` is the directory where the detector writes its HDF5 files (it
    must be readable by the Tiled server).
    """
    station = XCTStation(
        clock=SimClock(f"{prefix}clock:", name="clock"),
        pstat=Potentiostat(f"{prefix}pstat:", name="pstat"),
        force=ForceSensor(f"{prefix}force:", name="force", labels={"detectors"}),
        source=XraySource(f"{prefix}src:", name="source"),
        ct_det=CTDetector(
            f"{prefix}det:", name="ct_det", write_path=write_path, labels={"detectors"}
        ),
        stage=SampleStage(f"{prefix}stage:", name="stage"),
    )
    station.attach_clock()
    if connect:
        station.wait_for_connection(timeout=timeout)
    return station
