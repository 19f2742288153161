"""The reconstruction's slabs on ``dask.distributed``: a ``LocalCluster`` and a
scheduler started as its own process (``dask scheduler`` + ``dask worker``,
as on a cluster, found through ``$OPERANDO_DASK_SCHEDULER``) give the volume
the in-process loop gives, to the bit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from operando.callbacks.xct.science import reconstruction as rec
from operando.tiled_server import free_port

DASK = [str(Path(sys.executable).with_name("dask"))]
N_ANG, N_ROW, N_COL = 181, 20, 64
CENTER = (N_COL - 1) / 2 + 1.5


@pytest.fixture(scope="module")
def scan():
    """Raw counts of discs (a cell wider than the field, particles) over 360°."""
    rng = np.random.default_rng(3)
    angles = np.linspace(0.0, 360.0, N_ANG)
    th = np.deg2rad(angles)[:, None]
    s = np.arange(N_COL)[None, :] - CENTER
    discs = [(0.0, 0.0, 0.7 * N_COL, 0.002)] + [
        (rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(1.5, 4.0), 0.03) for _ in range(12)
    ]
    sino = np.zeros((N_ANG, N_COL))
    for x0, y0, r, mu in discs:
        p = x0 * np.cos(th) + y0 * np.sin(th)
        sino += mu * 2 * np.sqrt(np.clip(r * r - (s - p) ** 2, 0, None))
    li = sino[:, None, :] * np.linspace(0.8, 1.2, N_ROW)[None, :, None]
    proj = rng.poisson(20000.0 * np.exp(-li)).astype(np.uint16)
    flats = rng.poisson(20000.0, (3, N_ROW, N_COL)).astype(np.uint16)
    darks = np.zeros((2, N_ROW, N_COL), np.uint16)
    return {"angles": angles, "proj": proj, "flats": flats, "darks": darks}


def _reconstruct(scan, **kwargs):
    return rec.reconstruct(
        scan["proj"],
        scan["angles"],
        flats=scan["flats"],
        darks=scan["darks"],
        center=CENTER,
        chunk_rows=3,
        **kwargs,
    )


def test_local_cluster_gives_the_in_process_volume(scan, monkeypatch):
    monkeypatch.delenv(rec.SCHEDULER_ENV, raising=False)
    here = _reconstruct(scan, workers=1)
    assert here.shape == (N_ROW, N_COL, N_COL) and np.isfinite(here).all()
    assert here.std() > 0
    on_cluster = _reconstruct(scan, workers=2)
    client = rec.dask_client(workers=2)
    assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_array_equal(on_cluster, here)


def _ready(address: str, n_workers: int, timeout: float = 60.0):
    from distributed import Client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client = Client(address, timeout="2s", set_as_default=False)
        except OSError:
            time.sleep(0.3)
            continue
        if len(client.scheduler_info()["workers"]) >= n_workers:
            return client
        client.close()
        time.sleep(0.3)
    raise TimeoutError(f"no {n_workers} dask workers at {address} within {timeout} s")


def test_a_scheduler_address_from_the_environment(scan, tmp_path, monkeypatch):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "dask.log", "wb")
    procs = [
        subprocess.Popen(
            DASK
            + ["scheduler", "--host", "127.0.0.1", "--port", str(port)]
            + ["--dashboard-address", ":0", "--no-show"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        procs.append(
            subprocess.Popen(
                DASK
                + ["worker", address, "--nworkers", "2", "--nthreads", "1"]
                + ["--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        observer = _ready(address, 2)
        monkeypatch.setenv(rec.SCHEDULER_ENV, address)
        remote = _reconstruct(scan, workers=2)
        done = observer.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.task_prefixes["reconstruct_block"].state_counts[
                "memory"
            ]
        )
        observer.close()
        rec.close_clients()
        monkeypatch.delenv(rec.SCHEDULER_ENV)
        here = _reconstruct(scan, workers=1)
        np.testing.assert_array_equal(remote, here)
        assert done == -(-N_ROW // 3)  # every slab went through that scheduler
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        log.close()
