"""Run a simulator IOC as a subprocess and wait until it serves its PVs."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import epics_env
from .shutdown import child_preexec


def random_prefix(stem: str = "SIM") -> str:
    return f"{stem}{secrets.token_hex(3)}:"


def _private_log(path: Path):
    """``path`` opened for appending, readable by its owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.chmod(path, 0o600)
    return os.fdopen(fd, "ab")


class IOCProcess:
    """``python -m module --prefix P ...`` in its own session; a context manager.

    The IOC does not outlive this process: it gets SIGTERM when this process
    dies, SIGKILL included (:func:`operando.shutdown.child_preexec`), and stops
    cleanly on it (HDF5 files closed). Its own session keeps a terminal's Ctrl-C
    away from it: the parent aborts the plan first, with the IOC still serving,
    then stops it. Its files are created with umask 077.

    The IOC serves Channel Access on 127.0.0.1 on a free port of its own (two
    servers on one loopback port do not both answer), which this process's
    clients are told to search. Ready when ``ready_pv`` (relative to the prefix)
    answers a read, polled, never a fixed sleep.
    """

    def __init__(
        self,
        module: str,
        prefix: str,
        *,
        args=(),
        ready_pv: str = "clock:time",
        log_path: Path | None = None,
        startup_timeout: float = 120.0,
    ):
        self.module = module
        self.prefix = prefix
        self.args = [str(a) for a in args]
        self.port = epics_env.free_tcp_udp_port()
        self.env = dict(os.environ, **epics_env.loopback_env(self.port))
        self.ready_pv = ready_pv
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._beacon_sink: socket.socket | None = None

    def start(self) -> IOCProcess:
        epics_env.reach(self.port)
        # Receive (and drop) the IOC's beacons: sent to a closed port, each one
        # logs a traceback in the IOC's output.
        self._beacon_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._beacon_sink.bind(("127.0.0.1", self.port + 1))
        cmd = [sys.executable, "-m", self.module, "--prefix", self.prefix, "-q", *self.args]
        out = _private_log(self.log_path) if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            cmd,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=child_preexec(),
        )
        if self.log_path:
            out.close()
        try:
            self.wait_ready()
        except BaseException:  # a signal or a failure while starting: no orphan
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        from caproto.sync.client import read

        # start() put this IOC's 127.0.0.1:port in the clients' address list.
        deadline = time.monotonic() + self.startup_timeout
        pv = self.prefix + self.ready_pv
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"IOC {self.module} exited with code "
                    f"{self.process.returncode} (log: {self.log_path})"
                )
            try:
                read(pv, timeout=0.5, repeater=False)
                return
            except Exception:
                continue
        self.stop()
        raise TimeoutError(f"IOC {self.module} did not serve {pv} within {self.startup_timeout} s")

    def release_hold(self) -> None:
        """Start the simulated clock of an IOC started with ``--hold`` (cell time 0 = now)."""
        from caproto.sync.client import write

        write(self.prefix + "clock:hold", 0, notify=True, timeout=5.0, repeater=False)

    def stop(self) -> None:
        from .shutdown import stop_process_group

        proc, self.process = self.process, None
        try:
            stop_process_group(proc, grace=10)
        finally:
            epics_env.forget(self.port)
            if self._beacon_sink is not None:
                self._beacon_sink.close()
                self._beacon_sink = None

    def kill(self) -> None:
        """SIGKILL the IOC (a crash: no clean shutdown); its port stays this IOC's."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def restart(self, *, kill: bool = True) -> IOCProcess:
        """Stop the IOC (SIGKILL, or SIGTERM with ``kill=False``) and start it again
        with the same prefix, port and arguments (with its autosave it continues
        where it was). The new child dies with the thread that starts it
        (``PR_SET_PDEATHSIG``): call it from a thread that outlives the IOC."""
        if kill:
            self.kill()
        self.stop()
        return self.start()

    @property
    def returncode(self):
        return None if self.process is None else self.process.returncode

    def __enter__(self) -> IOCProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
