"""Runs read back from Tiled by a reduction worker (``operando reduce --follow``)
when the server fails a read for a while: the read is tried again (the
experiment's state is not left without the run), errors that are no failure of
the server stand at once, and a run whose read outlasted the reducer's patience
is handed over again by the worker's next scan of the catalog."""

from __future__ import annotations

import httpx
import pytest
from tiled.client.utils import ClientError

from operando import techniques
from operando.callbacks.core import LiveReducer, server_may_recover
from operando.callbacks.core.store import COMPLETE_KEY
from operando.workers import ReductionWorker


def _status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://127.0.0.1/api/v1/table/partition/raw/x/dark/internal")
    response = httpx.Response(code, request=request)
    if code < 500:
        return ClientError(f"{code}: refused", request, response)
    return httpx.HTTPStatusError(f"{code}", request=request, response=response)


def test_which_failures_the_server_may_recover_from():
    request = httpx.Request("GET", "http://127.0.0.1/api/v1/")
    assert server_may_recover(_status_error(500))
    assert server_may_recover(_status_error(503))
    assert server_may_recover(httpx.ConnectError("refused", request=request))
    assert server_may_recover(httpx.ReadTimeout("slow", request=request))
    assert not server_may_recover(_status_error(422))
    assert not server_may_recover(_status_error(404))
    assert not server_may_recover(KeyError("dark"))
    assert not server_may_recover(ValueError("shape"))
    # one raised while handling the server's failure still counts as it
    try:
        try:
            raise _status_error(500)
        except httpx.HTTPStatusError as err:
            raise RuntimeError("reading the dark stream failed") from err
    except RuntimeError as wrapped:
        assert server_may_recover(wrapped)


class _Run:
    def __init__(self, uid: str, eid: str = "e1", *, stop: bool = True):
        start = {"uid": uid, "technique": "probe", "experiment_id": eid, "time": 0.0}
        self.metadata = {"start": start, "stop": {"exit_status": "success"} if stop else None}

    def refresh(self):
        return self

    def __contains__(self, stream):
        return False  # no streams: no rows to wait for


class _Experiment:
    def __init__(self, eid):
        self.experiment_id = eid
        self.runs: list[str] = []


class _Reducer(LiveReducer):
    """Reads fail with ``failures[uid]`` (errors, one per try) before they succeed."""

    technique = "probe"
    steps = ("",)
    read_retry_first = 0.01

    def __init__(self, client=None, figures_dir=None):
        super().__init__(None)
        self.failures: dict[str, list[Exception]] = {}
        self.tries: dict[str, int] = {}
        self.settled: list[str] = []

    def accepts(self, start):
        return start.get("technique") == "probe"

    def _new_experiment(self, eid):
        return _Experiment(eid)

    def _read(self, run):
        uid = run.metadata["start"]["uid"]
        self.tries[uid] = self.tries.get(uid, 0) + 1
        pending = self.failures.get(uid) or []
        if pending:
            raise pending.pop(0)
        exp = self._experiment(run.metadata["start"]["experiment_id"])
        exp.runs.append(uid)

    def _reduce_stored(self, run):
        self._read(run)

    def _restore_stored(self, run, node):
        self._read(run)

    def settle(self, eid):
        self.settled.append(eid)


def test_a_read_the_server_fails_for_a_moment_is_tried_again():
    reducer = _Reducer()
    reducer.failures["r0"] = [_status_error(500), httpx.ConnectError("refused")]
    try:
        reducer.submit(reducer.restore_stored, _Run("r0"), None)
        reducer.submit(reducer.reduce_stored, _Run("r1"))
        assert reducer.flush(timeout=30)
        assert reducer.tries == {"r0": 3, "r1": 1}
        # in order: the restored run first, then the one reduced after it
        assert reducer.experiments["e1"].runs == ["r0", "r1"]
        assert reducer.errors == []
    finally:
        reducer.close(timeout=10)


