"""The embedded Tiled catalog: a ``tiled serve config`` process on SQLite and files.

Layout of a data root (``./data`` by default)::

    data/
      api_key            the server's single-user API key (mode 0600, made once)
      catalog.db         SQLite catalog (metadata, data sources)
      tables.sqlite      event tables (SQLite writable storage; a data root made
                         before keeps its tables.duckdb, see DataLayout.tables)
                         (both in PostgreSQL instead with a ``catalog_uri``
                         ``postgresql+asyncpg://USER@HOST:PORT/catalog``: the
                         tables then go to the database ``tables`` beside it)
      arrays/            arrays written through Tiled (zarr)
      frames/            detector HDF5 files, registered as external assets
      backup/            TiledWriter's JSON-lines backup of runs Tiled refused
      tiled-config.yml   the server's configuration (catalog, exporters), written at start

The directories are private (0700) and the server writes with umask 077; it
dies with the process that started it (SIGTERM on its parent's death).
The server listens on 127.0.0.1 only and requires the API key for everything;
the key reaches it through the environment (``TILED_SINGLE_USER_API_KEY``), not
its command line. Its configuration registers the exporters of
:mod:`operando.exporters` (NXtomo, NXcanSAS, TIFF, NeXus).
It is a separate process (not tiled's in-process ``SimpleTiledServer``) so that
detector files written live with SWMR are read exactly as a facility server
would read them, and so that ``operando serve`` and ``operando run`` share it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from .shutdown import child_preexec

#: mode of the data directories: the owner only
PRIVATE_DIR = 0o700

RUNS_CONTAINER = "raw"
REDUCED_CONTAINER = "reduced"


#: the SQLAlchemy drivers Tiled's catalog takes for PostgreSQL
POSTGRES_CATALOG_SCHEMES = ("postgresql+asyncpg",)


def check_catalog_uri(uri: str | None) -> str | None:
    """``None`` (SQLite under the data root), a SQLite URI or path, or
    ``postgresql+asyncpg://USER@HOST:PORT/DB``; anything else is refused here,
    with a clear message, before a server starts."""
    if uri is None:
        return None
    parts = urlsplit(uri)
    if parts.scheme in POSTGRES_CATALOG_SCHEMES:
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError(f"catalog URI {uri!r} needs a host and a database name")
        if parts.password:
            raise ValueError(
                "catalog URI carries a password: leave it out and give it to the server "
                "through PGPASSFILE or PGPASSWORD"
            )
        return uri
    if parts.scheme in ("postgresql", "postgres", "postgresql+psycopg2"):
        raise ValueError(f"catalog URI {uri!r}: Tiled's catalog needs postgresql+asyncpg://")
    if parts.scheme in ("", "sqlite", "sqlite+aiosqlite"):
        return uri
    raise ValueError(f"catalog URI {uri!r}: SQLite or postgresql+asyncpg:// only")


def tables_uri_for(catalog_uri: str, database: str = "tables") -> str:
    """The event tables' URI beside a PostgreSQL catalog: the same server, database
    ``tables``, the plain ``postgresql://`` scheme Tiled's SQL storage (ADBC) takes.
    Without the role: Tiled 0.2 sends a role given without a password with the
    password "None"; :class:`TiledServer` passes the catalog's role as ``PGUSER``."""
    parts = urlsplit(catalog_uri)
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit(("postgresql", netloc, f"/{database}", "", ""))


def is_postgres(uri: str | None) -> bool:
    return bool(uri) and urlsplit(uri).scheme.startswith("postgresql")


#: the event tables of an embedded catalog, and those of a data root made before
TABLES = "tables.sqlite"
LEGACY_TABLES = "tables.duckdb"


