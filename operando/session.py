"""A RunEngine wired to Tiled: raw runs through the ingest (``TiledWriter`` off the
RunEngine's thread, :mod:`operando.ingest`), a backup when Tiled is down."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from bluesky import RunEngine

from .tiled_server import runs_container

logger = logging.getLogger(__name__)


def make_tiled_writer(client, *, backup_directory: str | Path | None = None, batch_size: int = 1):
    """``TiledWriter`` into the runs container of ``client``.

    ``batch_size=1`` makes rows visible while a run is going; ``backup_directory``
    keeps every document of a run Tiled refused as JSON lines, so nothing
    recorded is lost when the server goes away.
    """
    from bluesky_tiled_plugins import TiledWriter

    if backup_directory is not None:
        Path(backup_directory).mkdir(parents=True, exist_ok=True)
    return TiledWriter(
        runs_container(client),
        batch_size=batch_size,
        backup_directory=str(backup_directory) if backup_directory else None,
    )


def make_ingest(client, *, backup_directory: str | Path | None = None, **kwargs):
    """The project's ingest into the runs container of ``client``'s server
    (:class:`operando.ingest.TiledIngest`): TiledWriter in a process of its own,
    rows and frames flushed by time (about a second after their event), a
    JSON-lines backup of any run Tiled refuses. Subscribe it to a RunEngine;
    ``shutdown()`` drains it."""
    from .ingest import TiledIngest

    if backup_directory is not None:
        Path(backup_directory).mkdir(parents=True, exist_ok=True)
    runs_container(client)  # created here, before the first run
    return TiledIngest(client, backup_directory=backup_directory, **kwargs)


def make_run_engine(
    tiled_client=None,
    *,
    backup_directory=None,
    md: dict | None = None,
    main_thread: bool = True,
    clock=None,
    loop=None,
) -> RunEngine:
    """A RunEngine writing every run into Tiled (when a client is given), through
    :func:`make_ingest` (``RE.ingest``; drained at exit, or by ``RE.ingest.shutdown()``).

    With the station's ``clock`` device, a simulator on virtual time is
    synchronized with it (:func:`synchronize_clock`).
    """
    from .shutdown import PollingDuringTask

    # the caller waits in slices: a signal another thread took is handled at once
    kwargs = {"during_task": PollingDuringTask()} if main_thread else {"context_managers": []}
    if loop is not None:
        kwargs["loop"] = loop
    RE = RunEngine(dict(md or {}), call_returns_result=True, **kwargs)
    RE.ingest = None
    if tiled_client is not None:
        RE.ingest = make_ingest(tiled_client, backup_directory=backup_directory)
        RE.subscribe(RE.ingest)
    if clock is not None:
        synchronize_clock(RE, clock)
    return RE


def tell_waiting(clock, mode: int) -> None:
    """Put ``clock:waiting`` (0 busy, 1 waiting on its operations, 2 waiting out
    a condition), without waiting for the put. An IOC away (restarting) has no
    clock to tell; one that has just gone (the put fails before the
    disconnection is noticed) neither: the connection suspender takes over, and
    the RunEngine's wait must not fail the plan."""
    if not clock.waiting.connected:
        return
    try:
        clock.waiting.put(mode, wait=False)
    except Exception as err:  # noqa: BLE001
        logger.info("clock:waiting %s not sent (%r): the IOC is going away", mode, err)


def synchronize_clock(RE: RunEngine, clock) -> bool:
    """Let a simulator on virtual time advance only while ``RE`` waits on the hardware.

    The RunEngine's ``wait`` puts ``clock:waiting`` 1 before it waits and 0 after,
    and ``clock:sync`` 1 tells the simulator to advance only meanwhile. Every
    operation a plan starts before a wait (two exposures, two moves) then starts
    at the same cell time, and nothing the plan does between waits (reading,
    writing to Tiled, its own logic) takes cell time. Returns False (and does
    nothing) when the clock is not virtual (a real or a scaled station).
    """
    if not int(clock.virtual.get()):
        return False
    wait = RE._command_registry["wait"]

    async def wait_on_hardware(msg):
        tell_waiting(clock, 1)
        try:
            return await wait(msg)
        finally:
            tell_waiting(clock, 0)

    RE.register_command("wait", wait_on_hardware)
    clock.waiting.put(0, wait=True)
    clock.sync.put(1, wait=True)
    return True


class TimedCallback:
    """A document callback that also counts the wall seconds it spends (``seconds``)."""

    def __init__(self, callback):
        self.callback = callback
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, name, doc):
        t0 = time.perf_counter()
        try:
            return self.callback(name, doc)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def backup_files(backup_directory: str | Path) -> list[Path]:
    """The JSON-lines backups TiledWriter wrote (one file per run), oldest first."""
    d = Path(backup_directory)
    return sorted(d.glob("*.jsonl"), key=lambda p: p.stat().st_mtime) if d.is_dir() else []


def replay_backup(path: str | Path, client, *, replace_partial: bool = True) -> str:
    """Write a run kept in a TiledWriter backup file into Tiled; return its uid.

    A run Tiled refused part-way may exist there incomplete (no stop document);
    with ``replace_partial`` it is deleted and written again whole. A complete
    run already in Tiled is left alone. The detector files are not touched:
    the run points at them as before.
    """
    import json

    docs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not docs or docs[0]["name"] != "start":
        raise ValueError(f"{path} does not start with a start document")
    uid = docs[0]["doc"]["uid"]
    runs = runs_container(client)
    if uid in runs:
        if runs[uid].metadata.get("stop"):
            logger.info("run %s is already complete in Tiled", uid)
            return uid
        if not replace_partial:
            raise RuntimeError(f"run {uid} exists in Tiled, incomplete")
        runs[uid].delete(recursive=True, external_only=False)
    writer = make_tiled_writer(client, batch_size=1000)
    for item in docs:
        writer(item["name"], item["doc"])
    return uid