def test_a_refusal_is_not_tried_again():
    reducer = _Reducer()
    reducer.failures["r0"] = [_status_error(422)]
    try:
        reducer.submit(reducer.reduce_stored, _Run("r0"))
        assert reducer.flush(timeout=30)
        assert reducer.tries == {"r0": 1}
        assert [kind for kind, _ in reducer.errors] == ["reduce_stored"]
        assert "422" in reducer.errors[0][1]
    finally:
        reducer.close(timeout=10)


def test_the_error_stands_once_the_patience_is_spent():
    reducer = _Reducer()
    reducer.read_patience = 1.0
    reducer.retry_every = 0.2  # the longest pause
    reducer.failures["r0"] = [_status_error(500) for _ in range(1000)]
    try:
        reducer.submit(reducer.reduce_stored, _Run("r0"))
        assert reducer.flush(timeout=30)
        # pauses of 0.01, 0.02, 0.04, 0.08, 0.16, then 0.2 s: eight fit in 1 s
        # (fewer if the machine is slow to wake the worker, never more)
        assert 2 <= reducer.tries["r0"] <= 9
        assert [kind for kind, _ in reducer.errors] == ["reduce_stored"]
        assert "r0" not in reducer.experiments.get("e1", _Experiment("e1")).runs
    finally:
        reducer.close(timeout=10)


class _Node:
    def __init__(self, metadata):
        self.metadata = metadata


class _Container(dict):
    pass


@pytest.fixture
def probe_technique(monkeypatch):
    techniques.names()  # the built-in ones registered first, outside the copy
    monkeypatch.setattr(techniques, "_REGISTRY", dict(techniques._REGISTRY))
    techniques.register(
        techniques.Technique(
            name="probe",
            run_technique="probe",
            live_reducer=_Reducer,
            reduce_offline=lambda *a, **k: {},
            figures=lambda *a, **k: [],
        )
    )


def test_a_run_tiled_kept_failing_is_handed_over_again_by_the_next_scan(probe_technique):
    raw = _Container(r0=_Run("r0"), r1=_Run("r1"))
    reduced = _Container(r0=_Node({COMPLETE_KEY: True}))  # r0 was reduced before
    worker = ReductionWorker(
        {"raw": raw, "reduced": reduced}, technique_names=["probe"], rescan_s=0
    )
    reducer = worker.reducers["probe"]
    reducer.read_patience = 0.0  # one try only
    reducer.failures["r0"] = [_status_error(500)]
    try:
        assert worker.catch_up() == 1  # r1 to reduce; r0 to restore
        assert reducer.flush(timeout=30)
        assert reducer.experiments["e1"].runs == ["r1"]
        assert worker.unread == {"r0"} and "r0" not in worker.seen
        # the server is back: the next scan restores r0, and only r0
        worker.catch_up()
        assert reducer.flush(timeout=30)
        assert sorted(reducer.experiments["e1"].runs) == ["r0", "r1"]
        assert reducer.tries == {"r0": 2, "r1": 1}
        assert worker.unread == set() and worker.seen == {"r0", "r1"}
        # and one more scan has nothing to do
        worker.catch_up()
        assert reducer.flush(timeout=30)
        assert reducer.tries == {"r0": 2, "r1": 1}
    finally:
        worker.close(timeout=10)


class _Flaky(_Run):
    def __init__(self, uid, failures):
        super().__init__(uid)
        self.failures = list(failures)

    def refresh(self):
        if self.failures:
            raise self.failures.pop(0)
        return self


def test_waiting_for_a_runs_rows_outlasts_a_failing_server():
    from operando.callbacks.core.follow import wait_finished

    run = _Flaky("r0", [_status_error(500), _status_error(502)])
    assert wait_finished(run, timeout=30, poll=0.01)
    with pytest.raises(ClientError):
        wait_finished(_Flaky("r1", [_status_error(422)]), timeout=30, poll=0.01)
