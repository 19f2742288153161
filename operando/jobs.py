"""Headless jobs: simulators + Tiled + RunEngine + a plan, as ``operando run`` does them."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import epics_env
from .ioc_process import IOCProcess, random_prefix
from .tiled_server import DataLayout, TiledServer

logger = logging.getLogger(__name__)


@dataclass
class TiledTarget:
    """Where runs go: an existing server (uri + key) or the embedded one on ``layout``."""

    uri: str | None
    api_key: str | None
    layout: DataLayout


@dataclass
class JobReport:
    experiment_id: str
    runs: list
    tiled_uri: str
    data_dir: Path
    frames_dir: Path
    wall_s: float
    failure: dict | None = None
    extra: dict = field(default_factory=dict)


@contextlib.contextmanager
def tiled_client(target: TiledTarget):
    """A Tiled client: the given server, or the embedded one started for the job."""
    if target.uri:
        from tiled.client import from_uri

        yield from_uri(target.uri, api_key=target.api_key), target.uri
        return
    with TiledServer(target.layout) as server:
        yield server.client(), server.uri


@contextlib.contextmanager
def simulators(module: str, *, prefix: str | None, args: list, log_path: Path):
    """Start the station simulator unless ``prefix`` names IOCs already running."""
    if prefix:
        epics_env.use_loopback_if_unset()
        yield None
        return
    epics_env.use_loopback_if_unset()
    prefix = random_prefix(module.rsplit(".", 1)[-1].upper())
    with IOCProcess(module, prefix, args=[*args, "--hold"], log_path=log_path) as ioc:
        ioc.clock_hold = True
        yield ioc


def run_xct(*, target: TiledTarget, cycles: int, time_scale: float, projections: int,
            binning: int, prefix: str | None = None, seed: int = 0,
            exposure: float = 1.5, images_per_projection: int = 3,
            postmortem: bool = True, postmortem_projections: int | None = None,
            experiment_id: str | None = None, progress: bool = True,
            ocv_hours: float = 3.0, plating_hours: float = 6.0,
            sample_every: float = 60.0) -> JobReport:
    """The operando XCT protocol on the simulated (or a real) station, into Tiled."""
    import ophyd

    from .devices.xct import make_xct_station
    from .plans.xct import HOUR, xct_operando
    from .progress import ExperimentProgress
    from .session import make_run_engine

    layout = target.layout
    layout.create()
    frames = layout.frames / "xct"
    frames.mkdir(parents=True, exist_ok=True)
    args = ["--time-scale", time_scale, "--data-dir", frames, "--seed", seed,
            "--binning", binning, "--truth-file", layout.root / "xct-truth.jsonl"]
    t_wall = time.monotonic()
    with tiled_client(target) as (client, uri), \
            simulators("operando.iocs.xct", prefix=prefix, args=args,
                       log_path=layout.root / "xct-ioc.log") as ioc:
        pv_prefix = ioc.prefix if ioc else prefix
        ophyd.set_cl("caproto")
        ophyd.signal.EpicsSignalBase.set_defaults(timeout=10.0, connection_timeout=10.0)
        station = make_xct_station(pv_prefix, write_path=frames)
        RE = make_run_engine(client, backup_directory=layout.backup)
        progress_cb = None
        if progress:
            total = cycles * (ocv_hours + plating_hours)
            progress_cb = ExperimentProgress(total, cycles=cycles)
            RE.subscribe(progress_cb)
        if ioc is not None:
            ioc.release_hold()  # cell time 0: the assembled cell, as the protocol starts
        try:
            result = RE(xct_operando(
                station, cycles=cycles, num_projections=projections, exposure=exposure,
                images_per_projection=images_per_projection, ocv_duration=ocv_hours * HOUR,
                plating_duration=plating_hours * HOUR, sample_every=sample_every,
                do_postmortem=postmortem, postmortem_projections=postmortem_projections,
                experiment_id=experiment_id)).plan_result
        finally:
            if progress_cb is not None:
                progress_cb.close()
            _disconnect(station)
    return JobReport(experiment_id=result.experiment_id, runs=result.runs, tiled_uri=uri,
                     data_dir=layout.root, frames_dir=frames,
                     wall_s=time.monotonic() - t_wall, failure=result.failure)


def _disconnect(station) -> None:
    """Drop the devices' subscriptions before the simulators stop."""
    for dev in station.devices().values():
        dev.destroy()


def run_saxs(*, target: TiledTarget, beamline: str, cycles: int, time_scale: float,
             shape: tuple[int, int], raster_every: float | None, prefix: str | None = None,
             seed: int = 0, c_rate: float = 1 / 20, exposure: float | None = None,
             experiment_id: str | None = None, progress: bool = True,
             figures_dir: Path | None = None, reduce: bool = True) -> JobReport:
    """The scanning operando SAXS/WAXS experiment on the simulated (or a real) station."""
    import ophyd

    from .devices.saxs import make_saxs_station
    from .plans.saxs import saxs_waxs_operando
    from .progress import ExperimentProgress
    from .session import make_run_engine

    layout = target.layout
    layout.create()
    frames = layout.frames / "saxs"
    frames.mkdir(parents=True, exist_ok=True)
    args = ["--time-scale", time_scale, "--data-dir", frames, "--seed", seed,
            "--beamline", beamline, "--truth-file", layout.root / "saxs-truth.jsonl"]
    t_wall = time.monotonic()
    extra = {}
    with tiled_client(target) as (client, uri), \
            simulators("operando.iocs.saxs", prefix=prefix, args=args,
                       log_path=layout.root / "saxs-ioc.log") as ioc:
        pv_prefix = ioc.prefix if ioc else prefix
        ophyd.set_cl("caproto")
        ophyd.signal.EpicsSignalBase.set_defaults(timeout=10.0, connection_timeout=10.0)
        station = make_saxs_station(pv_prefix, write_path=frames)
        RE = make_run_engine(client, backup_directory=layout.backup)
        reducer = None
        if reduce:
            from .callbacks.saxs_live import SaxsLiveReducer

            reducer = SaxsLiveReducer(client, figures_dir=figures_dir)
            RE.subscribe(reducer)
        progress_cb = None
        if progress:
            progress_cb = ExperimentProgress(cycles / c_rate, cycles=cycles)
            RE.subscribe(progress_cb)
        if ioc is not None:
            ioc.release_hold()
        try:
            result = RE(saxs_waxs_operando(
                station, cycles=cycles, c_rate=c_rate, shape=shape, raster_every=raster_every,
                exposure=exposure, experiment_id=experiment_id)).plan_result
        finally:
            if progress_cb is not None:
                progress_cb.close()
            if reducer is not None:
                reducer.flush(timeout=600)
            _disconnect(station)
        if figures_dir is not None:
            extra["figures"] = figures_dir
    return JobReport(experiment_id=result.experiment_id, runs=result.runs, tiled_uri=uri,
                     data_dir=layout.root, frames_dir=frames,
                     wall_s=time.monotonic() - t_wall, extra=extra)
