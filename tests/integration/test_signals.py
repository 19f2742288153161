"""Signals and child processes, with the real command line, IOCs and Tiled.

``operando run`` stopped by SIGTERM or SIGINT mid-experiment aborts the plan
through the RunEngine (the run gets its stop document, ``exit_status`` abort),
leaves the cell at open circuit and the source off, drains the Tiled writer,
stops every child and says what was saved; SIGKILL leaves no child behind
either; ``operando serve`` stops its Tiled; an IOC started with SIGINT ignored
stops cleanly on SIGTERM. The data directory is private.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from operando import epics_env
from operando.ioc_process import random_prefix
from operando.tiled_server import DataLayout, TiledServer, free_port

#: a small XCT protocol on virtual time (a few seconds of wall time per cycle)
SMALL_XCT = [
    "--time-scale",
    "virtual",
    "--cycles",
    "3",
    "--projections",
    "9",
    "--postmortem-projections",
    "9",
    "--images",
    "1",
    "--exposure",
    "1",
    "--sample-every",
    "120",
    "--no-reduction",
    "--no-progress",
]


# -- processes (from /proc) ---------------------------------------------------------
def _stat(pid: int):
    """(ppid, start time) of ``pid``, or None once it is gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every descendant of ``pid``: {pid: start time}."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            st = _stat(child)
            if st is not None and child not in found:
                found[child] = st[1]
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def alive(procs: dict[int, int]) -> dict[int, str]:
    """Those of ``procs`` still running (same pid and start time)."""
    out = {}
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[1] == start:
            out[pid] = cmdline(pid)
    return out