@dataclass(frozen=True)
class DataLayout:
    """Paths of the embedded catalog under one root directory, and where the
    catalog and the event tables live (SQLite and DuckDB files under the root by
    default; PostgreSQL databases with ``catalog_uri``)."""

    root: Path
    catalog_uri: str | None = None
    tables_uri: str | None = None

    @classmethod
    def at(
        cls,
        root: str | os.PathLike,
        *,
        catalog_uri: str | None = None,
        tables_uri: str | None = None,
    ) -> DataLayout:
        catalog_uri = check_catalog_uri(catalog_uri)
        if tables_uri is None and is_postgres(catalog_uri):
            tables_uri = tables_uri_for(catalog_uri)
        return cls(Path(root).expanduser().resolve(), catalog_uri, tables_uri)

    @property
    def catalog(self) -> Path:
        """The SQLite catalog file (when no ``catalog_uri`` says otherwise)."""
        return self.root / "catalog.db"

    @property
    def tables(self) -> Path:
        """The event tables' file (when no ``tables_uri`` says otherwise): SQLite,
        ``tables.sqlite``. Tiled serves a DuckDB file through one connection
        shared by all its request threads (a ``StaticPool``): concurrent reads and
        appends (a reduction worker reading runs as they are written) failed with
        "closed pending query result" and could leave the catalog locked for
        good, every later write a 500. SQLite gets a pool of connections. A data
        root made before, with its ``tables.duckdb``, keeps it (the catalog
        points into it)."""
        legacy = self.root / LEGACY_TABLES
        return legacy if legacy.exists() else self.root / TABLES

    @property
    def tables_scheme(self) -> str:
        return "duckdb" if self.tables.suffix == ".duckdb" else "sqlite"

    @property
    def catalog_location(self) -> str:
        """The catalog as Tiled's configuration takes it: a URI or the SQLite file."""
        return self.catalog_uri or str(self.catalog)

    @property
    def tables_location(self) -> str:
        """The writable SQL storage of event tables: PostgreSQL, or the file
        :attr:`tables` (SQLite; DuckDB in a data root made before)."""
        return self.tables_uri or f"{self.tables_scheme}:///{self.tables}"

    @property
    def arrays(self) -> Path:
        return self.root / "arrays"

    @property
    def frames(self) -> Path:
        return self.root / "frames"

    @property
    def backup(self) -> Path:
        return self.root / "backup"

    @property
    def api_key_file(self) -> Path:
        return self.root / "api_key"

    @property
    def config(self) -> Path:
        return self.root / "tiled-config.yml"

    def create(self) -> None:
        """Make the directories, readable by their owner only (0700; an existing
        root is made private too: its files are then out of others' reach)."""
        for d in (self.root, self.arrays, self.frames, self.backup):
            d.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            if d.stat().st_uid == os.geteuid():
                os.chmod(d, PRIVATE_DIR)


def ensure_api_key(path: Path) -> str:
    """Return the API key stored at ``path``, generating it (mode 0600) the first time.

    Tiled aborts at start on a key that is not alphanumeric, hence hex.
    """
    path = Path(path)
    if path.exists():
        key = path.read_text().strip()
        if key.isalnum():
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return key


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tiled_executable() -> list[str]:
    exe = Path(sys.executable).with_name("tiled")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("tiled")
    if found:
        return [found]
    return [sys.executable, "-m", "tiled"]


#: Tiled reads its single-user API key from this variable: it reaches the server
#: through the environment, never its command line or its configuration file
API_KEY_ENV = "TILED_SINGLE_USER_API_KEY"


def server_config(
    layout: DataLayout,
    *,
    readable: list[Path] | None = None,
    extra: dict | None = None,
) -> dict:
    """The ``tiled serve config`` configuration for ``layout``: the catalog (as
    ``tiled serve catalog`` makes it; SQLite + DuckDB, or PostgreSQL for both),
    API-key authentication and the project's exporters (``operando.exporters``).
    It holds no secret, nor the address (the command line gives it, so servers
    on one data root share the file). ``extra`` adds top-level sections (e.g.
    ``streaming_cache``); a section already there is updated key by key."""
    from .exporters import server_config as exporter_config

    config = {
        "trees": [
            {
                "path": "/",
                "tree": "catalog",
                "args": {
                    "uri": layout.catalog_location,
                    "writable_storage": [str(layout.arrays), layout.tables_location],
                    "readable_storage": [str(layout.frames), *(str(p) for p in readable or [])],
                    # Tiled initializes a catalog in a subprocess of its own at
                    # each start when asked (~5 s of CPU): only when it is new
                    "init_if_not_exists": not catalog_initialized(layout),
                },
            }
        ],
        "authentication": {"allow_anonymous_access": False},
    }
    config.update(exporter_config())
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def catalog_initialized(layout: DataLayout) -> bool:
    """Whether the layout's SQLite catalog exists with Tiled's schema (an
    ``alembic_version`` row); False for PostgreSQL, where Tiled checks itself."""
    if layout.catalog_uri is not None or not layout.catalog.is_file():
        return False
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{layout.catalog}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return bool(row and row[0])


