"""Clean exits on SIGINT and SIGTERM, and child processes that die with their parent.

A command that runs an experiment (``operando run``, ``rehearse``, ``queue``)
or serves data (``operando serve``) wraps its work in :class:`SignalGuard`::

    with shutdown.SignalGuard() as guard:
        try:
            ...  # start children, run the RunEngine (jobs.py attaches it)
        except shutdown.Interrupted as stop:
            print(shutdown.summary(stop))
            return stop.exit_code  # 130 on SIGINT, 143 on SIGTERM

What the first SIGINT or SIGTERM does depends on where the command is:

* while a RunEngine runs a plan (the guard is one of its ``context_managers``,
  in place of bluesky's ``SigintHandler``, which pauses on Ctrl-C and leaves the
  run open): the RunEngine is asked to *abort* from a helper thread. The plan's
  cleanup (``finalize_wrapper``: source off, cell at open circuit) runs on the
  RunEngine's loop while the devices and the simulators are alive, and the open
  run gets its stop document (``exit_status='abort'``, the signal as reason).
  ``RE(...)`` then raises ``RunEngineInterrupted``; the job drains the Tiled
  writer and the live reduction, stops its children, and raises
  :class:`Interrupted` with what was saved (:class:`RunLedger`);
* anywhere else (starting the simulators or Tiled, waiting in ``serve``):
  :class:`Interrupted` is raised in the main thread, and the context managers
  on the way out stop whatever was started;
* inside :meth:`SignalGuard.shielded` (draining, stopping children): nothing is
  raised; the signal is remembered and the cleanup goes on.

The RunEngine's caller waits for the plan in short slices
(:class:`PollingDuringTask`, ``make_run_engine``'s default): a signal sent to
the process may be taken by any of its threads, and CPython runs the Python
handler in the main thread, which a wait without a timeout does not wake; the
abort would come only once the plan had ended by itself.

Later signals only print that the command is stopping (SIGKILL remains, and
the children still stop: :func:`child_preexec`).

:func:`child_preexec` is the ``preexec_fn`` of every child process the project
starts (IOCs, ``tiled serve``): the child gets SIGTERM when its parent dies,
even by SIGKILL (Linux ``PR_SET_PDEATHSIG``), and creates its files with umask
077 (private to the user).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bluesky.utils import DefaultDuringTask

__all__ = [
    "Interrupted",
    "PollingDuringTask",
    "RunLedger",
    "SignalGuard",
    "active",
    "child_preexec",
    "die_with_parent",
    "exit_code",
    "summary",
]

logger = logging.getLogger(__name__)

#: the signals a guard handles
SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: umask of the child processes: files readable by their owner only
CHILD_UMASK = 0o077

_PR_SET_PDEATHSIG = 1


def exit_code(signum: int) -> int:
    """The shell's exit status for a command stopped by ``signum`` (130, 143)."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@dataclass(eq=False)  # a callback: hashable by identity
class RunLedger:
    """A document callback that keeps what each run of a job wrote: uid, step,
    cycle, and the stop document's exit status (None while the run is open)."""

    runs: list = field(default_factory=list)  # dicts: uid, step, cycle, exit_status, reason
    experiment_id: str | None = None

    def __call__(self, name, doc):
        if name == "start":
            self.experiment_id = doc.get("experiment_id", self.experiment_id)
            self.runs.append(
                {
                    "uid": doc["uid"],
                    "step": doc.get("step") or doc.get("plan_name", ""),
                    "cycle": doc.get("cycle"),
                    "exit_status": None,
                    "reason": "",
                }
            )
        elif name == "stop":
            for run in reversed(self.runs):
                if run["uid"] == doc.get("run_start"):
                    run["exit_status"] = doc.get("exit_status")
                    run["reason"] = doc.get("reason", "")
                    break


