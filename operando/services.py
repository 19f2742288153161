"""Services the facility-scale features run beside the station: Redis.

Redis is the queue server's store and Tiled's streaming cache. The project
installs it from the distribution's packages (``scripts/install-services``,
``make services``) and starts its own servers on 127.0.0.1 and free ports; it
never assumes one is running.

>>> with RedisServer(Path("data/redis")) as redis:
...     redis.uri          # 'redis://127.0.0.1:PORT'
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .shutdown import child_preexec
from .tiled_server import free_port

INSTALL_HINT = "run `make services` (scripts/install-services installs redis-server)"


def redis_executable() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError(f"redis-server is not installed: {INSTALL_HINT}")
    return exe


def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Redis server answers ``PING`` at host:port (plain RESP, no client library)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` subprocess on 127.0.0.1, nothing persisted; a context manager.

    Its working directory (``directory``) holds its log. Stopped with SIGTERM
    (SIGKILL after a grace period) together with its process group.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 20.0,
    ):
        self.directory = Path(directory)
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"redis://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port``, as bluesky-queueserver's ``--redis-addr`` takes it."""
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cmd = [
            redis_executable(),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
            "--protected-mode",
            "yes",
        ]
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            # SIGTERM when this process dies (SIGKILL included), as Tiled and
            # the IOCs get: a streaming cache outliving its server serves no one
            preexec_fn=child_preexec(),
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with code {self.process.returncode}; see {self.log_path}"
                )
            if ping(self.host, self.port):
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on {self.address}; see {self.log_path}")

    def stop(self) -> None:
        from .shutdown import stop_process_group

        proc, self.process = self.process, None
        stop_process_group(proc, grace=10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
