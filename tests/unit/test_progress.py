"""The progress bar: cycle k of n, step, cell hours; silent when not on a terminal."""

import io

from operando.progress import ExperimentProgress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def _run(cb, *, cycle, step, times):
    cb("start", {"uid": f"u{cycle}{step}", "time": 0, "cycle": cycle, "step": step})
    cb(
        "descriptor",
        {
            "uid": f"d{cycle}{step}",
            "run_start": f"u{cycle}{step}",
            "name": "cell",
            "data_keys": {},
            "time": 0,
        },
    )
    for t in times:
        cb(
            "event",
            {
                "uid": f"e{t}",
                "descriptor": f"d{cycle}{step}",
                "time": 0,
                "seq_num": 1,
                "data": {"clock_time": t},
                "timestamps": {},
            },
        )


def test_bar_follows_cell_time_and_names_the_cycle():
    out = FakeTerminal()
    cb = ExperimentProgress(18.0, cycles=2, file=out)
    _run(cb, cycle=1, step="scan3d", times=[0.0, 3600.0, 3 * 3600.0])
    _run(cb, cycle=2, step="plating", times=[9 * 3600.0, 12 * 3600.0])
    assert cb.bar.n == 12.0
    text = out.getvalue()
    assert "cycle 1/2 scan3d" in text and "cycle 2/2 plating" in text
    assert "cell-h" in text
    cb.close()


def test_silent_when_not_a_terminal():
    out = io.StringIO()
    cb = ExperimentProgress(9.0, cycles=1, file=out)
    _run(cb, cycle=1, step="scan3d", times=[0.0, 7200.0])
    cb.close()
    assert out.getvalue() == ""