class Interrupted(BaseException):
    """A command stopped by a signal (a ``BaseException``, like ``KeyboardInterrupt``,
    so that no ``except Exception`` on the way out swallows it).

    ``signum``; what the job knows when it stopped: ``ledger`` (:class:`RunLedger`),
    ``experiment_id``, ``data_dir``, ``tiled_uri``, ``notes`` (lines for the summary).
    """

    def __init__(
        self,
        signum: int,
        *,
        ledger: RunLedger | None = None,
        experiment_id: str | None = None,
        data_dir: Path | None = None,
        tiled_uri: str | None = None,
        notes: list[str] | None = None,
    ):
        super().__init__(f"stopped by {signal_name(signum)}")
        self.signum = int(signum)
        self.ledger = ledger or RunLedger()
        self.experiment_id = experiment_id or self.ledger.experiment_id
        self.data_dir = data_dir
        self.tiled_uri = tiled_uri
        self.notes = list(notes or [])

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


def summary(stop: Interrupted, *, command: str | None = None) -> str:
    """One paragraph: what was saved when ``stop`` came, and how to go on."""
    runs = stop.ledger.runs
    words = [f"operando: stopped by {signal_name(stop.signum)}."]
    if runs:
        done = [r for r in runs if r["exit_status"]]
        listed = "; ".join(
            f"{r['uid']} ({r['step']}{', cycle ' + str(r['cycle']) if r['cycle'] else ''}: "
            f"{r['exit_status'] or 'left open'})"
            for r in runs
        )
        words.append(
            f"{len(done)} of {len(runs)} run(s) closed with a stop document and written: {listed}."
        )
    else:
        words.append("No run had started; nothing was recorded.")
    if stop.experiment_id:
        words.append(f"Experiment id: {stop.experiment_id}.")
    if stop.data_dir is not None:
        where = f"Data directory: {stop.data_dir}"
        if stop.tiled_uri:
            where += f" (runs in {stop.tiled_uri})"
        words.append(where + ".")
    words.extend(stop.notes)
    if runs and stop.experiment_id:
        again = command or "operando run ..."
        words.append(
            f"The plan's cleanup ran first (X-rays off, the cell at open circuit). To continue "
            f"the experiment: `{again} --resume {stop.experiment_id}` with the same "
            f"--data-dir (`operando reduce {stop.experiment_id}` reduces what was saved)."
        )
    return " ".join(words)


_ACTIVE: list[SignalGuard] = []


def active() -> SignalGuard | None:
    """The innermost :class:`SignalGuard` in force in this process, if any."""
    return _ACTIVE[-1] if _ACTIVE else None


class _AbortRecordFilter(logging.Filter):
    """Drop the traceback bluesky logs for a run aborted on purpose (the summary says it)."""

    def __init__(self, guard: SignalGuard):
        super().__init__()
        self.guard = guard

    def filter(self, record: logging.LogRecord) -> bool:
        if self.guard.signum is None:
            return True
        if record.getMessage() == "No open traces left to close!":  # an abort's tracing
            return False
        if not record.exc_info:
            return True
        exc = record.exc_info[1]
        name = type(exc).__name__
        if name in ("RequestAbort", "CancelledError", "RunEngineInterrupted", "PlanHalt"):
            logger.info("%s (after %s)", record.getMessage(), signal_name(self.guard.signum))
            return False
        return True


