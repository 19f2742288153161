"""The live reducers' worker (callbacks/core/live.py): experiment summaries
(figures, ``reduced/<experiment_id>``) are brought up to date once the worker has
caught up, once for all the runs reduced meanwhile, and always before ``flush``
returns."""

from __future__ import annotations

import threading

from operando.callbacks.core import LiveReducer


class _Experiment:
    def __init__(self, eid):
        self.experiment_id = eid
        self.runs = []


class _Reducer(LiveReducer):
    """Runs are handed in with ``submit``; ``settled`` notes what each settle saw."""

    def __init__(self):
        super().__init__(None)
        self.settled: list[tuple[str, int]] = []

    def _new_experiment(self, eid):
        return _Experiment(eid)

    def reduce(self, eid, uid, gate=None):
        if gate is not None:
            gate.wait(10)
        exp = self._experiment(eid)
        exp.runs.append(uid)
        self._touch(exp)

    def settle(self, eid):
        self.settled.append((eid, len(self.experiments[eid].runs)))


def test_a_reducer_behind_settles_once_for_all_its_runs():
    reducer = _Reducer()
    gate = threading.Event()
    try:
        reducer.submit(reducer.reduce, "e1", "r0", gate)  # the worker is busy with this one
        for i in range(1, 10):
            reducer.submit(reducer.reduce, "e1", f"r{i}")
        reducer.submit(reducer.reduce, "e2", "s0")
        gate.set()
        assert reducer.flush(timeout=30)
        # everything reduced before the only settles, each of them seeing every run
        assert sorted(reducer.settled) == [("e1", 10), ("e2", 1)]
        assert not reducer.errors
    finally:
        reducer.close(timeout=10)


def test_a_reducer_that_keeps_up_settles_after_every_run():
    reducer = _Reducer()
    try:
        for i in range(3):
            reducer.submit(reducer.reduce, "e1", f"r{i}")
            assert reducer.flush(timeout=30)
        assert reducer.settled == [("e1", 1), ("e1", 2), ("e1", 3)]
    finally:
        reducer.close(timeout=10)


def test_a_failing_settle_is_kept_and_the_worker_goes_on():
    reducer = _Reducer()

    def broken(eid):
        raise RuntimeError("Tiled went away")

    reducer.settle = broken
    try:
        reducer.submit(reducer.reduce, "e1", "r0")
        assert reducer.flush(timeout=30)
        assert reducer.errors and reducer.errors[0][0] == "idle"
        reducer.settle = lambda eid: reducer.settled.append((eid, 2))
        reducer.submit(reducer.reduce, "e1", "r1")
        assert reducer.flush(timeout=30)
        assert reducer.settled == [("e1", 2)]
    finally:
        reducer.close(timeout=10)


class _Tiled:
    """A ``write`` that Tiled refuses while ``down``."""

    def __init__(self):
        self.down = True
        self.stored: dict[str, int] = {}
        self.attempts = 0

    def write(self, reduced, uid, value):
        self.attempts += 1
        if self.down:
            raise ConnectionError("Connection refused")
        self.stored[uid] = value


class _Writing(_Reducer):
    def __init__(self, tiled):
        super().__init__()
        self.tiled = tiled
        self.client = object()  # writes go to ``tiled``
        self._reduced = object()

    def reduce(self, eid, uid, gate=None):
        super().reduce(eid, uid, gate)
        self._write(uid, self.tiled.write, uid, len(self.experiments[eid].runs))


def test_a_reduction_tiled_refused_is_written_once_it_is_back():
    tiled = _Tiled()
    reducer = _Writing(tiled)
    reducer.retry_every = 3600.0  # no retry on the worker's own: only flush's
    try:
        reducer.submit(reducer.reduce, "e1", "r0")
        reducer.submit(reducer.reduce, "e1", "r1")
        assert reducer.flush(timeout=30)
        assert reducer.unwritten == ["r0", "r1"] and tiled.stored == {}
        assert [kind for kind, _ in reducer.errors] == ["tiled", "tiled"]
        tiled.down = False
        reducer.submit(reducer.reduce, "e1", "r2")  # written at once; r0, r1 wait
        assert reducer.flush(timeout=30)  # the last try before flush returns
        assert reducer.unwritten == [] and tiled.stored == {"r0": 1, "r1": 2, "r2": 3}
        assert reducer.written == ["r2", "r0", "r1"]
    finally:
        reducer.close(timeout=10)


def test_retries_are_spaced_while_tiled_stays_away():
    tiled = _Tiled()
    reducer = _Writing(tiled)
    reducer.retry_every = 3600.0
    try:
        for i in range(5):
            reducer.submit(reducer.reduce, "e1", f"r{i}")
        assert reducer.flush(timeout=30)
        # one write per run, then one try at flush (stopped at its first refusal)
        assert tiled.attempts == 5 + 1
        assert reducer.unwritten == [f"r{i}" for i in range(5)]
    finally:
        reducer.close(timeout=10)
