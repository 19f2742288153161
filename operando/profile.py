"""What the IPython profile (``profile_collection/startup``) builds for a user session.

Configuration, all optional:

- ``OPERANDO_XCT_PREFIX``, ``OPERANDO_SAXS_PREFIX``: PV prefixes of running
  XCT and SAXS/WAXS stations. Unset: the simulators are started for the
  session (and stopped when it ends).
- ``OPERANDO_TIME_SCALE``: the simulators' clock speed-up (default 1), or
  ``virtual`` (cell time advances only while the RunEngine waits on the station).
- ``OPERANDO_TILED_URI`` + ``TILED_API_KEY``: an existing Tiled server. Unset:
  the embedded catalog under ``OPERANDO_DATA_DIR`` (default ``./data``).
- ``OPERANDO_EXPERIMENT_ID``: the session's experiment id (default: a new
  timestamped ``session-YYYYmmdd-HHMMSS``), recorded in every run a plan is not
  given one for.
- ``OPERANDO_LIVE_PLOTS``: a directory for the live plots' PNGs (default
  ``DATA_DIR/live-plots`` when matplotlib is headless; none on a screen).
- ``OPERANDO_PROGRESS=1``: the progress bar even when the output is not a terminal.

The RunEngine's metadata ``RE.md`` lives in ``DATA_DIR/session-md`` (bluesky's
``PersistentDict``): ``scan_id`` and whatever the user puts there carry over
from one session to the next. See ``docs/session.md``.

Under the queue server (its RE Worker, which runs no atexit handler) nothing is
started: the stations and Tiled must be named (``operando queue start`` does),
and the live plots are off.
"""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path

from . import epics_env
from .ioc_process import IOCProcess, random_prefix
from .tiled_server import DataLayout, TiledServer


def under_queue_server() -> bool:
    """True in bluesky-queueserver's RE Worker."""
    try:
        from bluesky_queueserver import is_re_worker_active
    except ImportError:
        return False
    return is_re_worker_active()


def _must_be_running(what: str, env_var: str) -> None:
    if under_queue_server():
        raise RuntimeError(
            f"under the queue server {what} must be running already: set {env_var} "
            "(`operando queue start` does)"
        )


def data_layout() -> DataLayout:
    layout = DataLayout.at(os.environ.get("OPERANDO_DATA_DIR", "data"))
    layout.create()
    return layout


def connect_tiled():
    """A Tiled client: ``OPERANDO_TILED_URI``, or the embedded catalog started now."""
    uri = os.environ.get("OPERANDO_TILED_URI")
    if uri:
        from tiled.client import from_uri

        return from_uri(uri, api_key=os.environ.get("TILED_API_KEY"))
    _must_be_running("Tiled", "OPERANDO_TILED_URI")
    server = TiledServer(data_layout()).start()
    atexit.register(server.stop)
    print(f"Tiled (embedded) at {server.uri}, API key in {server.layout.api_key_file}")
    return server.client()


def new_experiment_id(stem: str = "session") -> str:
    """A timestamped experiment id: ``session-20261201-143502``."""
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def session_md(directory: str | Path):
    """``RE.md`` kept in ``directory`` (bluesky's ``PersistentDict``, one file per key)."""
    from bluesky.utils import PersistentDict

    Path(directory).mkdir(parents=True, exist_ok=True)
    return PersistentDict(str(directory))


def start_experiment(RE, experiment_id: str | None = None) -> str:
    """Make ``experiment_id`` (default: a new timestamped one) the session's own:
    every run a plan is not given an ``experiment_id`` for records it."""
    RE.md["experiment_id"] = experiment_id or new_experiment_id()
    return RE.md["experiment_id"]


def tame_best_effort(bec):
    """The BestEffortCallback's table of the primary stream, without its plots
    (the live views draw what fits each plan) or its baseline tables."""
    bec.disable_plots()
    bec.disable_baseline()
    return bec


def live_plots_dir() -> Path | None:
    """Where the live views save PNGs: ``OPERANDO_LIVE_PLOTS``, else
    ``DATA_DIR/live-plots`` when matplotlib is headless, else nowhere."""
    from .live_views import headless

    env = os.environ.get("OPERANDO_LIVE_PLOTS")
    if env:
        return Path(env)
    return data_layout().root / "live-plots" if headless() else None


