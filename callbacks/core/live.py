"""The machinery of every live reducer: a queued worker thread and the base class.

:class:`QueuedReducer` takes documents on the RunEngine's thread (a copy and a
put) and hands them to a worker thread; :class:`LiveReducer` adds what the
techniques share: an ``event_model.RunRouter`` that gives each accepted run a
collector (:class:`~operando.callbacks.core.documents.RunCollector`), the
experiments reduced so far, the figures and the timings. A technique's
``live.py`` subclasses it. How it fits together: ``docs/architecture.md``.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from event_model import RunRouter

from .documents import RunCollector
from .store import server_may_recover

__all__ = ["QueuedReducer", "LiveReducer"]

logger = logging.getLogger(__name__)


_STOP_WORKER = object()
_CALL = object()


class QueuedReducer:
    """A bluesky callback that reduces on a worker thread, off the RunEngine's.

    ``__call__`` only copies the document onto a queue; the worker hands each
    one to :meth:`_handle` (subclasses) and survives its errors (logged, kept
    in ``errors``); :meth:`flush` waits until everything queued is done;
    :meth:`close` also stops the worker. Results go under the ``reduced``
    container of ``client`` (None: reduce without writing).
    """

    thread_name = "live-reducer"

    def __init__(self, client):
        self.client = client
        self.errors: list[tuple[str, str]] = []
        self._reduced = None
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._work, name=self.thread_name, daemon=True)
        self._thread.start()

    def __call__(self, name: str, doc: dict) -> None:
        """Queue a document (cheap: a copy and a put)."""
        if not self._thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} is closed")
        with self._cond:
            self._pending += 1
        self._queue.put((name, copy.deepcopy(doc)))

    def submit(self, func, *args) -> None:
        """Queue a call ``func(*args)`` for the worker thread, in order with the
        documents (nothing copied: how a reduction worker hands it runs read
        from Tiled, :mod:`operando.workers`)."""
        if not self._thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} is closed")
        with self._cond:
            self._pending += 1
        self._queue.put((_CALL, (func, args)))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is reduced and written; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Wait for the queue (after :meth:`_before_close`), then stop the worker."""
        if not self._thread.is_alive():
            return True
        self._closing.set()  # nothing waits on the server any more
        self._before_close()
        done = self.flush(timeout)
        self._queue.put(_STOP_WORKER)
        self._thread.join(timeout=5)
        return done

    def _before_close(self) -> None:
        """Queue what must happen before the worker stops (subclasses)."""

    def _handle(self, name: str, doc: dict) -> None:
        raise NotImplementedError

    def _idle(self) -> None:
        """Work done once the worker has caught up with the queue (subclasses):
        what many queued items would each redo is then done once for all."""

    def _caught_up(self) -> None:
        try:
            self._idle()
        except Exception as err:  # noqa: BLE001 - the worker must survive
            logger.exception("%s failed bringing its summaries up to date", type(self).__name__)
            self.errors.append(("idle", repr(err)))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP_WORKER:
                return
            name, doc = item
            try:
                if name is _CALL:
                    func, args = doc
                    name = getattr(func, "__name__", "call")
                    func(*args)
                else:
                    self._handle(name, doc)
            except Exception as err:  # noqa: BLE001 - the worker must survive
                logger.exception("%s failed on a %s document", type(self).__name__, name)
                self.errors.append((name, repr(err)))
            finally:
                if self._queue.empty():  # caught up (before ``flush`` may return)
                    self._caught_up()
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def _reduced_node(self):
        if self._reduced is None:
            from operando.tiled_server import reduced_container

            self._reduced = reduced_container(self.client)
        return self._reduced


