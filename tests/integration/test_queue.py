"""The queue server: ``operando queue start`` (Redis, RE Manager, HTTP server) against
XCT and SAXS/WAXS simulators on virtual time and a real Tiled server.

One ``operando queue start`` subprocess serves the whole module; plans are queued
with bluesky-queueserver-api's ``REManagerAPI`` and the runs read back with a plain
Tiled client. The last test stops it with SIGTERM and checks nothing is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from bluesky_queueserver_api import BPlan
from bluesky_queueserver_api.comm_base import RequestFailedError
from bluesky_queueserver_api.zmq import REManagerAPI
from tiled.client import from_uri

from operando.queue import CONFIG_DIR, PLANS_DEVICES, QueueLayout
from operando.tiled_server import DataLayout, free_port

from . import ca_client
from .simulators import start_saxs_ioc, start_xct_ioc

ROOT = Path(__file__).resolve().parents[2]
#: the environment opens (startup code: imports, two stations, Tiled) within this
OPEN_TIMEOUT = 300.0
PLAN_TIMEOUT = 300.0


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (pid -> command name), from /proc."""
    children: dict[int, list[int]] = {}
    names = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        names[int(entry.name)] = name
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = names[child]
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running (a zombie is not: it has exited and waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _operando(*args) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("operando"))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


class Stack:
    """The ``operando queue start`` subprocess and how to reach it."""

    def __init__(self, proc, control, info, http, data_dir, tiled_server, xct_ioc, saxs_ioc):
        self.proc, self.control, self.info, self.http = proc, control, info, http
        self.data_dir, self.paths = data_dir, QueueLayout.under(DataLayout.at(data_dir))
        self.tiled_server, self.xct_ioc, self.saxs_ioc = tiled_server, xct_ioc, saxs_ioc

    def api(self, **kwargs) -> REManagerAPI:
        return REManagerAPI(zmq_control_addr=self.control, zmq_info_addr=self.info, **kwargs)

    def output(self) -> str:
        return Path(self.data_dir, "queue-start.log").read_text()