def make_user_run_engine(tiled_client, *, md_directory: str | Path | None = None):
    """RunEngine + TiledWriter, ``RE.md`` persistent, the session's experiment id,
    the BestEffortCallback's table (``RE.bec``) and the live views (``RE.live_views``)."""
    from bluesky.callbacks.best_effort import BestEffortCallback

    from .live_views import LiveViews
    from .session import make_run_engine

    layout = data_layout()
    md = session_md(md_directory or layout.root / "session-md")
    RE = make_run_engine(tiled_client, backup_directory=layout.backup)
    md.update(RE.md)  # the versions the RunEngine records
    RE.md = md
    start_experiment(RE, os.environ.get("OPERANDO_EXPERIMENT_ID"))
    bec = tame_best_effort(BestEffortCallback())
    RE.subscribe(bec)
    RE.bec = bec
    RE.live_views = LiveViews(live_plots_dir())
    RE.subscribe(RE.live_views)
    return RE


def make_magics_run_engine(*clocks):
    """The RunEngine behind bluesky's magics (``%mov``, ``%ct``...): nothing is
    recorded, and on virtual time the stations' clocks follow it."""
    from bluesky import RunEngine

    from .session import synchronize_clock
    from .shutdown import PollingDuringTask

    RE = RunEngine({}, during_task=PollingDuringTask())
    for clock in clocks:
        synchronize_clock(RE, clock)
    return RE


def expose_station(station):
    """Let bluesky's ``%wa``/``%ct`` find a station's labelled devices through
    the station object (``saxs.stage.x``), as they find a device's children
    (bluesky's ``get_labeled_devices`` walks ``component_names``/``read_attrs``)."""
    names = list(station.devices())
    station._ophyd_labels_ = set()
    station.component_names = names
    station.read_attrs = names
    return station


def register_magics(ipython, RE_magics) -> None:
    """bluesky's magics (``%wa``, ``%mov``, ``%movr``, ``%ct``) and ``%wh``
    (the overview of every station in the namespace)."""
    if under_queue_server():  # the RE Worker's IPython stand-in has no magics
        return
    from bluesky.magics import BlueskyMagics
    from IPython.core.magic import register_line_magic

    from .devices.common import Station
    from .overview import overview

    BlueskyMagics.RE = RE_magics
    ipython.register_magics(BlueskyMagics)

    def wh(line):
        """Overview of the stations named (``%wh xct``), or of all of them."""
        ns = ipython.user_ns
        names = line.split() or [
            k for k, v in ns.items() if isinstance(v, Station) and not k.startswith("_")
        ]
        print("\n\n".join(overview(ns[name], name) for name in names))

    register_line_magic(wh)


def _station_prefix(kind: str, module: str, stem: str, env_var: str) -> tuple[str, object]:
    """The prefix of a running station (``env_var``) or of its simulator started now."""
    epics_env.use_loopback_if_unset()
    layout = data_layout()
    frames = layout.frames / kind
    frames.mkdir(parents=True, exist_ok=True)
    prefix = os.environ.get(env_var)
    if not prefix:
        _must_be_running(f"the {kind.upper()} station", env_var)
        prefix = random_prefix(stem)
        scale = os.environ.get("OPERANDO_TIME_SCALE", "1")
        ioc = IOCProcess(
            module,
            prefix,
            args=["--time-scale", scale, "--data-dir", frames],
            log_path=layout.root / f"{kind}-ioc.log",
        ).start()
        atexit.register(ioc.stop)
        print(f"{kind.upper()} simulators at prefix {prefix} (time scale {scale})")
    return prefix, frames


def xct_station():
    """The XCT station: at ``OPERANDO_XCT_PREFIX``, or on simulators started now."""
    from .devices.xct import make_xct_station

    prefix, frames = _station_prefix("xct", "operando.iocs.xct", "XCT", "OPERANDO_XCT_PREFIX")
    return _disconnect_at_exit(make_xct_station(prefix, write_path=Path(frames)))


def saxs_station():
    """The SAXS/WAXS station: at ``OPERANDO_SAXS_PREFIX``, or on simulators started now."""
    from .devices.saxs import make_saxs_station

    prefix, frames = _station_prefix("saxs", "operando.iocs.saxs", "SAXS", "OPERANDO_SAXS_PREFIX")
    return _disconnect_at_exit(make_saxs_station(prefix, write_path=Path(frames)))


def _disconnect_at_exit(station):
    """Drop the devices' Channel Access subscriptions when the session ends
    (before simulators started for it stop: ``atexit`` runs last-in first-out)."""

    def disconnect():
        for dev in station.devices().values():
            dev.destroy()

    atexit.register(disconnect)
    return station
