"""Headless jobs: simulators + Tiled + RunEngine + a plan, as ``operando run`` does them."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import epics_env, shutdown
from .ioc_process import IOCProcess, random_prefix
from .tiled_server import DataLayout, TiledServer

logger = logging.getLogger(__name__)

#: wall seconds the live reduction gets to finish after a signal stopped the job
#: (a batch system's grace period before SIGKILL is often 30-90 s); what it does
#: not finish, ``operando reduce`` redoes from Tiled
INTERRUPTED_FLUSH_S = 20.0


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
    """Start the station simulator (clock held until the job releases it) unless
    ``prefix`` names IOCs already running; yields the ``IOCProcess`` or None."""
    epics_env.use_loopback_if_unset()
    if prefix:
        yield None
        return
    prefix = random_prefix(module.rsplit(".", 1)[-1].upper())
    with IOCProcess(module, prefix, args=[*args, "--hold"], log_path=log_path) as ioc:
        yield ioc


def _station_job(
    *,
    target: TiledTarget,
    station_name: str,
    make_station,
    ioc_args: list,
    prefix: str | None,
    plan_factory,
    reducer_factory,
    progress_hours: float,
    cycles: int,
    progress: bool,
    figures_dir: Path | None,
    after_reduction=None,
) -> tuple:
    """Simulators (unless ``prefix``), Tiled, the station, a RunEngine with
    TiledWriter (+ backup), the live reducer and the progress bar; runs the plan
    made by ``plan_factory(station, client)`` and returns ``(plan result, uri, frames dir)``;
    ``after_reduction(client)`` runs once the live reduction is flushed.
    The plan result gains ``cell_time_s``, the station's cell time at the end.
    """
    import ophyd
    from bluesky.utils import RunEngineInterrupted

    from .session import TimedCallback, make_ingest, make_run_engine
    from .suspenders import install_suspenders

    # SIGINT/SIGTERM: the command's guard (operando.shutdown), if it has one
    guard = shutdown.active()
    ledger = shutdown.RunLedger()
    layout = target.layout
    layout.create()
    frames = layout.frames / station_name
    frames.mkdir(mode=0o700, parents=True, exist_ok=True)
    args = [
        *ioc_args,
        "--data-dir",
        frames,
        "--truth-file",
        layout.root / f"{station_name}-truth.jsonl",
    ]
    uri = target.uri
    stopped_by = None
    notes: list[str] = []
    # After the plan, a signal must not break the draining nor the children's
    # stop: the guard is shielded from there until both have stopped.
    shield = contextlib.ExitStack()
    try:
        with (
            shield,
            tiled_client(target) as (client, uri),
            simulators(
                f"operando.iocs.{station_name}",
                prefix=prefix,
                args=args,
                log_path=layout.root / f"{station_name}-ioc.log",
            ) as ioc,
        ):
            ophyd.set_cl("caproto")
            with contextlib.suppress(RuntimeError):  # set once per process, by the first job
                ophyd.signal.EpicsSignalBase.set_defaults(timeout=10.0, connection_timeout=10.0)
            station = make_station(ioc.prefix if ioc else prefix, write_path=frames)
            RE = make_run_engine(clock=station.clock)
            install_suspenders(RE, station)  # beam dump, source fault, IOC away: suspend
            if guard is not None:
                guard.attach(RE)  # a signal aborts the plan (bluesky's SigintHandler would pause)
            RE.subscribe(ledger)
            # TiledWriter in a process of its own (a slow Tiled never slows the
            # acquisition), rows and frames flushed by time, any run Tiled refuses
            # kept in the backup.
            ingest = make_ingest(client, backup_directory=layout.backup)
            RE.subscribe(ingest)
            reducer = reducer_factory(client, figures_dir) if reducer_factory else None
            reducer_cb = TimedCallback(reducer) if reducer is not None else None
            if reducer_cb is not None:
                RE.subscribe(reducer_cb)
            progress_cb = None
            if progress:
                from .progress import ExperimentProgress

                progress_cb = ExperimentProgress(progress_hours, cycles=cycles)
                RE.subscribe(progress_cb)
            live_plots = os.environ.get("OPERANDO_LIVE_PLOTS")
            if live_plots:  # operando run --live-plots DIR
                from .live_views import LiveViews

                RE.subscribe(LiveViews(live_plots, screen=False))
            if guard is not None:
                guard.check()  # a signal while starting: nothing has moved yet
            if ioc is not None:
                ioc.release_hold()  # cell time 0: the assembled cell, as the protocol starts
            t0 = time.perf_counter()
            try:
                result = RE(plan_factory(station, client)).plan_result
                result.cell_time_s = float(station.clock.time.get())
            except RunEngineInterrupted:
                # aborted by the guard: cleanup done, stop documents emitted
                if guard is None or guard.signum is None:
                    raise
                stopped_by = guard.signum
            finally:
                if guard is not None:
                    shield.enter_context(guard.shielded())
                t_plan = time.perf_counter() - t0
                if progress_cb is not None:
                    progress_cb.close()
                ingest.shutdown(wait=True)  # every document of every run in Tiled (or the backup)
                t_ingest = time.perf_counter() - t0 - t_plan
                if reducer is not None:
                    interrupted = guard is not None and guard.signum is not None
                    finished = reducer.flush(timeout=INTERRUPTED_FLUSH_S if interrupted else 1800)
                    if interrupted and finished is False:
                        notes.append(
                            "The live reduction did not finish: "
                            "`operando reduce` redoes it from Tiled."
                        )
                    unwritten = getattr(reducer, "unwritten", [])
                    if unwritten:
                        note = (
                            f"{len(unwritten)} live reduction(s) could not be written to "
                            "Tiled (it was away): `operando reduce` redoes them from Tiled."
                        )
                        notes.append(note)
                        logger.error("%s Runs: %s", note, ", ".join(unwritten[:5]))
                    errors = getattr(reducer, "errors", None)
                    if errors:
                        logger.error(
                            "live reduction reported %d error(s): %s", len(errors), errors[:3]
                        )
                t_flush = time.perf_counter() - t0 - t_plan - t_ingest
                _disconnect(station)
            if after_reduction is not None and stopped_by is None:
                after_reduction(client)
    except shutdown.Interrupted as stop:
        # a signal before the plan ran (starting the simulators or Tiled)
        raise shutdown.Interrupted(
            stop.signum, ledger=ledger, data_dir=layout.root, tiled_uri=target.uri, notes=notes
        ) from None
    # A signal after the plan ended changes nothing recorded: the job reports as
    # usual and the command exits with the signal's status (guard.signum).
    if stopped_by is not None:
        raise shutdown.Interrupted(
            stopped_by, ledger=ledger, data_dir=layout.root, tiled_uri=target.uri, notes=notes
        )
    result.timing = {
        "plan_s": t_plan,  # the RunEngine's wall time, callbacks on its thread included
        "tiled_writer_s": ingest.busy_s,  # busy time of the writer's own process
        "ingest_drain_s": t_ingest,  # the writer catching up after the plan
        "reducer_callback_s": reducer_cb.seconds if reducer_cb else 0.0,
        "reduction_flush_s": t_flush,  # live reduction finishing after that
    }
    result.ingest = ingest.summary()
    return result, uri, frames


def _extra(result, figures_dir) -> dict:
    extra = {"cell_time_s": result.cell_time_s, "timing": result.timing}
    extra["ingest"] = getattr(result, "ingest", {})
    if figures_dir is not None:
        extra["figures"] = figures_dir
    return extra


def _whole_experiment(technique: str, experiment_id: str, figures_dir):
    """After a resumed job: the experiment reduced again as one, from Tiled (the
    live reduction saw only the runs of this job)."""

    def reduce(client):
        from .techniques import get

        get(technique).reduce_offline(client, experiment_id, figures_dir=figures_dir)

    return reduce


def _disconnect(station) -> None:
    """Drop the devices' subscriptions before the simulators stop."""
    for dev in station.devices().values():
        dev.destroy()


