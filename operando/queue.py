"""The queue server: bluesky-queueserver's RE Manager on Redis, beside the stations and Tiled.

``operando queue start`` runs, in the foreground, everything beamline staff need
to queue plans and leave them running:

- the stations and Tiled: the ones named (``--xct-prefix``, ``--saxs-prefix``,
  ``--tiled-uri`` + ``$TILED_API_KEY``), or simulators and the embedded Tiled
  started by this process (never by the RE Worker, which runs no atexit handler
  and would orphan them);
- a Redis server of its own (``operando.services.RedisServer``: loopback, a free port);
- the RE Manager, its 0MQ control and info sockets on 127.0.0.1, loading the
  IPython profile's startup code (``profile_collection/startup``) pointed at the
  stations and Tiled through the environment (``OPERANDO_XCT_PREFIX``, ...);
- with ``--http``, bluesky-httpserver for remote clients, which need its API key
  (``$OPERANDO_QUEUE_API_KEY`` or ``DATA_DIR/queue/api_key``, mode 0600).

SIGINT or SIGTERM stops it cleanly: a running plan is paused and aborted (its
cleanup leaves the source off and the cell at open circuit), the environment is
closed, the manager stopped (``manager stop``), then the HTTP server, Redis, and
the simulators and Tiled it started; the queue history is saved as JSON. Exit
status 128 + the signal's number. See ``docs/queue.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import epics_env
from .ioc_process import IOCProcess, random_prefix
from .services import RedisServer
from .tiled_server import DataLayout, TiledServer, ensure_api_key, free_port

REPOSITORY = Path(__file__).resolve().parents[1]
#: the IPython profile's startup code, loaded by the RE Worker too
STARTUP_DIR = REPOSITORY / "profile_collection" / "startup"
#: checked-in configuration: the plans and devices, the user groups
CONFIG_DIR = REPOSITORY / "queue"
PLANS_DEVICES = "existing_plans_and_devices.yaml"
PERMISSIONS = "user_group_permissions.yaml"

#: the HTTP server's API key, when not in DATA_DIR/queue/api_key
API_KEY_ENV = "OPERANDO_QUEUE_API_KEY"
#: bluesky-httpserver reads its single-user key from this variable
HTTP_KEY_ENV = "QSERVER_HTTP_SERVER_SINGLE_USER_API_KEY"
#: the ports bluesky-queueserver and bluesky-httpserver use by default
DEFAULT_CONTROL_PORT, DEFAULT_INFO_PORT, DEFAULT_HTTP_PORT = 60615, 60625, 60610
#: what a stopping plan and a closing environment may take (s)
STOP_TIMEOUT = 60.0


def _bin(name: str) -> str:
    """An executable installed beside this interpreter (the venv's), else on PATH."""
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (pip install bluesky-queueserver)")
    return found


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _private_log(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.chmod(path, 0o600)
    return os.fdopen(fd, "ab")


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _say(message: str) -> None:
    print(f"operando queue: {message}", file=sys.stderr, flush=True)


def _stop_process(proc: subprocess.Popen | None, sig=signal.SIGTERM, timeout: float = 15.0):
    """Stop a child started in its own session, with its process group (SIGKILL after ``timeout``)."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
    try:  # the group may outlive its leader (a worker the manager spawned)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=5)


@dataclass
class Stations:
    """The stations and Tiled the RE Worker uses: named, or started here (and stopped here)."""

    layout: DataLayout
    tiled_uri: str | None = None
    tiled_api_key: str | None = None
    xct_prefix: str | None = None
    saxs_prefix: str | None = None
    time_scale: str = "1"
    seed: int = 0
    started: list = field(default_factory=list)

    def start(self, check=lambda: None) -> Stations:
        """Start what is not named; ``check()`` between steps (raises on a signal)."""
        epics_env.use_loopback_if_unset()
        self.layout.create()
        if not self.tiled_uri:
            server = TiledServer(self.layout, startup_timeout=180.0)
            self.started.append(server)
            server.start()
            self.tiled_uri, self.tiled_api_key = server.uri, server.api_key
            check()
        for kind in ("xct", "saxs"):
            if getattr(self, f"{kind}_prefix"):
                continue
            frames = self.layout.frames / kind
            frames.mkdir(parents=True, exist_ok=True)
            ioc = IOCProcess(
                f"operando.iocs.{kind}",
                random_prefix(kind.upper()),
                args=[
                    "--time-scale",
                    self.time_scale,
                    "--data-dir",
                    frames,
                    "--seed",
                    self.seed,
                    "--truth-file",
                    self.layout.root / f"{kind}-truth.jsonl",
                ],
                log_path=self.layout.root / f"{kind}-ioc.log",
            )
            self.started.append(ioc)
            ioc.start()
            setattr(self, f"{kind}_prefix", ioc.prefix)
            check()
        return self

    def environment(self) -> dict:
        """What the profile's startup code reads (``operando.profile``), and Channel Access."""
        env = {
            "OPERANDO_XCT_PREFIX": self.xct_prefix or "",
            "OPERANDO_SAXS_PREFIX": self.saxs_prefix or "",
            "OPERANDO_TILED_URI": self.tiled_uri or "",
            "TILED_API_KEY": self.tiled_api_key or "",
            "OPERANDO_DATA_DIR": str(self.layout.root),
            "OPERANDO_TIME_SCALE": str(self.time_scale),
        }
        env.update({k: v for k, v in os.environ.items() if k.startswith("EPICS_")})
        return env

    def processes(self) -> list:
        return [p.process for p in self.started if p.process is not None]

    def stop(self) -> None:
        while self.started:
            self.started.pop().stop()


@dataclass
class QueueLayout:
    """``DATA_DIR/queue``: the manager's configuration copies, logs, key, Redis, history."""

    root: Path

    @classmethod
    def under(cls, layout: DataLayout) -> QueueLayout:
        return cls(layout.root / "queue")

    plans_devices = property(lambda self: self.root / PLANS_DEVICES)
    permissions = property(lambda self: self.root / PERMISSIONS)
    api_key_file = property(lambda self: self.root / "api_key")
    redis = property(lambda self: self.root / "redis")
    manager_log = property(lambda self: self.root / "re-manager.log")
    http_log = property(lambda self: self.root / "http-server.log")
    state_file = property(lambda self: self.root / "server.json")
    history = property(lambda self: self.root / "history")


def api_key(queue_layout: QueueLayout) -> str:
    """The HTTP server's API key: ``$OPERANDO_QUEUE_API_KEY``, else the 0600 file (made once)."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if key:
        if not key.isalnum():
            raise ValueError(f"${API_KEY_ENV} must be alphanumeric")
        return key
    return ensure_api_key(queue_layout.api_key_file)


class QueueServer:
    """Redis, the RE Manager on the startup code (and bluesky-httpserver); a context manager.

    ``env`` is added to the manager's environment (the stations and Tiled:
    :meth:`Stations.environment`). The checked-in configuration (``config_dir``)
    is copied into ``DATA_DIR/queue`` at each start; the manager then rewrites
    the plans and devices there each time the environment opens.
    """

    def __init__(
        self,
        layout: DataLayout,
        env: dict,
        *,
        startup_dir: Path = STARTUP_DIR,
        config_dir: Path = CONFIG_DIR,
        control_port: int | None = None,
        info_port: int | None = None,
        http: bool = False,
        http_host: str = "127.0.0.1",
        http_port: int | None = None,
        startup_timeout: float = 60.0,
    ):
        self.layout = layout
        self.paths = QueueLayout.under(layout)
        self.env = dict(env)
        self.startup_dir = Path(startup_dir)
        self.config_dir = Path(config_dir)
        self.control_addr = f"tcp://127.0.0.1:{control_port or free_port()}"
        self.info_addr = f"tcp://127.0.0.1:{info_port or free_port()}"
        self.http = http
        self.http_host = http_host
        self.http_port = http_port or free_port(http_host)
        self.startup_timeout = startup_timeout
        self.redis: RedisServer | None = None
        self.manager: subprocess.Popen | None = None
        self.http_server: subprocess.Popen | None = None
        self.api_key = ""

    @property
    def http_uri(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    def api(self, **kwargs):
        """A ``REManagerAPI`` (0MQ) client of this manager, group ``primary`` (the admins)."""
        from bluesky_queueserver_api.zmq import REManagerAPI

        return REManagerAPI(
            zmq_control_addr=self.control_addr, zmq_info_addr=self.info_addr, **kwargs
        )

    # -- start ---------------------------------------------------------------

    def start(self, check=lambda: None) -> QueueServer:
        _private_dir(self.paths.root)
        for port_of in (self.control_addr, self.info_addr):
            port = int(port_of.rsplit(":", 1)[1])
            if not _port_free("127.0.0.1", port):
                raise RuntimeError(f"port {port} on 127.0.0.1 is in use (another queue server?)")
        for name in (PLANS_DEVICES, PERMISSIONS):
            shutil.copyfile(self.config_dir / name, self.paths.root / name)
        self.redis = RedisServer(self.paths.redis)
        self.redis.start()
        check()
        self._start_manager()
        check()
        if self.http:
            self._start_http()
            check()
        return self

    def _start_manager(self) -> None:
        cmd = [
            _bin("start-re-manager"),
            "--startup-dir",
            str(self.startup_dir),
            "--existing-plans-devices",
            str(self.paths.plans_devices),
            "--update-existing-plans-devices",
            "ENVIRONMENT_OPEN",
            "--user-group-permissions",
            str(self.paths.permissions),
            "--redis-addr",
            self.redis.address,
            "--zmq-control-addr",
            self.control_addr,
            "--zmq-info-addr",
            self.info_addr,
            "--zmq-publish-console",
            "ON",
        ]
        env = dict(os.environ, **self.env)
        env.pop(HTTP_KEY_ENV, None)
        env.setdefault("MPLBACKEND", "Agg")
        with _private_log(self.paths.manager_log) as log:
            self.manager = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._wait(lambda: self._answers(), self.manager, "the RE Manager", self.paths.manager_log)

    def _answers(self) -> bool:
        api = self.api(timeout_recv=1.0)
        try:
            api.status()
            return True
        except Exception:
            return False
        finally:
            api.close()

    def _start_http(self) -> None:
        import httpx

        self.api_key = api_key(self.paths)
        env = dict(
            os.environ,
            **{
                HTTP_KEY_ENV: self.api_key,
                "QSERVER_ZMQ_CONTROL_ADDRESS": self.control_addr,
                "QSERVER_ZMQ_INFO_ADDRESS": self.info_addr,
            },
        )
        cmd = [
            _bin("start-bluesky-httpserver"),
            "--host",
            self.http_host,
            "--port",
            str(self.http_port),
        ]
        with _private_log(self.paths.http_log) as log:
            self.http_server = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

        def answers():
            try:
                return httpx.get(f"{self.http_uri}/api", timeout=1.0).status_code < 500
            except httpx.HTTPError:
                return False

        self._wait(answers, self.http_server, "the HTTP server", self.paths.http_log)

    def _wait(self, ready, proc, what: str, log: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with code {proc.returncode}; see {log}")
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{what} did not answer within {self.startup_timeout} s; see {log}")

    def open_environment(self, timeout: float = 300.0, check=lambda: None) -> None:
        """Open the RE Worker environment (the startup code connects the stations and
        Tiled); ``check()`` every second (raises on a signal)."""
        api = self.api()
        try:
            api.environment_open()
            deadline = time.monotonic() + timeout
            while True:
                check()
                try:
                    api.wait_for_idle(timeout=1.0)
                    break
                except api.WaitTimeoutError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"the RE Worker environment did not open within {timeout} s; "
                            f"see {self.paths.manager_log}"
                        ) from None
            if not api.status()["worker_environment_exists"]:
                raise RuntimeError(
                    f"the RE Worker environment did not open (the startup code failed); "
                    f"see {self.paths.manager_log}"
                )
        finally:
            api.close()

    def processes(self) -> list:
        procs = [self.manager, self.http_server]
        if self.redis is not None:
            procs.append(self.redis.process)
        return [p for p in procs if p is not None]

    # -- stop ----------------------------------------------------------------

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """Abort a running plan (its cleanup runs), close the environment, stop the
        manager (``manager stop``), save the history; then the HTTP server and Redis."""
        try:
            if self.manager is not None and self.manager.poll() is None:
                self._stop_manager(timeout)
        finally:
            _stop_process(self.manager, timeout=10)
            self.manager = None
            _stop_process(self.http_server, sig=signal.SIGINT, timeout=10)
            self.http_server = None
            if self.redis is not None:
                self.redis.stop()
                self.redis = None

    def _stop_manager(self, timeout: float) -> None:
        api = self.api(timeout_recv=5.0)
        try:
            status = api.status(reload=True)
            if status["manager_state"] in ("executing_queue", "starting_queue", "paused"):
                if status["re_state"] != "paused":
                    _say("pausing the running plan")
                    api.re_pause("immediate")
                # the manager says 'paused' before the RunEngine does: wait for the RunEngine
                api.wait_for_condition(
                    lambda s: s["re_state"] in ("paused", "idle") or s["manager_state"] == "idle",
                    timeout=timeout,
                )
                if api.status(reload=True)["re_state"] == "paused":
                    _say("aborting it (its cleanup runs)")
                    api.re_abort()  # the plan's cleanup runs: source off, cell at OCV
                api.wait_for_idle(timeout=timeout)
            elif status["manager_state"] != "idle":
                api.wait_for_idle(timeout=timeout)
            if self.save_history(api):
                _say(f"history saved in {self.paths.history}")
            if api.status(reload=True)["worker_environment_exists"]:
                _say("closing the environment")
                try:
                    api.environment_close()
                    api.wait_for_idle(timeout=timeout)
                except Exception:
                    api.environment_destroy()
                    api.wait_for_idle(timeout=timeout)
            _say("stopping the manager")
            api.send_request(method="manager_stop", params={"option": "safe_on"})
            self.manager.wait(timeout=timeout)
        except Exception as err:  # the group is killed next: say why
            _say(f"the manager did not stop cleanly ({type(err).__name__}: {err})")
        finally:
            api.close()

    def save_history(self, api) -> Path | None:
        """The queue's history (plans, exit status, errors, run uids) as JSON:
        Redis keeps nothing once stopped."""
        history = api.history_get().get("items", [])
        if not history:
            return None
        _private_dir(self.paths.history)
        path = self.paths.history / time.strftime("history-%Y%m%dT%H%M%S.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(history, f, indent=1, default=str)
        return path

    def __enter__(self) -> QueueServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the command line -------------------------------------------------------------


class Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """SIGINT/SIGTERM recorded, not raised anywhere: the command checks between steps."""

    def __init__(self):
        self.signum: int | None = None
        self.event = threading.Event()
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            print(
                f"operando queue: {signal.Signals(signum).name}: stopping",
                file=sys.stderr,
                flush=True,
            )
        self.event.set()

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _write_state(server: QueueServer, stations: Stations) -> None:
    state = {
        "pid": os.getpid(),
        "zmq_control_addr": server.control_addr,
        "zmq_info_addr": server.info_addr,
        "http_uri": server.http_uri if server.http else None,
        "tiled_uri": stations.tiled_uri,
        "xct_prefix": stations.xct_prefix,
        "saxs_prefix": stations.saxs_prefix,
    }
    fd = os.open(server.paths.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1)


def read_state(data_dir) -> dict:
    path = QueueLayout.under(DataLayout.at(data_dir)).state_file
    if not path.exists():
        raise FileNotFoundError(f"no queue server running on {data_dir} ({path} not found)")
    return json.loads(path.read_text())


def _compare_plans_devices(server: QueueServer) -> bool:
    """True when the list the manager wrote at environment open is the checked-in one."""
    import yaml

    written = yaml.safe_load(server.paths.plans_devices.read_text())
    checked_in = yaml.safe_load((server.config_dir / PLANS_DEVICES).read_text())
    return written == checked_in


def cmd_start(args) -> int:
    layout = DataLayout.at(args.data_dir)
    tiled_key = os.environ.get("TILED_API_KEY") if args.tiled_uri else None
    if args.tiled_uri and not tiled_key:
        print("operando queue: --tiled-uri needs $TILED_API_KEY", file=sys.stderr)
        return 2
    stations = Stations(
        layout,
        tiled_uri=args.tiled_uri,
        tiled_api_key=tiled_key,
        xct_prefix=args.xct_prefix,
        saxs_prefix=args.saxs_prefix,
        time_scale=str(args.time_scale),
        seed=args.seed,
    )
    server = None
    with _Signals() as signals:
        try:
            stations.start(signals.check)
            server = QueueServer(
                layout,
                stations.environment(),
                startup_dir=args.startup_dir,
                control_port=args.control_port,
                info_port=args.info_port,
                http=args.http,
                http_host=args.http_host,
                http_port=args.http_port,
            )
            server.start(signals.check)
            _write_state(server, stations)
            if not args.no_open:
                server.open_environment(check=signals.check)
                if not _compare_plans_devices(server):
                    print(
                        f"operando queue: the plans and devices differ from {CONFIG_DIR / PLANS_DEVICES}"
                        f" (regenerate it: make queue-config); the manager uses {server.paths.plans_devices}",
                        file=sys.stderr,
                    )
            _print_started(server, stations, opened=not args.no_open)
            return _serve(server, stations, signals)
        except Interrupted as stop:
            return 128 + stop.signum
        except (RuntimeError, TimeoutError, FileNotFoundError, ValueError) as err:
            print(f"operando queue: {err}", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if server is not None:
                server.stop()
                server.paths.state_file.unlink(missing_ok=True)
            stations.stop()
            print("operando queue: stopped", file=sys.stderr, flush=True)


def _serve(server: QueueServer, stations: Stations, signals: _Signals) -> int:
    """Until a signal, or a child dying (then everything stops, status 1)."""
    watched = server.processes() + stations.processes()
    while not signals.event.wait(1.0):
        for proc in watched:
            if proc.poll() is not None:
                print(
                    f"operando queue: {' '.join(map(str, proc.args[:2]))} exited with "
                    f"code {proc.returncode}; stopping (logs in {server.paths.root})",
                    file=sys.stderr,
                )
                return 1
    return 128 + signals.signum


def _print_started(server: QueueServer, stations: Stations, *, opened: bool) -> None:
    print(f"queue server: RE Manager at {server.control_addr} (info {server.info_addr})")
    print(f"  startup code {server.startup_dir}; environment {'open' if opened else 'closed'}")
    print(f"  XCT at {stations.xct_prefix}, SAXS/WAXS at {stations.saxs_prefix}")
    print(f"  Tiled at {stations.tiled_uri}")
    print(f"  qserver --zmq-control-addr {server.control_addr} status")
    if server.http:
        key_from = (
            f"${API_KEY_ENV}" if os.environ.get(API_KEY_ENV) else str(server.paths.api_key_file)
        )
        print(f"  HTTP: {server.http_uri}/api (API key in {key_from})")
    print(f"  logs and history in {server.paths.root}; Ctrl-C or SIGTERM stops it", flush=True)


def cmd_status(args) -> int:
    from bluesky_queueserver_api.zmq import REManagerAPI

    state = read_state(args.data_dir)
    api = REManagerAPI(zmq_control_addr=state["zmq_control_addr"], timeout_recv=5.0)
    try:
        status = api.status()
    finally:
        api.close()
    print(f"queue server (pid {state['pid']}) at {state['zmq_control_addr']}")
    for key in (
        "manager_state",
        "re_state",
        "worker_environment_exists",
        "items_in_queue",
        "items_in_history",
        "running_item_uid",
    ):
        print(f"  {key}: {status.get(key)}")
    return 0


def _running(pid: int) -> bool:
    """``pid`` runs (a zombie has exited: it only waits for its parent to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] != "Z"


def cmd_stop(args) -> int:
    """SIGTERM to the ``operando queue start`` of this data directory; waits until it is gone."""
    state = read_state(args.data_dir)
    pid = int(state["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"operando queue: process {pid} is not running", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            print(f"queue server (pid {pid}) stopped")
            return 0
        time.sleep(0.2)
    print(f"operando queue: process {pid} still running after {args.timeout} s", file=sys.stderr)
    return 1


def generate_plans_devices(
    output_dir: Path, *, startup_dir: Path = STARTUP_DIR, time_scale: str = "virtual"
) -> Path:
    """``existing_plans_and_devices.yaml`` of the startup code, by the queue server's
    own tool (``qserver-list-plans-devices``), against simulators and an embedded
    Tiled started for it in a temporary directory."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="operando-queue-") as tmp:
        stations = Stations(DataLayout.at(tmp), time_scale=time_scale)
        try:
            stations.start()
            env = dict(os.environ, **stations.environment())
            env.setdefault("MPLBACKEND", "Agg")
            subprocess.run(
                [
                    _bin("qserver-list-plans-devices"),
                    "--startup-dir",
                    str(startup_dir),
                    "--file-dir",
                    str(output_dir),
                    "--file-name",
                    PLANS_DEVICES,
                ],
                env=env,
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd=tmp,
            )
        finally:
            stations.stop()
    return output_dir / PLANS_DEVICES


def cmd_plans_devices(args) -> int:
    path = generate_plans_devices(Path(args.output), startup_dir=Path(args.startup_dir))
    print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    """``operando queue start|status|stop|plans-devices``."""
    queue = sub.add_parser(
        "queue", help="the queue server (RE Manager, Redis, HTTP) for unattended runs"
    )
    qsub = queue.add_subparsers(dest="queue_command", required=True)
    start = qsub.add_parser("start", help="run the queue server in the foreground")
    start.add_argument(
        "--tiled-uri",
        help="an existing Tiled server (key from $TILED_API_KEY; it must read --data-dir); "
        "default: the embedded one, started and stopped here",
    )
    start.add_argument(
        "--xct-prefix", help="PV prefix of a running XCT station (default: start the simulators)"
    )
    start.add_argument(
        "--saxs-prefix",
        help="PV prefix of a running SAXS/WAXS station (default: start the simulators)",
    )
    start.add_argument("--data-dir", default="data", help="data, logs, history (default ./data)")
    start.add_argument(
        "--time-scale",
        default="1",
        help="the simulators' clock when started here: a number (1 = real time) or 'virtual'",
    )
    start.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    start.add_argument(
        "--http", action="store_true", help="also run bluesky-httpserver (API key required)"
    )
    start.add_argument(
        "--http-host", default="127.0.0.1", help="HTTP server address (default 127.0.0.1 only)"
    )
    start.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT)
    start.add_argument("--control-port", type=int, default=DEFAULT_CONTROL_PORT)
    start.add_argument("--info-port", type=int, default=DEFAULT_INFO_PORT)
    start.add_argument(
        "--startup-dir", default=str(STARTUP_DIR), help="startup code (default: the profile's)"
    )
    start.add_argument(
        "--no-open",
        action="store_true",
        help="leave the RE Worker environment closed (open it with qserver environment open)",
    )
    for name, helptext in (("status", "the manager's state"), ("stop", "stop a queue start")):
        p = qsub.add_parser(name, help=helptext)
        p.add_argument("--data-dir", default="data")
        if name == "stop":
            p.add_argument("--timeout", type=float, default=120.0)
    gen = qsub.add_parser(
        "plans-devices",
        help="regenerate existing_plans_and_devices.yaml (qserver-list-plans-devices on simulators)",
    )
    gen.add_argument("--output", default=str(CONFIG_DIR))
    gen.add_argument("--startup-dir", default=str(STARTUP_DIR))


def main(args) -> int:
    handlers = {
        "start": cmd_start,
        "status": cmd_status,
        "stop": cmd_stop,
        "plans-devices": cmd_plans_devices,
    }
    return handlers[args.queue_command](args)
