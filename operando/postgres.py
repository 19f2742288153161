"""A local PostgreSQL cluster for Tiled's catalog and event tables.

:class:`PostgresCluster` creates (``initdb``), starts (``pg_ctl``, 127.0.0.1, a
free port, its socket in the cluster's directory), creates the ``catalog`` and
``tables`` databases of a Tiled server, and stops a cluster under one
directory::

    data/postgres/
      pgdata/     the cluster (owned by the server's system user)
      password    the superuser's password (mode 0600)
      pgpass      a libpq password file for it (mode 0600): PGPASSFILE
      postgres.log
      port        the port it was last started on

PostgreSQL refuses to run as root: when the caller is root the server runs as
a dedicated system user (``operando-pg``, created with ``useradd --system``
when missing). Connections are over TCP on 127.0.0.1 with a password
(scram-sha-256); the URIs carry no secret, clients find it through
``PGPASSFILE`` and the role through ``PGUSER`` (:attr:`PostgresCluster.env`),
as asyncpg and libpq do.

>>> with PostgresCluster("data/postgres") as pg:
...     pg.catalog_uri   # 'postgresql+asyncpg://operando@127.0.0.1:PORT/catalog'
...     pg.tables_uri    # 'postgresql://127.0.0.1:PORT/tables' (role: PGUSER)
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from .tiled_server import free_port

#: the system user the server runs as when the caller is root
SYSTEM_USER = "operando-pg"
#: the database role Tiled connects as
DB_USER = "operando"
DATABASES = ("catalog", "tables")
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")
INSTALL_HINT = "run `make services` (scripts/install-services installs PostgreSQL 15)"


def pg_executable(name: str) -> str:
    """The path of a PostgreSQL program (``initdb``, ``pg_ctl``, ``createdb``, ...)."""
    found = shutil.which(name)
    if found:
        return found
    for d in PG_BIN_DIRS:
        if (Path(d) / name).exists():
            return str(Path(d) / name)
    raise FileNotFoundError(f"{name} (PostgreSQL) is not installed: {INSTALL_HINT}")


def ensure_system_user(name: str = SYSTEM_USER) -> pwd.struct_passwd:
    """The unprivileged system user to run the server as, created when missing (needs root)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise PermissionError(f"system user {name!r} does not exist and only root may create it")
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(name)


