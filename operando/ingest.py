"""Ingest into Tiled off the RunEngine's thread and process, flushed by time.

:class:`TiledIngest` is what the project subscribes to a RunEngine: the
documents go through a queue to a ``TiledWriter`` in a process of its own
(``multiprocessing``, spawned), so a slow or absent Tiled never slows the
acquisition: the RunEngine's thread only counts and queues, and the writer's
work (HTTP, Arrow, JSON) does not compete with it for the interpreter lock, as
a writer thread beside it (bluesky's ``BufferingWrapper``) does. With

* a time-based flush: rows and frames cached by the writer's batching are
  written at the latest ``flush_interval`` seconds after they arrived (and at
  once every ``batch_size`` events), so a second client sees them about a
  second after their event, however fast or slow the events come;
* TiledWriter's backup: a run Tiled refuses (at any write, a flush included) is
  kept whole as JSON lines in the backup directory (``operando replay``);
* a record of every run: events emitted and written, where the run went (Tiled
  or backup) and how long after its stop document it was complete
  (:attr:`TiledIngest.runs`, logged at each stop); ``shutdown()`` drains the
  queue and reports any run left unfinished.

bluesky-tiled-plugins 2.0's TiledWriter has no public flush: the flush writes a
run's cached rows and stream datums with the run writer's own methods, as its
batching and its stop do. Should a later version lack them, the ingest falls
back to writing row by row (``batch_size=1``) and says so.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: rows and frames reach Tiled at the latest this many seconds after their event
FLUSH_INTERVAL_S = 0.5
#: ... and at once when a stream has this many waiting
BATCH_SIZE = 500
#: what the owner sends the writer's process to end it
_STOP = None


def _writer_internals():
    """The pieces of bluesky-tiled-plugins the flush uses, or None when missing."""
    try:
        from bluesky_tiled_plugins.writing import tiled_writer as tw
    except ImportError:  # pragma: no cover - a dependency of the project
        return None
    needed = {
        "_RunWriter": ("_write_internal_data", "_write_external_data"),
        "_ConditionalBackup": (),
    }
    for name, methods in needed.items():
        cls = getattr(tw, name, None)
        if cls is None or not all(hasattr(cls, m) for m in methods):
            return None
    return tw


def _flushing_writer_class():
    from bluesky_tiled_plugins import TiledWriter

    class FlushingTiledWriter(TiledWriter):
        """TiledWriter whose runs' cached rows and stream datums can be written now."""

        def __init__(self, client, **kwargs):
            super().__init__(client, **kwargs)
            self._internals = _writer_internals()
            if self._internals is None:
                logger.warning(
                    "this bluesky-tiled-plugins has no run writer to flush: writing row by row"
                )
                self._batch_size = 1
            #: run uid -> (run writer, conditional backup or None)
            self.open_runs: dict[str, tuple] = {}

        def _factory(self, name, doc):
            callbacks, subfactories = super()._factory(name, doc)
            if self._internals is not None:
                writer, backup = self._find(callbacks[0])
                if writer is not None:
                    self.open_runs[doc["uid"]] = (writer, backup)
            return callbacks, subfactories

        def _find(self, cb):
            tw = self._internals
            backup = cb if isinstance(cb, tw._ConditionalBackup) else None
            inner = backup.primary_callback if backup is not None else cb
            if isinstance(inner, tw._RunWriter):
                return inner, backup
            for sub in getattr(inner, "_token_refs", {}).values():  # RunNormalizer
                if isinstance(sub, tw._RunWriter):
                    return sub, backup
            return None, backup

        def flush(self) -> int:
            """Write every open run's cached rows and frames; returns how many
            rows and stream datums went out. A run Tiled refuses goes whole to
            the backup, as TiledWriter does for any other write."""
            n = 0
            for uid, (writer, backup) in list(self.open_runs.items()):
                if backup is not None and backup._primary_failed:
                    continue
                try:
                    n += self._flush_run(writer)
                except Exception:
                    logger.exception("flushing run %s into Tiled failed", uid)
                    if backup is not None:
                        self._to_backup(backup)
            return n

        @staticmethod
        def _flush_run(writer) -> int:
            n = 0
            for desc_name, cache in writer._internal_data_cache.items():
                if cache:
                    n += len(cache)
                    writer._write_internal_data(cache, desc_node=writer._desc_nodes[desc_name])
                    cache.clear()
            for sres_uid in list(writer._external_data_cache):
                writer._write_external_data(writer._external_data_cache.pop(sres_uid))
                n += 1
            return n

        @staticmethod
        def _to_backup(backup) -> None:
            """What TiledWriter's conditional backup does when its primary fails."""
            backup._primary_failed = True
            for name, doc in backup._buffer:
                for cb in backup.backup_callbacks:
                    try:
                        cb(name, doc)
                    except Exception:
                        logger.exception("backup of a %r document failed", name)
            backup._buffer.clear()

        def run_outcome(self, uid: str) -> str:
            """'tiled' or 'backup' for a run the writer has seen, and forget it."""
            writer, backup = self.open_runs.pop(uid, (None, None))
            return "backup" if backup is not None and backup._primary_failed else "tiled"

    return FlushingTiledWriter


