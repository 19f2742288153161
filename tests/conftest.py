"""Fixtures: real caproto IOC subprocesses on loopback, a real Tiled server, a RunEngine.

Channel Access is confined to 127.0.0.1, set in ``os.environ`` before any client
exists; each IOC gets a random prefix and a free port of its own, is waited on by
reading a PV, and is stopped in a finalizer.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from operando import epics_env

# Before ophyd/caproto/pyepics create anything: Channel Access on loopback only;
# each IOC adds its own port to the address list (see IOCProcess).
epics_env.apply(epics_env.loopback_env())
os.environ.setdefault("TILED_RETRY_ATTEMPTS", "2")

import ophyd  # noqa: E402

ophyd.set_cl("caproto")

from operando.iocs.clock import parse_time_scale  # noqa: E402
from operando.ioc_process import IOCProcess, random_prefix  # noqa: E402
from operando.tiled_server import DataLayout, TiledServer  # noqa: E402

XCT_TEST_SCALE = 400.0
#: C/20 cycling takes ~12 h of cell time: 4.4 s wall at this scale
SAXS_TEST_SCALE = 10000.0


@pytest.fixture(scope="session")
def tiled_server(tmp_path_factory):
    """A ``tiled serve catalog`` subprocess on SQLite + files, for the whole session."""
    layout = DataLayout.at(tmp_path_factory.mktemp("tiled"))
    with TiledServer(layout) as server:
        yield server


@pytest.fixture
def tiled_client(tiled_server):
    return tiled_server.client()


@pytest.fixture
def RE():
    """A RunEngine with its own event loop; ``RE.docs`` collects (name, doc) pairs."""
    from bluesky import RunEngine

    loop = asyncio.new_event_loop()
    engine = RunEngine({}, loop=loop, call_returns_result=True)
    engine.docs = []
    engine.subscribe(lambda name, doc: engine.docs.append((name, doc)))
    yield engine
    if engine.state != "idle":
        engine.halt()
    loop.call_soon_threadsafe(loop.stop)


def start_simulator(module, tmp_dir, *, time_scale, seed=0, extra=()):
    """A station simulator as a subprocess on its own loopback port, ready to use.

    The returned ``IOCProcess`` also carries ``frames_dir`` (the detectors'
    FilePath), ``truth_file`` (ground truth as JSON lines, never read by plans)
    and ``scale``. Stop it with ``.stop()``.
    """
    frames = tmp_dir / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    truth = tmp_dir / "truth.jsonl"
    ioc = IOCProcess(module, random_prefix("T"), log_path=tmp_dir / "ioc.log",
                     args=["--time-scale", time_scale, "--data-dir", frames, "--seed", seed,
                           "--truth-file", truth, *extra])
    ioc.frames_dir, ioc.truth_file = frames, truth
    ioc.scale = parse_time_scale(time_scale)
    return ioc.start()


def start_xct_ioc(tmp_dir, *, time_scale=XCT_TEST_SCALE, binning=4, seed=0, extra=()):
    return start_simulator("operando.iocs.xct", tmp_dir, time_scale=time_scale, seed=seed,
                           extra=["--binning", binning, *extra])


@pytest.fixture(scope="module")
def xct_ioc(tmp_path_factory, tiled_server):
    """The XCT station simulator; its frames land where the Tiled server may read."""
    base = tiled_server.layout.frames / f"xct-{random_prefix('m')[:-1]}"
    ioc = start_xct_ioc(base)
    yield ioc
    ioc.stop()


@pytest.fixture(scope="module")
def xct(xct_ioc):
    """The XCT station's ophyd devices, connected to ``xct_ioc``."""
    from operando.devices.xct import make_xct_station

    station = make_xct_station(xct_ioc.prefix, write_path=xct_ioc.frames_dir, timeout=15)
    yield station
    for dev in station.devices().values():
        dev.destroy()


def start_saxs_ioc(tmp_dir, *, time_scale=SAXS_TEST_SCALE, beamline="synchrotron", seed=0,
                   extra=()):
    return start_simulator("operando.iocs.saxs", tmp_dir, time_scale=time_scale, seed=seed,
                           extra=["--beamline", beamline, *extra])


@pytest.fixture(scope="module")
def saxs_ioc(tmp_path_factory):
    """The SAXS/WAXS station simulator (synchrotron set-up) at ``SAXS_TEST_SCALE``."""
    ioc = start_saxs_ioc(tmp_path_factory.mktemp("saxs"))
    yield ioc
    ioc.stop()
