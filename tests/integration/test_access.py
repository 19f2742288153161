"""Channel Access security of the simulators (iocs/access.py), against a real IOC.

A client of another user (``nobody``, a subprocess that drops root with
setuid/setgid before exec) may read every PV and write none; the IOC's owner
writes; simulator-only controls stay the owner's; no client widens a motor's
limits or its velocity past the configured ones.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import caproto
import pytest
from caproto.sync.client import read, write

from operando import epics_env

from .simulators import start_xct_ioc

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as nobody")

#: a CA client run as another user: tries each (op, pv, value), prints the outcomes as JSON
CLIENT = textwrap.dedent(
    """
    import json, sys
    from caproto.sync.client import read, write
    out = []
    for op, pv, value in json.loads(sys.argv[1]):
        try:
            if op == "read":
                out.append(["ok", float(read(pv, timeout=5, repeater=False).data[0])])
            else:
                write(pv, value, notify=True, timeout=5, repeater=False)
                out.append(["ok", None])
        except Exception as err:
            out.append(["error", type(err).__name__ + ": " + str(err)])
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def ioc(tmp_path_factory):
    ioc = start_xct_ioc(tmp_path_factory.mktemp("access"), time_scale="virtual")
    yield ioc
    ioc.stop()


@pytest.fixture(scope="module")
def client_lib():
    """caproto where another user can import it (this interpreter and its
    packages may sit in root's home), for the system's Python (same version)."""
    python = shutil.which(
        f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin"
    )
    if python is None:
        pytest.skip("no system Python of this version for the other user's client")
    lib = Path(tempfile.mkdtemp(prefix="ca-client-"))
    shutil.copytree(Path(caproto.__file__).parent, lib / "caproto")
    for path in [lib, *lib.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield python, lib
    shutil.rmtree(lib)


def _as_user(user: str, ioc, ops: list, client_lib) -> list:
    """Run :data:`CLIENT` as ``user`` (uid, gid, name: what a CA client declares)."""
    python, lib = client_lib
    pw = pwd.getpwnam(user)

    def drop():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "USER": user,
        "LOGNAME": user,
        "PYTHONPATH": str(lib),
        **epics_env.loopback_env(ioc.port),
    }
    done = subprocess.run(
        [python, "-c", CLIENT, json.dumps(ops)],
        env=env,
        preexec_fn=drop,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/tmp",
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _get(ioc, pv):
    return float(read(ioc.prefix + pv, timeout=5, repeater=False).data[0])


def test_another_user_reads_but_cannot_write(ioc, client_lib):
    p = ioc.prefix
    results = _as_user(
        "nobody",
        ioc,
        [
            ["read", p + "stage:th.HLM", None],
            ["read", p + "clock:time", None],
            ["write", p + "src:on", 1],
            ["write", p + "stage:th.HLM", 1e9],
            ["write", p + "clock:hold", 1],
            ["write", p + "src:kv", 10.0],
            ["write", p + "det:HDF1:FilePath", "/tmp/elsewhere"],
        ],
        client_lib,
    )
    (hlm_status, hlm), (time_status, _) = results[:2]
    assert hlm_status == time_status == "ok"
    assert hlm == 720.0
    for status, message in results[2:]:
        assert status == "error", results
        assert "access" in message.lower() or "write" in message.lower(), message
    # nothing changed
    assert _get(ioc, "src:on_rbv") == 0
    assert _get(ioc, "stage:th.HLM") == 720.0
    assert _get(ioc, "clock:hold") == 0
    assert _get(ioc, "src:kv") != 10.0


def test_owner_writes_and_cannot_widen_motor_limits(ioc):
    p = ioc.prefix
    kv0 = _get(ioc, "src:kv")
    write(p + "src:kv", 35.0, notify=True, timeout=5, repeater=False)
    assert _get(ioc, "src:kv") == 35.0
    write(p + "src:kv", kv0, notify=True, timeout=5, repeater=False)
    # widening is clipped to the configured travel (-720..720 deg); narrowing works
    write(p + "stage:th.HLM", 1e9, notify=True, timeout=5, repeater=False)
    assert _get(ioc, "stage:th.HLM") == 720.0
    assert _get(ioc, "stage:th.DHLM") == 720.0
    write(p + "stage:th.DLLM", -1e9, notify=True, timeout=5, repeater=False)
    assert _get(ioc, "stage:th.LLM") == -720.0
    write(p + "stage:th.HLM", 360.0, notify=True, timeout=5, repeater=False)
    assert _get(ioc, "stage:th.HLM") == 360.0
    write(p + "stage:th.HLM", 720.0, notify=True, timeout=5, repeater=False)
    # the maximum velocity is read only, and .VELO is clipped to it
    vmax = _get(ioc, "stage:th.VMAX")
    with pytest.raises(Exception, match="(?i)access|write"):
        write(p + "stage:th.VMAX", vmax * 100, notify=True, timeout=5, repeater=False)
    assert _get(ioc, "stage:th.VMAX") == vmax
    velo = _get(ioc, "stage:th.VELO")
    write(p + "stage:th.VELO", vmax * 100, notify=True, timeout=5, repeater=False)
    assert _get(ioc, "stage:th.VELO") == vmax
    write(p + "stage:th.VELO", velo, notify=True, timeout=5, repeater=False)
    # a move past the (unchanged) limit is refused, as before
    with pytest.raises(Exception):  # noqa: B017 - caproto's error for a rejected put
        write(p + "stage:th", 5000.0, notify=True, timeout=5, repeater=False)
    assert abs(_get(ioc, "stage:th.RBV")) <= 720.0


def test_named_writers_operate_but_not_simulator_controls(tmp_path, client_lib):
    """``--ca-writers nobody``: nobody drives the station, not the simulated clock."""
    ioc = start_xct_ioc(tmp_path, time_scale="virtual", extra=["--ca-writers", "nobody"])
    try:
        p = ioc.prefix
        results = _as_user(
            "nobody",
            ioc,
            [["write", p + "src:kv", 20.0], ["write", p + "clock:hold", 1]],
            client_lib,
        )
        assert results[0] == ["ok", None], results
        assert results[1][0] == "error", results
        assert _get(ioc, "src:kv") == 20.0
        assert _get(ioc, "clock:hold") == 0
    finally:
        ioc.stop()