@dataclass
class RunIngest:
    """What happened to one run on its way to Tiled."""

    uid: str
    events_emitted: int = 0  # counted on the RunEngine's thread
    events_written: int = 0  # handed to TiledWriter; all in Tiled (or the backup) once complete
    stop_emitted: float | None = None  # time.time() of the stop document
    complete: bool = False  # the stop document was written (or backed up)
    outcome: str = "pending"  # 'tiled', 'backup', 'failed' (no backup) or 'pending'
    lag_after_stop_s: float | None = None
    queued_at_stop: int | None = None  # documents still queued for the writer at the stop


# ------------------------------------------------------------------ the writer's process
#: the writer's process tries this long to reach Tiled, then backs every run up
CONNECT_TIMEOUT_S = 60.0


class _BackupOnly:
    """Every run into TiledWriter's JSON-lines backup, for a Tiled never reached."""

    def __init__(self, backup_directory):
        from bluesky_tiled_plugins.writing._json_writer import JSONLinesWriter
        from event_model import RunRouter

        if backup_directory is None:
            raise RuntimeError("Tiled unreachable and no backup directory: nothing is kept")
        self._router = RunRouter([lambda name, doc: ([JSONLinesWriter(backup_directory)], [])])

    def __call__(self, name, doc):
        self._router(name, doc)

    def flush(self) -> int:
        return 0

    def run_outcome(self, uid: str) -> str:
        return "backup"


def _writer_main(
    uri, api_key, backup_directory, flush_interval, batch_size, connect_timeout, docs, results
):
    """The writer's process: documents from ``docs`` into Tiled, flushed by time;
    one message per finished run (and per flush count) into ``results``."""
    from .shutdown import die_with_parent

    die_with_parent(os.getppid())  # a writer must not outlive the acquisition it serves
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s ingest %(levelname)s %(message)s"
    )
    from queue import Empty

    from tiled.client import from_uri

    from .tiled_server import runs_container

    writer = None
    deadline = time.monotonic() + connect_timeout
    attempt = 0
    while writer is None and time.monotonic() < deadline:
        attempt += 1
        try:
            writer = _flushing_writer_class()(
                runs_container(from_uri(uri, api_key=api_key)),
                batch_size=batch_size,
                backup_directory=backup_directory,
            )
        except Exception as err:  # documents wait in the queue meanwhile
            logger.warning("cannot reach Tiled at %s (%r); trying again", uri, err)
            time.sleep(max(0.0, min(2.0**attempt, 10.0, deadline - time.monotonic())))
    if writer is None:
        logger.error("Tiled at %s unreachable: every run goes to the backup", uri)
        writer = _BackupOnly(backup_directory)
    results.put(("ready",))
    events: dict[str, int] = {}  # run uid -> events handed to the writer
    desc_run: dict[str, str] = {}
    pending_since = None
    busy = 0.0
    flushes = 0
    while True:
        timeout = None
        if pending_since is not None:
            timeout = max(0.0, pending_since + flush_interval - time.monotonic())
        try:
            item = docs.get(timeout=timeout)
        except Empty:
            item = "flush"
        t0 = time.monotonic()
        if item is _STOP:
            n = writer.flush()
            results.put(("busy", busy + time.monotonic() - t0, flushes + bool(n)))
            return
        if item == "flush":
            pending_since = None
            if writer.flush():
                flushes += 1
            busy += time.monotonic() - t0
            continue
        name, doc = item
        outcome = None
        try:
            writer(name, doc)
        except Exception:
            # Only without a backup directory: TiledWriter's backup catches the rest.
            logger.exception("TiledWriter failed on a %r document (no backup)", name)
            outcome = "failed"
        if name == "start":
            events[doc["uid"]] = 0
        elif name == "descriptor":
            desc_run[doc["uid"]] = doc["run_start"]
        elif name in ("event", "event_page", "stream_datum"):
            if name != "stream_datum":
                uid = desc_run.get(doc["descriptor"])
                if uid in events:
                    events[uid] += len(doc["seq_num"]) if name == "event_page" else 1
            if pending_since is None:
                pending_since = t0
        elif name == "stop":
            uid = doc["run_start"]
            outcome = outcome or writer.run_outcome(uid)
            results.put(("run", uid, outcome, events.pop(uid, 0), time.time()))
            for d in [d for d, r in desc_run.items() if r == uid]:
                del desc_run[d]
            results.put(("busy", busy, flushes))
        busy += time.monotonic() - t0