def run_xct(
    *,
    target: TiledTarget,
    cycles: int,
    time_scale: float | str,
    projections: int,
    binning: int,
    prefix: str | None = None,
    seed: int = 0,
    exposure: float = 1.5,
    images_per_projection: int = 3,
    postmortem: bool = True,
    postmortem_projections: int | None = None,
    experiment_id: str | None = None,
    progress: bool = True,
    ocv_hours: float = 3.0,
    plating_hours: float = 6.0,
    sample_every: float = 60.0,
    figures_dir: Path | None = None,
    reduce: bool = True,
    resume: str | None = None,
) -> JobReport:
    """The operando XCT protocol on the simulated (or a real) station, into Tiled,
    reduced live (reconstructions, layers, particles, figures) unless ``reduce`` is off."""
    from .constants import HOUR
    from .devices.xct import make_xct_station
    from .plans.xct import xct_operando

    def plan(station, client):
        return xct_operando(
            station,
            cycles=cycles,
            num_projections=projections,
            exposure=exposure,
            images_per_projection=images_per_projection,
            ocv_duration=ocv_hours * HOUR,
            plating_duration=plating_hours * HOUR,
            sample_every=sample_every,
            do_postmortem=postmortem,
            postmortem_projections=postmortem_projections,
            experiment_id=experiment_id,
            resume=resume,
            catalog=client,
        )

    def reducer(client, figures):
        from .techniques import get

        return get("xct").live_reducer(client, figures_dir=figures)

    t_wall = time.monotonic()
    result, uri, frames = _station_job(
        target=target,
        station_name="xct",
        make_station=make_xct_station,
        ioc_args=["--time-scale", time_scale, "--seed", seed, "--binning", binning],
        prefix=prefix,
        plan_factory=plan,
        reducer_factory=reducer if reduce else None,
        progress_hours=cycles * (ocv_hours + plating_hours),
        cycles=cycles,
        progress=progress,
        figures_dir=figures_dir,
        after_reduction=_whole_experiment("xct", experiment_id, figures_dir)
        if resume and reduce
        else None,
    )
    return JobReport(
        experiment_id=result.experiment_id,
        runs=result.runs,
        tiled_uri=uri,
        data_dir=target.layout.root,
        frames_dir=frames,
        wall_s=time.monotonic() - t_wall,
        failure=result.failure,
        extra=_extra(result, figures_dir if reduce else None),
    )