@pytest.fixture(scope="module")
def stack(tiled_server, tmp_path_factory):
    frames = tiled_server.layout.frames
    tag = os.urandom(3).hex()
    xct_ioc = start_xct_ioc(frames / f"queue-xct-{tag}", time_scale="virtual")
    saxs_ioc = start_saxs_ioc(frames / f"queue-saxs-{tag}", time_scale="virtual")
    # The worker's detectors write under OPERANDO_DATA_DIR/frames: the server's readable storage.
    data_dir = tiled_server.layout.root
    control, info, http = (
        f"tcp://127.0.0.1:{free_port()}",
        f"tcp://127.0.0.1:{free_port()}",
        free_port(),
    )
    env = dict(os.environ, TILED_API_KEY=tiled_server.api_key, MPLBACKEND="Agg")
    env.pop("OPERANDO_QUEUE_API_KEY", None)
    log = open(Path(data_dir, "queue-start.log"), "wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("operando")),
            "queue",
            "start",
            "--xct-prefix",
            xct_ioc.prefix,
            "--saxs-prefix",
            saxs_ioc.prefix,
            "--tiled-uri",
            tiled_server.uri,
            "--data-dir",
            str(data_dir),
            "--http",
            "--control-port",
            control.rsplit(":", 1)[1],
            "--info-port",
            info.rsplit(":", 1)[1],
            "--http-port",
            str(http),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    s = Stack(
        proc, control, info, f"http://127.0.0.1:{http}", data_dir, tiled_server, xct_ioc, saxs_ioc
    )
    try:
        _wait_open(s)
        yield s
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        xct_ioc.stop()
        saxs_ioc.stop()


def _wait_open(s: Stack) -> None:
    """Until the environment is open (``operando queue start`` prints its summary then)."""
    deadline = time.monotonic() + OPEN_TIMEOUT
    while time.monotonic() < deadline:
        assert s.proc.poll() is None, s.output()[-4000:]
        if "queue server: RE Manager at" in s.output():
            return
        time.sleep(0.5)
    raise TimeoutError(f"the queue server did not open its environment:\n{s.output()[-4000:]}")


@pytest.fixture
def api(stack):
    api = stack.api()
    yield api
    api.close()


def _run_queue(api, timeout=PLAN_TIMEOUT) -> list:
    """Start the queue, wait until it has run (the manager idle again, the history
    changed: a status cached from before the start does not count); the history."""
    before = api.status(reload=True)["plan_history_uid"]
    api.queue_start()
    api.wait_for_condition(
        lambda s: s["manager_state"] == "idle" and s["plan_history_uid"] != before,
        timeout=timeout,
    )
    return api.history_get()["items"]


def _log_tail(stack, n=6000) -> str:
    return stack.paths.manager_log.read_text()[-n:]


def _tiled(stack):
    return from_uri(stack.tiled_server.uri, api_key=stack.tiled_server.api_key)


def test_environment_open_on_both_stations(api, stack):
    status = api.status()
    assert status["worker_environment_exists"] is True
    assert status["manager_state"] == "idle"
    shown = _operando("queue", "status", "--data-dir", str(stack.data_dir))
    assert "worker_environment_exists: True" in shown.stdout, shown.stdout + shown.stderr
    allowed = api.plans_allowed()["plans_allowed"]
    for name in ("xct_scan3d", "xct_plating", "xct_protocol", "saxs_raster", "count", "mv"):
        assert name in allowed
    devices = api.devices_allowed()["devices_allowed"]
    assert {"ct_det", "stage", "saxs_det", "waxs_det", "saxs_stage"} <= set(devices)
    # The checked-in list is what the manager regenerated from the startup code.
    written = yaml.safe_load(stack.paths.plans_devices.read_text())
    assert written == yaml.safe_load((CONFIG_DIR / PLANS_DEVICES).read_text()), (
        "queue/existing_plans_and_devices.yaml is out of date: make queue-config"
    )


def test_queued_xct_scan_and_saxs_raster_land_in_tiled(api, stack):
    api.queue_clear()
    api.history_clear()
    api.item_add(
        BPlan(
            "xct_scan3d",
            num_projections=3,
            images_per_projection=1,
            exposure=0.2,
            num_darks=1,
            num_flats=1,
            filter="LE2",
            experiment_id="queued-xct",
        )
    )
    api.item_add(
        BPlan(
            "saxs_raster",
            x_range=[-0.5, 0.5],
            y_range=[0.4, 0.6],
            shape=[2, 2],
            exposure=0.5,
            step="ocv",
            cycle=0,
            experiment_id="queued-saxs",
        )
    )
    api.item_add(BPlan("mv", "saxs_stage.x", 0.25, "stage.x", 0.0))
    api.item_add(BPlan("count", ["force", "saxs_diode"], num=2))
    api.item_add(BPlan("xct_technique", mode="OCV", duration=600.0, sample_every=60.0))
    history = _run_queue(api)
    names = ["xct_scan3d", "saxs_raster", "mv", "count", "xct_technique"]
    results = [(h["name"], h["result"]["exit_status"], h["result"]["msg"]) for h in history]
    assert [r[:2] for r in results] == [(n, "completed") for n in names], (
        results,
        _log_tail(stack),
    )
    xct_uid, saxs_uid = (h["result"]["run_uids"][0] for h in history[:2])
    count_uid, technique_uid = (h["result"]["run_uids"][0] for h in history[3:])

    runs = _tiled(stack)["raw"]
    xct = runs[xct_uid]
    start = xct.metadata["start"]
    assert (start["experiment_id"], start["step"], start["technique"]) == (
        "queued-xct",
        "scan3d",
        "xct",
    )
    frames = xct["primary"]["ct_det_image"].read()
    assert frames.shape[0] == 3
    assert list(xct["primary"]["stage_th"].read()) == pytest.approx([0.0, 180.0, 360.0], abs=0.01)
    assert xct["dark"]["ct_det_image"].read().shape[0] == 1
    assert xct["flat"]["ct_det_image"].read().shape[0] == 1
    # the filter the queue passed reached the source
    assert start["plan_args"]["filter"] == "LE2"
    assert ca_client.get_enum(stack.xct_ioc.prefix + "src:filter") == "LE2"

    saxs = runs[saxs_uid]
    start = saxs.metadata["start"]
    assert (start["experiment_id"], start["step"], start["shape"]) == ("queued-saxs", "ocv", [2, 2])
    primary = saxs["primary"]
    assert primary["saxs_image"].read().shape[0] == 4
    assert primary["waxs_image"].read().shape[0] == 4
    assert sorted(set(round(v, 3) for v in primary["stage_x"].read())) == [-0.5, 0.5]
    assert sorted(set(round(v, 3) for v in primary["stage_y"].read())) == [0.4, 0.6]

    # devices by name: mv moved the SAXS stage, count read both stations
    assert ca_client.get(stack.saxs_ioc.prefix + "stage:x.RBV") == pytest.approx(0.25, abs=1e-3)
    counted = runs[count_uid]["primary"]
    assert len(counted["force_force"].read()) == 2
    assert len(counted["diode_trans"].read()) == 2

    # a potentiostat technique to its end, the cell recorded every 60 cell seconds
    technique = runs[technique_uid]
    t = technique["cell"]["clock_time"].read()
    assert t[-1] - t[0] == pytest.approx(600.0, abs=1.0)
    assert 11 <= len(t) <= 12
    assert technique.metadata["stop"]["reason"] == "OCV ended (done)"


@pytest.mark.parametrize(
    "plan, message",
    [
        (BPlan("xct_scan3d", num_projections="many"), "valid integer"),
        (BPlan("xct_scan3d", filter="LE9"), "LE1"),
        (BPlan("xct_scan3d", kv=90), "out of range"),
        (BPlan("xct_scan3d", bogus=1), "unexpected keyword"),
        (BPlan("saxs_raster", x_range=[-10.0, 1.0], y_range=[0, 1]), "out of range"),
        (BPlan("saxs_raster", step="cycling"), "ocv"),
        (BPlan("xct_plating"), "current_density"),
        (BPlan("xct_technique", mode="GCPL"), "OCV"),
        (BPlan("count", ["no_such_device"]), "no_such_device"),
        (BPlan("mv", "stage.bogus", 1.0), "stage.bogus"),
        (BPlan("scan3d", "xct", num_projections=3), "XCTStation"),
    ],
)
def test_bad_parameters_rejected_when_added(api, plan, message):
    before = api.status()["items_in_queue"]
    with pytest.raises(RequestFailedError) as err:
        api.item_add(plan)
    assert message in str(err.value)
    assert api.status()["items_in_queue"] == before


def test_users_group_gets_the_queue_plans_only(stack):
    api = stack.api()
    api.user_group = "users"
    try:
        plans = set(api.plans_allowed()["plans_allowed"])
        assert {"xct_scan3d", "xct_protocol", "saxs_protocol", "count"} <= plans
        assert not plans & {"mv", "scan3d", "xct_operando", "saxs_waxs_operando"}
        with pytest.raises(RequestFailedError):
            api.item_add(BPlan("mv", "stage.x", 1.0))
    finally:
        api.close()


def test_failing_plan_stops_the_queue_with_its_error(api, stack):
    api.queue_clear()
    api.history_clear()
    # valid when added; fails when it runs: no alignment yet gives no grid
    api.item_add(BPlan("saxs_raster", shape=[2, 2]))
    api.item_add(BPlan("count", ["force"]))
    history = _run_queue(api)
    assert len(history) == 1, history  # the queue stopped: count did not run
    result = history[0]["result"]
    assert result["exit_status"] == "failed"
    assert "no saxs_align run yet" in result["msg"]
    assert "PlanArgumentError" in result["traceback"]
    queue = api.queue_get()["items"]
    assert [item["name"] for item in queue][-1] == "count"
    status = api.status()
    assert status["manager_state"] == "idle" and status["worker_environment_exists"]
    api.queue_clear()


def test_http_server_needs_the_api_key(api, stack):
    key_file = stack.paths.api_key_file
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    for pid in [stack.proc.pid, *_descendants(stack.proc.pid)]:  # never on a command line
        assert key not in _cmdline(pid)
    status = httpx.get(f"{stack.http}/api/status", headers={"Authorization": f"ApiKey {key}"})
    assert status.status_code == 200
    assert status.json()["worker_environment_exists"] is True
    assert httpx.get(f"{stack.http}/api/status").status_code == 401
    wrong = httpx.get(f"{stack.http}/api/status", headers={"Authorization": "ApiKey 0123abcd"})
    assert wrong.status_code == 401
    # the key can queue (and a plan is validated there too)
    added = httpx.post(
        f"{stack.http}/api/queue/item/add",
        json={"item": {"item_type": "plan", "name": "count", "args": [["force"]]}},
        headers={"Authorization": f"ApiKey {key}"},
    )
    assert added.status_code == 200 and added.json()["success"], added.text
    refused = httpx.post(
        f"{stack.http}/api/queue/item/add",
        json={"item": {"item_type": "plan", "name": "count", "args": [["force"]]}},
    )
    assert refused.status_code == 401
    assert [i["name"] for i in api.queue_get()["items"]] == ["count"]
    api.queue_clear()


def test_sigterm_aborts_the_plan_and_leaves_no_child(api, stack):
    # a long scan (1601 projections): running when the signal comes
    api.item_add(
        BPlan(
            "xct_scan3d",
            num_projections=1601,
            images_per_projection=1,
            exposure=0.2,
            num_darks=0,
            num_flats=0,
            experiment_id="stopped",
        )
    )
    api.queue_start()
    api.wait_for_condition(lambda s: s["re_state"] == "running", timeout=60)
    children = _descendants(stack.proc.pid)
    names = set(children.values())
    assert "redis-server" in names, children
    assert len(children) >= 4, children  # redis, manager, its worker, the HTTP server
    stopped = _operando("queue", "stop", "--data-dir", str(stack.data_dir))  # SIGTERM
    if stopped.returncode != 0:
        stack.proc.wait(timeout=120)
    assert stopped.returncode == 0, (stopped.stderr, stack.output()[-3000:], _log_tail(stack, 8000))
    code = stack.proc.wait(timeout=30)
    out = stack.output()
    assert code == 143, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "did not stop cleanly" not in out, out[-3000:]
    assert not [pid for pid in children if _alive(pid)], children
    # the plan was aborted through the RunEngine: its cleanup switched the source off
    assert ca_client.get(stack.xct_ioc.prefix + "src:on_rbv") == 0
    # the history was saved (Redis keeps nothing)
    saved = sorted(stack.paths.history.glob("history-*.json"))
    assert saved and '"stopped"' in saved[-1].read_text()
    assert '"aborted"' in saved[-1].read_text()
