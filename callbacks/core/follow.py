"""Runs as Tiled stores them, learnt from Tiled itself: :class:`RunFeed`.

A reduction worker on any host (``operando reduce --follow``) needs no
RunEngine documents and no shared file system: it subscribes to the runs'
container through Tiled's streaming (the server's ``streaming_cache``, a Redis),
hears of each new run (``child_created``) and of each run's stop (the stop
document lands as a metadata update of the run: ``child_metadata_updated``), and
reads the run back through Tiled. :func:`finished` says whether a run's rows are
all there. How the worker uses it: ``docs/workers.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .store import server_may_recover

__all__ = ["RunFeed", "finished", "wait_finished"]

logger = logging.getLogger(__name__)


def finished(run) -> bool:
    """Whether a stored run has its stop document and, per stream, as many rows
    as the stop says (TiledWriter writes the stop after the last rows)."""
    stop = (run.metadata or {}).get("stop")
    if not stop:
        return False
    for stream, n in (stop.get("num_events") or {}).items():
        if not n or stream not in run:
            continue
        node = run[stream]
        base = getattr(node, "base", node)
        if "internal" in base and len(base["internal"].read()) < n:
            return False
    return True


class RunFeed:
    """The runs of a Tiled container (``raw``) as they start and stop.

    ``on_started(key)`` and ``on_stopped(key)`` are called on the subscription's
    thread (one at a time, in the server's order). :meth:`start` subscribes
    from now on (``replay=True``: from as far back as the server's cache holds);
    a worker scans the catalog after subscribing, so that nothing falls between.
    Tiled holds callbacks by weak reference: this object holds the bound
    methods and the subscription, and the caller holds this object.
    """

    def __init__(
        self,
        container,
        *,
        on_stopped: Callable[[str], None],
        on_started: Callable[[str], None] | None = None,
    ):
        self.container = container
        self.on_stopped = on_stopped
        self.on_started = on_started
        self.subscription = None
        self.events = 0
        self._lock = threading.Lock()

    def start(self, *, replay: bool = False) -> RunFeed:
        sub = self.container.subscribe()
        sub.child_created.add_callback(self._created)
        sub.child_metadata_updated.add_callback(self._updated)
        sub.disconnected.add_callback(self._disconnected)
        sub.start_in_thread(start=0 if replay else None)
        self.subscription = sub
        return self

    def stop(self) -> None:
        sub, self.subscription = self.subscription, None
        if sub is not None:
            sub.disconnect()

    # -- callbacks (the subscription's thread) --------------------------------------------
    def _created(self, update) -> None:
        self.events += 1
        logger.info("new run %s", update.key)
        if self.on_started is not None:
            self._call(self.on_started, update.key)

    def _updated(self, update) -> None:
        self.events += 1
        if "stop" in (update.metadata or {}):
            logger.info("run %s stopped", update.key)
            self._call(self.on_stopped, update.key)

    def _disconnected(self, sub) -> None:
        logger.info("subscription to %s closed", self.container.uri)

    def _call(self, func, key: str) -> None:
        try:
            func(key)
        except Exception:  # noqa: BLE001 - one bad run does not end the feed
            logger.exception("handling run %s failed", key)


def wait_finished(run, timeout: float = 60.0, poll: float = 0.2) -> bool:
    """Wait (up to ``timeout`` s) until :func:`finished` says the run's rows are in."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            run.refresh()
            if finished(run):
                return True
        except Exception as err:
            if not server_may_recover(err):
                raise
            uid = ((run.metadata or {}).get("start") or {}).get("uid")
            logger.warning("reading run %s failed (%r): trying again", uid, err)
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