def run_saxs(
    *,
    target: TiledTarget,
    beamline: str,
    cycles: int,
    time_scale: float | str,
    shape: tuple[int, int],
    raster_every: float | None,
    prefix: str | None = None,
    seed: int = 0,
    c_rate: float = 1 / 20,
    exposure: float | None = None,
    sample_every: float = 60.0,
    experiment_id: str | None = None,
    progress: bool = True,
    figures_dir: Path | None = None,
    reduce: bool = True,
    resume: str | None = None,
) -> JobReport:
    """The scanning operando SAXS/WAXS experiment on the simulated (or a real) station,
    reduced live (pyFAI, maps, sizes, figures) unless ``reduce`` is off."""
    from .devices.saxs import make_saxs_station
    from .plans.saxs import saxs_waxs_operando

    def plan(station, client):
        return saxs_waxs_operando(
            station,
            cycles=cycles,
            c_rate=c_rate,
            shape=shape,
            raster_every=raster_every,
            exposure=exposure,
            sample_every=sample_every,
            experiment_id=experiment_id,
            resume=resume,
            catalog=client,
        )

    def reducer(client, figures):
        from .techniques import get

        return get("saxs").live_reducer(client, figures_dir=figures)

    t_wall = time.monotonic()
    result, uri, frames = _station_job(
        target=target,
        station_name="saxs",
        make_station=make_saxs_station,
        ioc_args=["--time-scale", time_scale, "--seed", seed, "--beamline", beamline],
        prefix=prefix,
        plan_factory=plan,
        reducer_factory=reducer if reduce else None,
        progress_hours=cycles / c_rate,
        cycles=cycles,
        progress=progress,
        figures_dir=figures_dir,
        after_reduction=_whole_experiment("saxs", experiment_id, figures_dir)
        if resume and reduce
        else None,
    )
    return JobReport(
        experiment_id=result.experiment_id,
        runs=result.runs,
        tiled_uri=uri,
        data_dir=target.layout.root,
        frames_dir=frames,
        wall_s=time.monotonic() - t_wall,
        extra=_extra(result, figures_dir if reduce else None),
    )
