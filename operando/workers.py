"""A reduction worker: the techniques' reducers in a process of their own, on any
host, fed by Tiled instead of a RunEngine (``operando reduce --follow``).

>>> worker = ReductionWorker(from_uri(uri, api_key=key), figures_dir="figures")
>>> worker.start()        # subscribe, catch up on what is not reduced, follow
>>> worker.close()

Each technique's reducer is its live reducer (``XCTLiveReducer``,
``SAXSLiveReducer``, from :mod:`operando.techniques`): the same code, handed
whole runs read back from Tiled (``reduce_stored``) instead of documents. Results
go where ``operando reduce UID`` and the live reducers write them, through the
same store functions. Resuming: ``docs/workers.md``.
"""

from __future__ import annotations

import logging
import math
import signal
import threading

from . import techniques
from .callbacks.core import find_experiment_runs, is_complete, server_may_recover
from .callbacks.core.follow import RunFeed, wait_finished
from .tiled_server import reduced_container, runs_container

__all__ = ["ReductionWorker", "run_worker"]

logger = logging.getLogger(__name__)


class ReductionWorker:
    """Reduce every finished run of ``client``'s ``raw`` container, now and as
    they come.

    On :meth:`start` it subscribes to ``raw`` (:class:`RunFeed`), then scans
    the catalog (:meth:`catch_up`): per experiment, runs with a complete
    ``reduced/<uid>`` rebuild the experiment's state (``restore_stored``: read
    back, not redone), finished runs without one (or with one cut short) are
    reduced and written, then ``reduced/<experiment id>`` is brought up to date.
    Runs that stop later are reduced as their stop arrives. ``techniques``:
    names (default: all registered); ``figures_dir``: as the live reducers';
    ``rescan_s``: scan again every so often (0: never), in case an event was lost.
    """

    def __init__(
        self,
        client,
        *,
        technique_names: list[str] | None = None,
        figures_dir=None,
        rescan_s: float = 300.0,
        finish_timeout: float = 120.0,
    ):
        self.client = client
        self.raw = runs_container(client)
        self.reduced = reduced_container(client)
        names = technique_names or techniques.names()
        self.techniques = {name: techniques.get(name) for name in names}
        self.reducers = {
            name: tech.live_reducer(client, figures_dir=figures_dir)
            for name, tech in self.techniques.items()
        }
        self.rescan_s = float(rescan_s)
        self.finish_timeout = float(finish_timeout)
        #: raw uids handed to a reducer in this process's life
        self.seen: set[str] = set()
        #: (technique, experiment id) whose state is rebuilt in this process
        self.loaded: set[tuple[str, str]] = set()
        #: raw uids whose reading back failed while Tiled was away: handed over again
        self.unread: set[str] = set()
        self._lock = threading.RLock()
        self._ready = False
        self._held: list[str] = []
        self._stop = threading.Event()
        self._rescanner: threading.Thread | None = None
        self.feed = RunFeed(self.raw, on_stopped=self._stopped)

    # ------------------------------------------------------------------ life
    def start(self) -> int:
        """Subscribe, catch up, follow; returns how many runs the catch-up queued."""
        self.feed.start()
        queued = self.catch_up()
        with self._lock:
            self._ready = True
            held, self._held = self._held, []
        for key in held:
            self._dispatch(key)
        if self.rescan_s > 0:
            self._rescanner = threading.Thread(target=self._rescan, name="rescan", daemon=True)
            self._rescanner.start()
        return queued

    def flush(self, timeout: float | None = None) -> bool:
        return all(r.flush(timeout) for r in self.reducers.values())

    def close(self, timeout: float | None = 600.0) -> None:
        self._stop.set()
        self.feed.stop()
        for reducer in self.reducers.values():
            reducer.close(timeout)

    @property
    def errors(self) -> list:
        return [e for r in self.reducers.values() for e in r.errors]

    def _rescan(self) -> None:
        while not self._stop.wait(self.rescan_s):
            try:
                self.catch_up()
            except Exception:  # noqa: BLE001 - try again next time
                logger.exception("rescanning the catalog failed")

    # ------------------------------------------------------------------ catalog
    def _technique_of(self, start: dict) -> str | None:
        for name, reducer in self.reducers.items():
            if self.techniques[name].accepts(start) and reducer.stored(start):
                return name
        return None

    def catch_up(self) -> int:
        """Queue every finished run not reduced whole yet (and the state its
        experiment needs); returns how many runs were queued to be reduced."""
        complete = {key for key, node in self.reduced.items() if is_complete(node)}
        experiments: dict[tuple[str, str], list] = {}
        for uid, run in self.raw.items():
            start = (run.metadata or {}).get("start") or {}
            name = self._technique_of(start)
            if name is None:
                continue
            eid = str(start.get("experiment_id") or "")
            experiments.setdefault((name, eid), []).append(
                (float(start.get("time", 0.0)), uid, run)
            )
        queued = 0
        order = sorted(experiments.items(), key=lambda kv: min(t for t, _, _ in kv[1]))
        for (name, eid), runs in order:
            with self._lock:
                reducer = self.reducers[name]
                todo = [
                    uid
                    for _, uid, run in runs
                    if reducer.accepts((run.metadata or {}).get("start") or {})
                    and uid not in complete
                    and uid not in self.seen
                    and (run.metadata or {}).get("stop")
                ]
                retry = any(uid in self.unread for _, uid, _ in runs)
                if not todo and not retry and self._experiment_current(eid, runs, complete):
                    continue
                queued += self._load(name, eid, sorted(runs), complete)
        return queued

    def _experiment_current(self, eid: str, runs, complete: set) -> bool:
        """Whether ``reduced/<eid>`` is complete and lists every reduced run."""
        if not eid or eid not in complete:
            return not eid
        listed = {r.get("uid") for r in (self.reduced[eid].metadata.get("runs") or [])}
        done = {uid for _, uid, _ in runs if uid in complete}
        return done <= listed

    def _load(self, name: str, eid: str, runs, complete: set) -> int:
        """Hand one experiment's runs to its reducer in start order: restore the
        complete ones (once per process), reduce the finished others, settle."""
        reducer = self.reducers[name]
        fresh = (name, eid) not in self.loaded
        queued = 0
        for _, uid, run in runs:
            if uid in self.seen:
                continue
            if uid in complete:
                if fresh or uid in self.unread:
                    self._submit(reducer, uid, reducer.restore_stored, run, self.reduced[uid])
                continue
            if not (run.metadata or {}).get("stop"):
                continue  # still running: its stop will come through the feed
            if not reducer.accepts(run.metadata.get("start") or {}):
                # feeds the state only (no node of its own): read, never "reduced"
                self._submit(reducer, uid, reducer.restore_stored, run, None)
                continue
            if not wait_finished(run, self.finish_timeout):
                logger.warning("run %s: rows still missing after its stop; reduced as is", uid)
            self._submit(reducer, uid, reducer.reduce_stored, run)
            queued += 1
        self.loaded.add((name, eid))
        if not queued:
            reducer.submit(reducer.settle, eid)
        return queued

    def _submit(self, reducer, uid: str, call, *args) -> None:
        """Queue ``call(*args)`` for run ``uid``. If it fails because Tiled
        stayed away past the reducer's patience, the run is forgotten, so that
        the next scan of the catalog (``rescan_s``) hands it over again."""

        def read_back(*args):
            try:
                call(*args)
            except Exception as err:
                if server_may_recover(err):
                    with self._lock:
                        self.seen.discard(uid)
                        self.unread.add(uid)
                raise
            with self._lock:
                self.unread.discard(uid)

        read_back.__name__ = call.__name__
        self.seen.add(uid)
        reducer.submit(read_back, *args)

    # ------------------------------------------------------------------ feed
    def _stopped(self, key: str) -> None:
        with self._lock:
            if not self._ready:
                self._held.append(key)
                return
        self._dispatch(key)

    def _dispatch(self, key: str) -> None:
        with self._lock:
            if key in self.seen:
                return
            run = self.raw[key]
            start = (run.metadata or {}).get("start") or {}
            name = self._technique_of(start)
            if name is None:
                return
            eid = str(start.get("experiment_id") or "")
            if eid:
                _, found = find_experiment_runs(self.raw, eid)
                runs = [
                    (float(r.metadata["start"].get("time", math.inf)), uid, r) for uid, r in found
                ]
            else:
                runs = [(float(start.get("time", 0.0)), key, run)]
            complete = {
                uid for _, uid, _ in runs if uid in self.reduced and _done(self.reduced, uid)
            }
            self._load(name, eid, sorted(runs, key=lambda r: (r[0], r[1])), complete)


def _done(reduced, uid: str) -> bool:
    try:
        return is_complete(reduced[uid])
    except KeyError:
        return False


def run_worker(client, *, figures_dir=None, technique_names=None, rescan_s=300.0, out=print):
    """``operando reduce --follow``: a worker until SIGTERM or SIGINT; returns 0."""
    stop = threading.Event()

    def handle(signum, frame):
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    worker = ReductionWorker(
        client, technique_names=technique_names, figures_dir=figures_dir, rescan_s=rescan_s
    )
    try:
        queued = worker.start()
        out(
            f"following {client.uri}raw: {queued} run(s) to catch up; "
            f"techniques {', '.join(worker.reducers)}",
            flush=True,
        )
        stop.wait()
    finally:
        out("stopping: finishing the runs queued", flush=True)
        worker.close()
        for sig, h in previous.items():
            signal.signal(sig, h)
    for name, err in worker.errors:
        out(f"  error ({name}): {err}", flush=True)
    return 0
