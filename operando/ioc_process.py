"""Run a simulator IOC as a subprocess and wait until it serves its PVs."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path


@contextlib.contextmanager
def _epics_env(env: dict):
    """The IOC's EPICS_* variables in ``os.environ`` for a sync client call."""
    saved = {k: os.environ.get(k) for k in env if k.startswith("EPICS_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("EPICS_")})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def random_prefix(stem: str = "SIM") -> str:
    return f"{stem}{secrets.token_hex(3)}:"


class IOCProcess:
    """``python -m module --prefix P ...`` in its own session; a context manager.

    Ready when ``ready_pv`` (relative to the prefix) answers a Channel Access read,
    polled, never a fixed sleep.
    """

    def __init__(self, module: str, prefix: str, *, args=(), env: dict | None = None,
                 ready_pv: str = "clock:time", log_path: Path | None = None,
                 startup_timeout: float = 30.0):
        self.module = module
        self.prefix = prefix
        self.args = [str(a) for a in args]
        self.env = dict(os.environ, **(env or {}))
        self.ready_pv = ready_pv
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    def start(self) -> "IOCProcess":
        cmd = [sys.executable, "-m", self.module, "--prefix", self.prefix, "-q", *self.args]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        if self.log_path:
            out.close()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        from caproto.sync.client import read

        with _epics_env(self.env):
            deadline = time.monotonic() + self.startup_timeout
            pv = self.prefix + self.ready_pv
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"IOC {self.module} exited with code "
                                       f"{self.process.returncode} (log: {self.log_path})")
                try:
                    read(pv, timeout=0.5, repeater=False)
                    return
                except Exception:
                    continue
            self.stop()
            raise TimeoutError(f"IOC {self.module} did not serve {pv} within "
                               f"{self.startup_timeout} s")

    def release_hold(self) -> None:
        """Start the simulated clock of an IOC started with ``--hold`` (cell time 0 = now)."""
        from caproto.sync.client import write

        with _epics_env(self.env):
            write(self.prefix + "clock:hold", 0, notify=True, timeout=5.0, repeater=False)

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def __enter__(self) -> "IOCProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