def _client_address(client) -> tuple[str, str | None]:
    """The server's address and API key of a Tiled client, for the writer's process."""
    context = client.context
    return str(context.api_uri).split("/api/v1")[0], context.api_key


@contextlib.contextmanager
def _main_module_hidden():
    """Start a spawned process without it re-running ``__main__``.

    A spawned child imports the parent's main module by its path first. In an
    IPython session that is the startup file being run (IPython sets
    ``__main__.__file__`` to it), which would start a second ingest in the
    child. The writer needs nothing from ``__main__`` (its target lives in this
    module), so the main module's path and spec are hidden while it starts.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None  # multiprocessing reads it: None means "nothing to import"
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class TiledIngest:
    """TiledWriter in a process of its own, flushed by time; subscribe it to a RunEngine.

    ``client`` is a Tiled client of the server (the runs go to its ``raw``
    container); the writer's process connects with the same address and key.

    >>> ingest = TiledIngest(client, backup_directory="data/backup")
    >>> RE.subscribe(ingest)
    >>> ...
    >>> ingest.shutdown()   # every document written (or backed up)
    """

    def __init__(
        self,
        client,
        *,
        backup_directory=None,
        flush_interval: float = FLUSH_INTERVAL_S,
        batch_size: int = BATCH_SIZE,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ):
        import multiprocessing

        uri, api_key = _client_address(client)
        ctx = multiprocessing.get_context("spawn")
        self._docs = ctx.Queue()
        self._results = ctx.Queue()
        self.flush_interval = float(flush_interval)
        self._process = ctx.Process(
            target=_writer_main,
            args=(
                uri,
                api_key,
                str(backup_directory) if backup_directory else None,
                self.flush_interval,
                int(batch_size),
                float(connect_timeout),
                self._docs,
                self._results,
            ),
            name="tiled-ingest",
            daemon=True,
        )
        with _main_module_hidden():
            self._process.start()
        #: run uid -> RunIngest, for every run seen
        self.runs: dict[str, RunIngest] = {}
        self._desc_run: dict[str, str] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.busy_s = 0.0  # wall seconds the writer's process spent writing
        self.flushes = 0
        self.ready = False  # the writer's process is connected to Tiled
        atexit.register(self.shutdown)

    def wait_ready(self, timeout: float = 120.0) -> TiledIngest:
        """Wait until the writer's process has connected (documents queue meanwhile)."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if not self._process.is_alive():
                raise RuntimeError(
                    f"the ingest's writer process ended (exit code {self._process.exitcode})"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"the ingest's writer process not ready within {timeout} s")
            self._collect(block=True, timeout=0.2)
        return self

    # -- the RunEngine's thread: count and queue, nothing else --------------------------
    def __call__(self, name, doc):
        if self._closed:
            raise RuntimeError("the ingest is shut down: no more documents")
        if name == "start":
            self.runs[doc["uid"]] = RunIngest(doc["uid"])
        elif name == "descriptor":
            self._desc_run[doc["uid"]] = doc["run_start"]
        elif name in ("event", "event_page"):
            run = self.runs.get(self._desc_run.get(doc["descriptor"], ""))
            if run is not None:
                run.events_emitted += len(doc["seq_num"]) if name == "event_page" else 1
        elif name == "stop":
            run = self.runs.get(doc["run_start"])
            if run is not None:
                run.stop_emitted = time.time()
                try:
                    run.queued_at_stop = self._docs.qsize()
                except NotImplementedError:  # macOS
                    pass
                if run.queued_at_stop:
                    logger.info(
                        "run %s stopped with %d documents still queued for Tiled; "
                        "the writer reports when it is complete",
                        run.uid,
                        run.queued_at_stop,
                    )
            if not self._process.is_alive():
                logger.error(
                    "the ingest's writer process has died (exit code %s): run %s is not "
                    "being written",
                    self._process.exitcode,
                    doc["run_start"],
                )
        self._docs.put((name, doc))

    # -- the owner's side -------------------------------------------------------------
    def _collect(self, block: bool = False, timeout: float | None = None) -> bool:
        """Take in what the writer's process reported; True if anything came."""
        from queue import Empty

        got = False
        with self._lock:
            while True:
                try:
                    msg = self._results.get(block=block and not got, timeout=timeout)
                except Empty:
                    return got
                got = True
                if msg[0] == "ready":
                    self.ready = True
                    continue
                if msg[0] == "busy":
                    self.busy_s, self.flushes = msg[1], msg[2]
                    continue
                _, uid, outcome, written, t_done = msg
                run = self.runs.setdefault(uid, RunIngest(uid))
                run.complete, run.outcome, run.events_written = True, outcome, written
                if run.stop_emitted is not None:
                    run.lag_after_stop_s = max(0.0, t_done - run.stop_emitted)
                self._log_run(run)

    @staticmethod
    def _log_run(run: RunIngest) -> None:
        if run.outcome == "tiled":
            logger.info(
                "run %s in Tiled: %d events, complete %.2f s after its stop "
                "(%s documents were queued for the writer then)",
                run.uid,
                run.events_written,
                run.lag_after_stop_s or 0.0,
                run.queued_at_stop,
            )
        elif run.outcome == "failed":
            logger.error("run %s could not be written to Tiled and has no backup", run.uid)
        else:
            logger.warning(
                "run %s kept in the backup (Tiled refused it): %d events; "
                "`operando replay` writes it into Tiled",
                run.uid,
                run.events_written,
            )

    def pending_runs(self) -> list[RunIngest]:
        """Runs not yet complete in Tiled (or the backup)."""
        self._collect()
        return [r for r in self.runs.values() if not r.complete]

    def wait_for_run(self, uid: str, timeout: float | None = None) -> RunIngest:
        """Block until run ``uid`` is complete in Tiled (or the backup); returns its record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._collect()
            run = self.runs.get(uid)
            if run is not None and run.complete:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {uid} not written within {timeout} s")
            if not self._process.is_alive():
                raise RuntimeError("the ingest's writer process has died")
            self._collect(block=True, timeout=0.1)

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> list[RunIngest]:
        """Drain the queue (every document written or backed up), end the writer's
        process. Returns the runs left incomplete (a run whose stop document never
        came, after writing what it had, or all of them if the writer died)."""
        if not self._closed:
            self._closed = True
            atexit.unregister(self.shutdown)
            self._docs.put(_STOP)
            self._docs.close()
            if wait:
                self._process.join(timeout)
                if self._process.exitcode not in (0, None):
                    logger.error(
                        "the ingest's writer process ended with exit code %s",
                        self._process.exitcode,
                    )
        left = self.pending_runs()
        for run in left:
            logger.error(
                "run %s is incomplete in Tiled: %d events emitted, no stop document written",
                run.uid,
                run.events_emitted,
            )
        return left

    def summary(self) -> dict:
        """Counts for a job's report."""
        self._collect()
        runs = list(self.runs.values())
        lags = [r.lag_after_stop_s for r in runs if r.lag_after_stop_s is not None]
        return {
            "runs": len(runs),
            "in_tiled": sum(r.outcome == "tiled" for r in runs),
            "in_backup": sum(r.outcome == "backup" for r in runs),
            "incomplete": sum(not r.complete for r in runs),
            "events_emitted": sum(r.events_emitted for r in runs),
            "events_written": sum(r.events_written for r in runs),
            "max_lag_after_stop_s": max(lags) if lags else 0.0,
            "flushes": self.flushes,
            "busy_s": self.busy_s,
        }