class LiveReducer(QueuedReducer):
    """Base of the techniques' live reducers (``XCTLiveReducer``, ``SAXSLiveReducer``).

    A subclass names the runs it reduces (``technique``: the start document's
    ``technique``; ``steps``: its ``step``) and ``timing_keys``, and implements
    :meth:`_collector` (the per-run ``RunCollector``), :meth:`_new_experiment`
    (the technique's ``ExperimentState``) and :meth:`_figures` (draw them).

    Attributes: ``experiments`` (experiment id → its state), ``figures``
    (experiment id → PNG paths), ``written`` (raw uids written to Tiled),
    ``timings`` (seconds per kind of work), ``errors``; ``figures_dir``
    (``<figures_dir>/<experiment_id>/*.png``, None for no figures) and
    ``frame_timeout`` (s to wait for a frame in its HDF5 file).
    """

    technique: str = ""
    steps: tuple[str, ...] = ()
    timing_keys: tuple[str, ...] = ("tiled", "figures")
    #: wall s between two attempts to write a reduction Tiled refused
    retry_every: float = 30.0
    #: wall s a run read back from Tiled is tried for while the server fails it
    read_patience: float = 300.0
    #: wall s before the first new try of such a read
    read_retry_first: float = 1.0

    def __init__(self, client, *, figures_dir=None, frame_timeout: float = 60.0):
        self.figures_dir = Path(figures_dir) if figures_dir is not None else None
        self.frame_timeout = float(frame_timeout)
        self.experiments: dict[str, Any] = {}
        self.figures: dict[str, list[str]] = {}
        self.written: list[str] = []
        self.timings: dict[str, float] = {key: 0.0 for key in self.timing_keys}
        self._stale: dict[str, None] = {}  # experiment ids whose summary is behind
        self._unwritten: dict[str, tuple] = {}  # raw uid -> the write Tiled refused
        self._retry_at = 0.0
        self._router = RunRouter([self._factory])
        super().__init__(client)

    def accepts(self, start: dict) -> bool:
        """Whether the run of this start document is reduced."""
        return start.get("technique") == self.technique and start.get("step") in self.steps

    # ------------------------------------------------------------------ subclasses
    def _collector(self, start: dict) -> RunCollector:
        raise NotImplementedError

    def _new_experiment(self, experiment_id: str):
        raise NotImplementedError

    def _figures(self, exp, directory: Path) -> list[str]:
        raise NotImplementedError

    # -- runs read back from Tiled (a reduction worker, ``operando reduce --follow``) --
    def stored(self, start: dict) -> bool:
        """Whether a stored run of this start document belongs to the experiment's
        state (the runs :meth:`accepts`, each with its ``reduced/<uid>``, and any
        that only feed the state: a subclass says)."""
        return self.accepts(start)

    def reduce_stored(self, run) -> None:
        """Reduce a finished raw run read from Tiled (``run``: its Tiled client)
        and write its results, as a run whose stop document came live (called
        on the worker thread, through :meth:`submit`). A read the server fails
        for a while (away, restarting, overloaded: :func:`server_may_recover`)
        is tried again, for up to ``read_patience`` s; other errors stand at once."""
        self._read_back(self._reduce_stored, run)

    def restore_stored(self, run, node) -> None:
        """Add a run reduced before (``node``: its complete ``reduced/<uid>``) to
        its experiment's state without writing anything; tried again as
        :meth:`reduce_stored` is."""
        self._read_back(self._restore_stored, run, node)

    def _reduce_stored(self, run) -> None:
        """:meth:`reduce_stored` (subclasses): raises before it changes any state
        if a read fails, so that it can be called again."""
        raise NotImplementedError

    def _restore_stored(self, run, node) -> None:
        """:meth:`restore_stored` (subclasses), raising as :meth:`_reduce_stored` does."""
        raise NotImplementedError

    def _read_back(self, read, run, *args) -> None:
        """``read(run, *args)``, again after a pause (``read_retry_first`` s,
        doubling up to ``retry_every``) while it fails with an error the server
        may recover from, until ``read_patience`` s have passed or the reducer
        closes; then the last error is raised."""
        deadline = time.monotonic() + self.read_patience
        delay = self.read_retry_first
        while True:
            try:
                return read(run, *args)
            except Exception as err:
                if not server_may_recover(err) or time.monotonic() + delay > deadline:
                    raise
                if self._closing.is_set():
                    raise
                uid = ((getattr(run, "metadata", None) or {}).get("start") or {}).get("uid")
                logger.warning(
                    "reading run %s back from Tiled failed (%r): trying again in %.0f s",
                    uid,
                    err,
                    delay,
                )
                self._closing.wait(delay)
                delay = min(2 * delay, self.retry_every)

    def settle(self, experiment_id: str) -> None:
        """Bring ``reduced/<experiment_id>`` and the figures up to date with the
        experiment's state (subclasses)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ worker
    def _handle(self, name: str, doc: dict) -> None:
        self._router(name, doc)

    def _factory(self, name, start):
        if not self.accepts(start):
            return [], []
        return [self._collector(start)], []

    def _experiment(self, experiment_id: str):
        exp = self.experiments.get(experiment_id)
        if exp is None:
            exp = self.experiments[experiment_id] = self._new_experiment(experiment_id)
        return exp

    def _touch(self, exp) -> None:
        """The experiment's figures and ``reduced/<experiment_id>`` are behind its
        state: :meth:`settle` brings them up to date once the worker has caught up
        with its queue. A reducer that keeps up settles after every run; one that
        is behind (runs queued faster than it reduces them) settles once for all
        of them, not once per run. The last settle comes before ``flush`` returns,
        so what is finally drawn and written is the same either way."""
        self._stale[exp.experiment_id] = None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is reduced and written (a reduction Tiled
        refused is tried once more first); False on timeout."""
        if self._thread.is_alive():
            self.submit(self._retry_unwritten, True)
        return super().flush(timeout)

    def _write(self, uid: str, write, *args, **kwargs) -> bool:
        """Write the reduction of run ``uid``: ``write(reduced, *args, **kwargs)``.
        If Tiled refuses it (away, restarting), it is kept and written again once
        the worker has caught up, every ``retry_every`` s, and before ``flush``
        returns: an outage of the server loses no result."""
        err = self._attempt(uid, write, args, kwargs)
        if err is not None:
            logger.error(
                "writing the reduction of %s to Tiled failed (kept to retry)", uid, exc_info=err
            )
            self.errors.append(("tiled", f"{uid}: {err!r}"))
            self._unwritten[uid] = (write, args, kwargs)
        return err is None

    def _attempt(self, uid: str, write, args, kwargs) -> Exception | None:
        """One try of a write: on success the run is ``written`` (and no longer
        kept); on failure the error, and the next retry ``retry_every`` s away."""
        t0 = time.perf_counter()
        try:
            write(self._reduced_node(), *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - keep reducing when Tiled is down
            self._retry_at = time.monotonic() + self.retry_every
            return err
        finally:
            self.timings["tiled"] += time.perf_counter() - t0
        self._unwritten.pop(uid, None)
        self.written.append(uid)
        return None

    def _retry_unwritten(self, force: bool = False) -> None:
        if not self._unwritten or (not force and time.monotonic() < self._retry_at):
            return
        for uid, (write, args, kwargs) in list(self._unwritten.items()):
            err = self._attempt(uid, write, args, kwargs)
            if err is not None:
                logger.warning(
                    "the reduction of %s is still not in Tiled (%r); %d run(s) waiting, "
                    "next try in %.0f s",
                    uid,
                    err,
                    len(self._unwritten),
                    self.retry_every,
                )
                return
            logger.warning("the reduction of %s is in Tiled after all", uid)

    @property
    def unwritten(self) -> list[str]:
        """Raw uids whose reduction Tiled refused and that are not written yet."""
        return list(self._unwritten)

    def _idle(self) -> None:
        self._retry_unwritten()
        while self._stale:
            eid = next(iter(self._stale))
            del self._stale[eid]
            self.settle(eid)

    def figures_directory(self, experiment_id: str) -> Path | None:
        """Where the figures of an experiment go (None: no figures)."""
        if self.figures_dir is None:
            return None
        return self.figures_dir / (experiment_id or "unnamed")

    def _draw(self, exp) -> bool:
        """Redraw the experiment's figures; False (the error logged and kept) on failure."""
        directory = self.figures_directory(exp.experiment_id)
        if directory is None:
            return False
        t0 = time.perf_counter()
        try:
            self.figures[exp.experiment_id] = self._figures(exp, directory)
            return True
        except Exception as err:  # noqa: BLE001 - figures never stop the reduction
            logger.exception("figures of %s failed", exp.experiment_id)
            self.errors.append(("figures", repr(err)))
            return False
        finally:
            self.timings["figures"] += time.perf_counter() - t0