class SignalGuard:
    """SIGINT and SIGTERM handling for a command (see the module docstring).

    ``signum`` is the first signal received (None until then). Use in the main
    thread; one guard per command (nested guards hand back the outer handlers).
    """

    def __init__(self, signals=SIGNALS, *, stream=None):
        self.signals = tuple(signals)
        self.stream = stream
        self.signum: int | None = None
        self._previous: dict = {}
        self._run_engine = None
        self._shielded = 0
        self._lock = threading.Lock()
        self._filter = _AbortRecordFilter(self)

    # -- the command's side ----------------------------------------------------
    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("a SignalGuard handles signals: enter it in the main thread")
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        logging.getLogger("bluesky").addFilter(self._filter)
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        if _ACTIVE and _ACTIVE[-1] is self:
            _ACTIVE.pop()
        logging.getLogger("bluesky").removeFilter(self._filter)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def interrupted(self) -> bool:
        return self.signum is not None

    def check(self, **context) -> None:
        """Raise :class:`Interrupted` (with ``context``) if a signal came meanwhile."""
        if self.signum is not None:
            raise Interrupted(self.signum, **context)

    @contextlib.contextmanager
    def shielded(self):
        """A block a signal does not break (draining, stopping children): the
        signal is remembered (``signum``) and the block goes on."""
        self._shielded += 1
        try:
            yield self
        finally:
            self._shielded -= 1

    # -- the RunEngine's side ----------------------------------------------------
    def run_engine_context(self, RE):
        """For ``RE.context_managers``: while ``RE`` runs a plan, a signal aborts it."""
        return _RunEngineAbort(self, RE)

    def attach(self, RE) -> None:
        """Make ``RE`` handle this guard's signals (instead of bluesky's SigintHandler)."""
        RE.context_managers = [self.run_engine_context]

    # -- the handler -------------------------------------------------------------
    def _say(self, text: str) -> None:
        print(f"operando: {text}", file=self.stream or sys.stderr, flush=True)

    def _handle(self, signum, frame) -> None:
        with self._lock:
            first = self.signum is None
            if first:
                self.signum = signum
            RE = self._run_engine
        name = signal_name(signum)
        if not first:
            self._say(
                f"{name}: already stopping (writing what was recorded, stopping the "
                "simulators and Tiled); SIGKILL would lose the data in flight"
            )
            return
        if RE is not None:
            self._say(f"{name}: aborting the plan (cleanup and stop document first)")
            threading.Thread(
                target=self._abort, args=(RE, name), name="operando-abort", daemon=True
            ).start()
            return
        if self._shielded:
            self._say(f"{name}: stopping after the current step")
            return
        self._say(f"{name}: stopping")
        raise Interrupted(signum)

    def _abort(self, RE, name: str) -> None:
        from bluesky.utils import TransitionError

        try:
            RE.abort(reason=f"{name} received")
        except (TransitionError, RuntimeError) as err:
            # the plan had just ended: the job sees ``signum`` once RE(...) returns
            logger.warning("abort on %s: %s (state %s)", name, err, RE.state)


class _RunEngineAbort:
    """The RunEngine's context manager: the guard aborts ``RE`` while it runs."""

    def __init__(self, guard: SignalGuard, RE):
        self.guard = guard
        self.RE = RE

    def __enter__(self):
        with self.guard._lock:
            self.guard._run_engine = self.RE
        return self

    def __exit__(self, *exc) -> None:
        with self.guard._lock:
            self.guard._run_engine = None


class PollingDuringTask(DefaultDuringTask):
    """How the RunEngine's caller (the main thread) waits for the plan: in slices
    of ``interval`` s, so that a signal taken by another thread is handled at
    once (the handler runs between two slices). With a Qt backend of matplotlib
    it waits as bluesky's ``DefaultDuringTask`` does (Qt's loop, which wakes)."""

    interval = 0.1

    def block(self, blocking_event) -> None:
        if "matplotlib" in sys.modules:
            import matplotlib

            if "qt" in matplotlib.get_backend().lower():
                return super().block(blocking_event)
        while not blocking_event.wait(self.interval):
            pass


def stop_process_group(proc, *, grace: float = 10.0) -> None:
    """SIGTERM to a child started in a session of its own (its whole group), then
    SIGKILL if it has not exited after ``grace`` s; nothing if it already exited."""
    import subprocess

    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _prctl():
    return ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent(parent: int, prctl=None) -> None:
    """SIGTERM to this process when its parent ``parent`` dies, SIGKILL included
    (Linux ``PR_SET_PDEATHSIG``; nothing elsewhere). A parent already gone (a race
    with its death: this process was reparented) means exit at once."""
    prctl = prctl or _prctl()
    if prctl is None:
        return
    prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent or os.getppid() == 1:
        os._exit(1)


def child_preexec():
    """A ``preexec_fn`` for the children: SIGTERM when this process dies
    (:func:`die_with_parent`), and umask 077 (private files).

    It runs in the child between fork and exec. The death signal fires when the
    *thread* that forked the child ends: start children from the main thread (or
    a thread that lives as long as the process).
    """
    parent = os.getpid()
    prctl = _prctl()  # loaded before the fork: nothing to look up in the child

    def preexec() -> None:
        os.umask(CHILD_UMASK)
        if prctl is not None:
            die_with_parent(parent, prctl)

    return preexec