def wait_gone(procs: dict[int, int], timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = alive(procs)
        if not left:
            return {}
        time.sleep(0.1)
    return alive(procs)


def kill_all(procs: dict[int, int]) -> None:
    """Finalizer: whatever of ``procs`` (this test's own children) is left."""
    for pid in alive(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(predicate, timeout: float, what: str, proc=None):
    """Poll ``predicate`` until true (deadline ``timeout``); fail if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command exited ({proc.returncode}) before {what}")
        time.sleep(0.2)  # each try walks /proc or rereads the truth file
    raise AssertionError(f"timed out waiting for {what}")


# -- the command ----------------------------------------------------------------------
def start_cli(*args, log_dir: Path, env=None) -> subprocess.Popen:
    out = open(log_dir / "stdout.txt", "wb")
    err = open(log_dir / "stderr.txt", "wb")
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "operando.cli", *args],
        stdout=out,
        stderr=err,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    out.close()
    err.close()
    return proc


def truth(data: Path) -> list[dict]:
    path = data / "xct-truth.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def plating_started(data: Path) -> bool:
    """The cell is being plated (a CC technique runs)."""
    for rec in truth(data):
        if rec.get("event") == "technique_start" and rec.get("mode", "CC") != "OCV":
            return True
    return False


def file_opened(data: Path) -> bool:
    """The detector writes its first HDF5 file (the first run is going)."""
    return any(rec.get("event") == "file_open" for rec in truth(data))


def children_ready(proc, *, tiled: bool = True) -> dict[int, int]:
    """The IOC (and the Tiled server, when ``tiled``) of ``proc`` once they run."""
    procs = descendants(proc.pid)
    lines = [cmdline(p) for p in procs]
    if any("operando.iocs.xct" in c for c in lines) and (
        not tiled or any("tiled" in c for c in lines)
    ):
        return procs
    return {}


def interrupt_run(tmp_path: Path, signum: int, *, when, data: Path | None = None, server=None):
    """``operando run xct`` (embedded Tiled, or ``server``), sent ``signum`` once
    ``when(data)``; returns (exit code, stdout, stderr, data dir, experiment id)."""
    data = data or tmp_path / "data"
    exp = f"sig-{random_prefix('x')[1:-1]}"
    extra, env = [], {}
    if server is not None:  # the key through the environment, never the command line
        extra, env = ["--tiled-uri", server.uri], {"TILED_API_KEY": server.api_key}
    proc = start_cli("run", "xct", *SMALL_XCT, "--experiment-id", exp, "--data-dir", str(data),
                     *extra, log_dir=tmp_path, env=env)  # fmt: skip
    procs: dict[int, int] = {}
    try:
        procs = wait_for(
            lambda: children_ready(proc, tiled=server is None), 240, "the children to start", proc
        )
        key = server.api_key if server else (data / "api_key").read_text().strip()
        for pid in [proc.pid, *procs]:  # the API key reaches no command line
            assert key not in cmdline(pid)
        wait_for(lambda: when(data), 240, f"{when.__name__}", proc)
        procs.update(descendants(proc.pid))
        os.kill(proc.pid, signum)
        code = proc.wait(timeout=90)
        left = wait_gone(procs, 5)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_all(procs)
    assert not left, f"children left behind: {left}"
    out = (tmp_path / "stdout.txt").read_text()
    err = (tmp_path / "stderr.txt").read_text()
    return code, out, err, data, exp


def check_stored(client, exp: str):
    """The experiment's runs as a plain Tiled client reads them: every run has its
    stop document, exactly one of them ``abort``."""
    from tiled.queries import Key

    runs = client["raw"].search(Key("start.experiment_id") == exp)
    stops = {uid: run.metadata.get("stop") for uid, run in runs.items()}
    assert stops, "no run stored"
    assert all(stops.values()), f"runs without a stop document: {stops}"
    statuses = [stop["exit_status"] for stop in stops.values()]
    assert statuses.count("abort") == 1, statuses
    aborted = next(s for s in stops.values() if s["exit_status"] == "abort")
    return stops, aborted


def check_safe_and_closed(data: Path, *, mode: str | None = None):
    """Source off, the technique stopped (open circuit), every HDF5 file closed."""
    recs = truth(data)
    sources = [r for r in recs if r.get("event") == "source"]
    assert not sources or sources[-1]["state"] == "off", sources[-1:]
    starts = [r for r in recs if r.get("event") == "technique_start"]
    ends = [r for r in recs if r.get("event") == "technique_end"]
    assert len(ends) >= len(starts), (starts[-1:], ends[-1:])
    if starts:  # the technique running when the signal came was stopped
        assert ends[-1]["reason"] == "aborted", ends[-1]
        assert mode is None or ends[-1]["mode"] == mode, ends[-1]
    else:
        assert mode is None, "no technique had started"
    opened = sum(r.get("event") == "file_open" for r in recs)
    closed = sum(r.get("event") == "file_close" for r in recs)
    assert opened and opened == closed, (opened, closed)


def check_private(data: Path):
    for d in (data, data / "frames", data / "frames" / "xct", data / "backup", data / "arrays"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    files = [data / "catalog.db", DataLayout.at(data).tables, data / "api_key"]
    files += list((data / "frames" / "xct").glob("*.h5"))
    assert len(files) > 3
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, (f, oct(f.stat().st_mode))


# -- the tests --------------------------------------------------------------------------
def test_sigterm_during_plating(tmp_path):
    """The batch system's stop: SIGTERM while the cell is being plated."""
    code, out, err, data, exp = interrupt_run(tmp_path, signal.SIGTERM, when=plating_started)
    assert code == 143, (out, err)
    assert "Traceback" not in err, err
    assert "stopped by SIGTERM" in out, out
    assert exp in out and str(data) in out and "--resume" in out, out
    with TiledServer(DataLayout.at(data)) as server:  # the catalog, read back
        stops, aborted = check_stored(server.client(), exp)
    assert "SIGTERM" in aborted.get("reason", ""), aborted
    for uid in stops:
        assert uid in out  # the summary names every run
    assert any(r.get("event") == "source" for r in truth(data))  # it had been on
    check_safe_and_closed(data, mode="CC")
    check_private(data)


def test_sigint_during_a_scan(tmp_path, tiled_server):
    """Ctrl-C during the first 3D scan, writing to a Tiled server of one's own."""
    data = tiled_server.layout.frames / f"sigint-{random_prefix('d')[1:-1]}"
    code, out, err, data, exp = interrupt_run(
        tmp_path, signal.SIGINT, when=file_opened, data=data, server=tiled_server
    )
    assert code == 130, (out, err)
    assert "Traceback" not in err, err
    assert "stopped by SIGINT" in out and exp in out, out
    _, aborted = check_stored(tiled_server.client(), exp)
    assert "SIGINT" in aborted.get("reason", ""), aborted
    check_safe_and_closed(data)


def test_sigkill_leaves_no_child(tmp_path):
    import sqlite3

    import h5py

    data = tmp_path / "data"
    proc = start_cli("run", "xct", *SMALL_XCT, "--data-dir", str(data), log_dir=tmp_path)
    procs: dict[int, int] = {}
    try:
        procs = wait_for(lambda: children_ready(proc), 240, "the IOC and Tiled to start", proc)
        wait_for(lambda: file_opened(data), 240, "a detector file", proc)
        procs.update(descendants(proc.pid))
        proc.kill()
        proc.wait(timeout=10)
        left = wait_gone(procs, 10)
    finally:
        kill_all(procs)
    assert not left, f"children outlived a SIGKILLed parent: {left}"
    # no orphan holds the tables' write lock (a new run would start) ...
    tables = sqlite3.connect(DataLayout.at(data).tables, timeout=0)
    tables.execute("BEGIN IMMEDIATE")  # fails at once ("database is locked") if held
    tables.rollback()
    tables.close()
    # ... and the IOC closed its HDF5 files on the way out
    files = list((data / "frames" / "xct").glob("*.h5"))
    assert files
    for h5 in files:
        with h5py.File(h5, "r"):
            pass


def test_serve_sigterm_stops_tiled(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    proc = start_cli("serve", "--data-dir", str(data), "--port", str(port), log_dir=tmp_path)
    procs: dict[int, int] = {}
    try:
        wait_for(
            lambda: "Browse" in (tmp_path / "stdout.txt").read_text(),
            240,
            "the server to start",
            proc,
        )
        procs = descendants(proc.pid)
        assert any("tiled" in cmdline(p) for p in procs), procs
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        left = wait_gone(procs, 5)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_all(procs)
    assert code == 143
    assert not left, left
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/api/v1/", timeout=2)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_ioc_with_sigint_ignored_stops_on_sigterm(tmp_path):
    """As started by ``cmd &`` in a script or nohup: SIGINT ignored, SIGTERM still stops it."""
    from caproto.sync.client import read, write

    port = epics_env.free_tcp_udp_port()
    prefix = random_prefix("T")
    truth_file = tmp_path / "truth.jsonl"
    env = dict(os.environ, **epics_env.loopback_env(port))
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    ioc = subprocess.Popen(
        [sys.executable, "-m", "operando.iocs.xct", "--prefix", prefix, "-q",
         "--time-scale", "virtual", "--data-dir", str(tmp_path), "--truth-file", str(truth_file)],
        env=env, preexec_fn=ignore_sigint, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    epics_env.reach(port)
    try:
        wait_for(lambda: _reads(read, prefix + "clock:time"), 30, "the IOC")
        write(prefix + "det:HDF1:Capture", 1, notify=True, timeout=5, repeater=False)
        assert read(prefix + "det:HDF1:Capture_RBV", timeout=5, repeater=False).data[0] == 1
        ioc.send_signal(signal.SIGINT)  # ignored
        time.sleep(0.5)  # give an (unwanted) exit the chance to happen
        assert ioc.poll() is None, "SIGINT should be ignored"
        ioc.send_signal(signal.SIGTERM)
        code = ioc.wait(timeout=20)
    finally:
        epics_env.forget(port)
        if ioc.poll() is None:
            ioc.kill()
            ioc.wait()
    stderr = ioc.stderr.read().decode()
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    import h5py

    (h5,) = tmp_path.glob("*.h5")
    # closed cleanly: a file left open for SWMR writing refuses to open ("h5clear")
    with h5py.File(h5, "r") as f:
        assert "entry" in f


def _reads(read, pv) -> bool:
    try:
        read(pv, timeout=0.5, repeater=False)
        return True
    except Exception:
        return False
