"""A RunEngine wired to Tiled: raw runs through ``TiledWriter``, a backup when Tiled is down."""

from __future__ import annotations

import logging
from pathlib import Path

from bluesky import RunEngine

from .tiled_server import runs_container

logger = logging.getLogger(__name__)


def make_tiled_writer(client, *, backup_directory: str | Path | None = None,
                      batch_size: int = 1):
    """``TiledWriter`` into the runs container of ``client``.

    ``batch_size=1`` makes rows visible while a run is going; ``backup_directory``
    keeps every document of a run Tiled refused as JSON lines, so nothing
    recorded is lost when the server goes away.
    """
    from bluesky_tiled_plugins import TiledWriter

    if backup_directory is not None:
        Path(backup_directory).mkdir(parents=True, exist_ok=True)
    return TiledWriter(runs_container(client), batch_size=batch_size,
                       backup_directory=str(backup_directory) if backup_directory else None)


def make_run_engine(tiled_client=None, *, backup_directory=None, md: dict | None = None,
                    main_thread: bool = True) -> RunEngine:
    """A RunEngine writing every run into Tiled (when a client is given)."""
    kwargs = {} if main_thread else {"context_managers": []}
    RE = RunEngine(dict(md or {}), call_returns_result=True, **kwargs)
    if tiled_client is not None:
        RE.subscribe(make_tiled_writer(tiled_client, backup_directory=backup_directory))
    return RE
