"""Fixtures of the integration tier: real caproto IOC subprocesses on loopback, a
real Tiled server.

Channel Access is confined to 127.0.0.1, set in ``os.environ`` when this file is
imported, i.e. before any test module of this tier imports ophyd (pyepics reads
the variables once, when ophyd loads it). The unit tier never imports this file;
when both tiers run in one session the environment is restored after the last
test of this one. Starting a simulator: ``simulators.py``.
"""

from __future__ import annotations

import os

import pytest

from operando import epics_env

# Before ophyd/caproto/pyepics create anything: Channel Access on loopback only;
# each IOC adds its own port to the address list (see IOCProcess).
_LOOPBACK = epics_env.loopback_env()
_BEFORE = {key: os.environ.get(key) for key in (*_LOOPBACK, "TILED_RETRY_ATTEMPTS")}
epics_env.apply(_LOOPBACK)
os.environ.setdefault("TILED_RETRY_ATTEMPTS", "2")

import ophyd  # noqa: E402

ophyd.set_cl("caproto")

from operando.ioc_process import random_prefix  # noqa: E402
from operando.tiled_server import DataLayout, TiledServer  # noqa: E402

from . import ca_client  # noqa: E402
from .simulators import start_saxs_ioc, start_xct_ioc  # noqa: E402

#: the files that cost most, most first (CPU of each file's process tree, each file
#: alone: ``benchmarks/bench_suite.py`` prints this list): the workers take files in
#: this order, so that no long file starts last and runs alone while the others idle
SLOWEST_FIRST = (
    "test_follow.py",
    "test_export.py",
    "test_cli.py",
    "test_resume_experiment.py",
    "test_xct_reduction_live.py",
    "test_virtual_time.py",
    "test_tiled_outage.py",
    "test_saxs_cell_record.py",
    "test_saxs_reduction_live.py",
    "test_signals.py",
    "test_postgres.py",
    "test_xct_experiment.py",
    "test_profile.py",
    "test_queue.py",
)


def pytest_collection_modifyitems(session, config, items):
    """The slowest files first (:data:`SLOWEST_FIRST`), the others after in their
    order; a file's tests keep theirs (the sort is stable)."""
    rank = {name: k for k, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="package", autouse=True)
def _integration_environment():
    """The variables this tier sets (above) while its tests run; restored after."""
    yield
    for key, value in _BEFORE.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module", autouse=True)
def ca_context():
    """One Channel Access client context per test module (``ca_client``), dropped after it."""
    yield
    ca_client.disconnect()


@pytest.fixture(scope="session")
def tiled_server(tmp_path_factory):
    """A ``tiled serve catalog`` subprocess on SQLite + files, for the whole session."""
    layout = DataLayout.at(tmp_path_factory.mktemp("tiled"))
    with TiledServer(layout) as server:
        yield server


@pytest.fixture
def tiled_client(tiled_server):
    return tiled_server.client()


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


@pytest.fixture(scope="module")
def saxs_ioc(tmp_path_factory):
    """The SAXS/WAXS station simulator (synchrotron set-up) at ``SAXS_TEST_SCALE``."""
    ioc = start_saxs_ioc(tmp_path_factory.mktemp("saxs"))
    yield ioc
    ioc.stop()