class PostgresCluster:
    """A PostgreSQL server on 127.0.0.1 for one directory; a context manager.

    ``start()`` creates the cluster and the databases the first time; ``stop()``
    stops the server (fast shutdown); ``destroy()`` removes the directory.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 60.0,
    ):
        self.directory = Path(directory).expanduser().resolve()
        self.host = host
        self._port = port
        self.startup_timeout = startup_timeout
        self._run_as: pwd.struct_passwd | None = None

    # -- paths and addresses ---------------------------------------------------------
    @property
    def pgdata(self) -> Path:
        return self.directory / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.directory / "password"

    @property
    def passfile(self) -> Path:
        """A libpq/asyncpg password file (``PGPASSFILE``) for this cluster."""
        return self.directory / "pgpass"

    @property
    def port(self) -> int:
        if self._port is None:
            saved = self.directory / "port"
            self._port = int(saved.read_text()) if saved.exists() else free_port(self.host)
        return self._port

    def uri(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{DB_USER}@{self.host}:{self.port}/{database}"

    @property
    def catalog_uri(self) -> str:
        """Tiled's catalog (SQLAlchemy + asyncpg)."""
        return self.uri("catalog", "postgresql+asyncpg")

    @property
    def tables_uri(self) -> str:
        """Tiled's event tables (writable SQL storage, ADBC). The role comes from
        ``PGUSER`` (:attr:`env`): Tiled 0.2 turns a user without a password in this
        URI into the password "None"."""
        return f"postgresql://{self.host}:{self.port}/tables"

    @property
    def env(self) -> dict[str, str]:
        """What a client's environment needs to log in (no secret: a file's path)."""
        return {"PGPASSFILE": str(self.passfile), "PGUSER": DB_USER}

    @property
    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    # -- running programs as the server's user ------------------------------------------
    def _user(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        if self._run_as is None:
            self._run_as = ensure_system_user()
        return self._run_as

    def _run(self, cmd: list, **kwargs) -> subprocess.CompletedProcess:
        user = self._user()
        extra = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid}
        if user is not None:
            extra["extra_groups"] = []
        env = dict(os.environ, HOME=str(self.directory), LC_ALL="C.UTF-8")
        return subprocess.run(
            [str(c) for c in cmd],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            **extra,
            **kwargs,
        )

    def _check_reachable(self, user: pwd.struct_passwd) -> None:
        """The server's user must be able to reach the directory: every parent searchable."""
        for parent in reversed(self.directory.parents):
            st = parent.stat()
            if st.st_uid == user.pw_uid:
                continue
            if not st.st_mode & 0o001 and not (st.st_gid == user.pw_gid and st.st_mode & 0o010):
                raise PermissionError(
                    f"PostgreSQL runs as {user.pw_name!r}, which cannot reach {self.directory}: "
                    f"{parent} is not searchable by it (mode {st.st_mode & 0o777:o}); "
                    "choose a directory under searchable ones (e.g. /tmp, /srv)"
                )

    # -- life cycle ----------------------------------------------------------------------
    def create(self) -> PostgresCluster:
        """``initdb`` the cluster (once): superuser ``operando``, password authentication."""
        if self.initialized:
            return self
        user = self._user()
        self.directory.mkdir(parents=True, exist_ok=True)
        if user is not None:
            self._check_reachable(user)
        os.chmod(self.directory, 0o700)
        password = secrets.token_hex(24)
        self._write_private(self.password_file, password + "\n")
        pwfile = self.directory / ".initdb-pw"
        self._write_private(pwfile, password + "\n")
        if user is not None:
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        try:
            self._run(
                [
                    pg_executable("initdb"),
                    "-D",
                    self.pgdata,
                    "-U",
                    DB_USER,
                    f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                    "--no-sync",  # a fresh, empty cluster: nothing to lose to a crash now
                ]
            )
        except subprocess.CalledProcessError as err:
            raise RuntimeError(f"initdb failed: {err.stderr.strip()}") from None
        finally:
            pwfile.unlink(missing_ok=True)
        return self

    def _write_private(self, path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)

    def _write_passfile(self) -> None:
        password = self.password_file.read_text().strip()
        self._write_private(self.passfile, f"{self.host}:{self.port}:*:{DB_USER}:{password}\n")

    def start(self) -> PostgresCluster:
        """Create the cluster when needed, start the server and create the databases."""
        self.create()
        (self.directory / "port").write_text(str(self.port))
        self._write_passfile()
        if not self.running():
            user = self._user()
            if user is not None and self.log_path.exists():
                os.chown(self.log_path, user.pw_uid, user.pw_gid)
            options = f"-h {self.host} -p {self.port} -k {self.directory}"
            try:
                self._run(
                    [
                        pg_executable("pg_ctl"),
                        "-D",
                        self.pgdata,
                        "-l",
                        self.log_path,
                        "-o",
                        options,
                        "-w",
                        "-t",
                        int(self.startup_timeout),
                        "start",
                    ]
                )
            except subprocess.CalledProcessError as err:
                raise RuntimeError(
                    f"PostgreSQL did not start: {err.stdout.strip()} {err.stderr.strip()}; "
                    f"see {self.log_path}"
                ) from None
        self._wait_ready()
        self.create_databases()
        return self

    def _psql(self, database: str, sql: str) -> str:
        env = dict(os.environ, **self.env)
        out = subprocess.run(
            [
                pg_executable("psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                DB_USER,
                "-d",
                database,
                "-tAq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        return out.stdout.strip()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                self._psql("postgres", "SELECT 1")
                return
            except subprocess.CalledProcessError as err:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"PostgreSQL at {self.host}:{self.port} did not answer: "
                        f"{err.stderr.strip()}; see {self.log_path}"
                    ) from None
            time.sleep(0.2)

    def create_databases(self, names=DATABASES) -> None:
        existing = set(self._psql("postgres", "SELECT datname FROM pg_database").split())
        for name in names:
            if name not in existing:
                self._psql("postgres", f'CREATE DATABASE "{name}"')

    def running(self) -> bool:
        if not self.initialized:
            return False
        try:
            self._run([pg_executable("pg_ctl"), "-D", self.pgdata, "status"])
            return True
        except subprocess.CalledProcessError:
            return False

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended, nothing committed is lost)."""
        if not self.running():
            return
        self._run([pg_executable("pg_ctl"), "-D", self.pgdata, "-m", "fast", "-w", "stop"])

    def destroy(self) -> None:
        """Stop the server and remove the cluster's directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> int:
    """``python -m operando.postgres start|stop|status DIR`` (``make postgres``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m operando.postgres", description=__doc__)
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("directory", nargs="?", default="data/postgres")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    cluster = PostgresCluster(args.directory, port=args.port)
    if args.action == "stop":
        cluster.stop()
        print(f"PostgreSQL under {cluster.directory} stopped")
        return 0
    if args.action == "start":
        cluster.start()
    elif not cluster.running():
        print(f"PostgreSQL under {cluster.directory} is not running")
        return 1
    print(f"PostgreSQL under {cluster.directory} on {cluster.host}:{cluster.port}")
    print(f"  catalog: {cluster.catalog_uri}")
    print(f"  tables:  {cluster.tables_uri}")
    print(f"  export PGPASSFILE={cluster.passfile}")
    print(f"  operando serve --catalog-uri {cluster.catalog_uri}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