def write_server_config(layout: DataLayout, config: dict) -> Path:
    """Write ``config`` as YAML next to the catalog; returns its path."""
    import yaml

    path = layout.config
    path.write_text(
        "# written by operando.tiled_server at each start; edits are lost\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return path


def serve_command(config_path: Path, *, host: str, port: int) -> list[str]:
    """The ``tiled serve config`` command line (the key comes from $TILED_SINGLE_USER_API_KEY)."""
    return _tiled_executable() + [
        "serve",
        "config",
        str(config_path),
        "--host",
        host,
        "--port",
        str(port),
    ]


def ui_url(uri: str, api_key: str, path: str = RUNS_CONTAINER) -> str:
    """The address of Tiled's web UI on ``path``, logged in with ``api_key``."""
    return f"{uri}/ui/browse/{path}?api_key={api_key}"


class TiledServer:
    """A ``tiled serve config`` subprocess on a data root; a context manager.

    >>> with TiledServer(DataLayout.at("data")) as server:
    ...     client = server.client()
    """

    def __init__(
        self,
        layout: DataLayout,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        readable: list[Path] | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 180.0,
        extra_config: dict | None = None,
        env: dict[str, str] | None = None,
    ):
        self.layout = layout
        #: sections added to the server's configuration (:func:`server_config`)
        self.extra_config = dict(extra_config or {})
        #: added to the server's environment, e.g. ``PGPASSFILE`` of its PostgreSQL
        self.env = dict(env or {})
        self.host = host
        self.port = port or free_port(host)
        self.readable = list(readable or [])
        self.log_path = log_path or layout.root / "tiled-server.log"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.api_key = ""

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def browse_url(self) -> str:
        """Tiled's web UI on the runs, logged in with the API key."""
        return ui_url(self.uri, self.api_key)

    def start(self) -> TiledServer:
        self.layout.create()
        self.api_key = ensure_api_key(self.layout.api_key_file)
        config = write_server_config(
            self.layout,
            server_config(self.layout, readable=self.readable, extra=self.extra_config),
        )
        env = dict(os.environ, **self.env, **{API_KEY_ENV: self.api_key})
        role = urlsplit(self.layout.catalog_uri).username if self.layout.catalog_uri else None
        if role and is_postgres(self.layout.tables_uri):
            env.setdefault("PGUSER", role)  # the tables' role (see tables_uri_for)
        # Tiled prints a login URL with the key at start: the log is private, like the key
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.chmod(self.log_path, 0o600)
        log = os.fdopen(fd, "ab")
        self.process = subprocess.Popen(
            serve_command(config, host=self.host, port=self.port),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # SIGTERM when this process dies (SIGKILL included); umask 077: the
            # catalog, the tables and the arrays it writes are private
            preexec_fn=child_preexec(),
            env=env,
        )
        log.close()
        try:
            self._wait_ready()
        except BaseException:  # a signal or a failure while starting: no orphan
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.uri}/api/v1/"
        # one client for every try (a new one per try sets up TLS each time)
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"tiled server exited with code {self.process.returncode}; "
                        f"see {self.log_path}"
                    )
                try:
                    if http.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(
            f"tiled server did not answer at {url} within "
            f"{self.startup_timeout} s; see {self.log_path}"
        )

    def stop(self) -> None:
        from .shutdown import stop_process_group

        proc, self.process = self.process, None
        stop_process_group(proc, grace=15)

    def wait(self) -> int:
        """Block until the server exits (for ``operando serve``)."""
        return self.process.wait()

    def client(self):
        from tiled.client import from_uri

        return from_uri(self.uri, api_key=self.api_key)

    def __enter__(self) -> TiledServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def runs_container(client, name: str = RUNS_CONTAINER):
    """The container holding bluesky runs (``CatalogOfBlueskyRuns``), created if missing."""
    from tiled.structures.core import Spec

    if name not in client:
        client.create_container(name, specs=[Spec("CatalogOfBlueskyRuns", version="3.0")])
    return client[name]


def reduced_container(client, name: str = REDUCED_CONTAINER):
    """The container holding reduced results, one sub-container per raw run uid."""
    if name not in client:
        client.create_container(
            name, metadata={"description": "reduced results, keyed by raw run uid"}
        )
    return client[name]
