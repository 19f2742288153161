"""Starting the station simulators as subprocesses, for the integration tests.

Each IOC gets a random prefix and a free loopback port of its own, is waited on
by reading a PV (never a fixed sleep), and is stopped with ``.stop()``.
"""

from __future__ import annotations

from operando.ioc_process import IOCProcess, random_prefix
from operando.iocs.clock import parse_time_scale

XCT_TEST_SCALE = 400.0
#: C/20 cycling takes ~12 h of cell time: 4.4 s wall at this scale
SAXS_TEST_SCALE = 10000.0


def start_simulator(module, tmp_dir, *, time_scale, seed=0, extra=()):
    """A station simulator as a subprocess on its own loopback port, ready to use.

    The returned ``IOCProcess`` also carries ``frames_dir`` (the detectors'
    FilePath), ``truth_file`` (ground truth as JSON lines, never read by plans)
    and ``scale``. Stop it with ``.stop()``.
    """
    frames = tmp_dir / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    truth = tmp_dir / "truth.jsonl"
    ioc = IOCProcess(
        module,
        random_prefix("T"),
        log_path=tmp_dir / "ioc.log",
        args=[
            "--time-scale",
            time_scale,
            "--data-dir",
            frames,
            "--seed",
            seed,
            "--truth-file",
            truth,
            *extra,
        ],
    )
    ioc.frames_dir, ioc.truth_file = frames, truth
    ioc.scale = parse_time_scale(time_scale)
    return ioc.start()


def start_xct_ioc(tmp_dir, *, time_scale=XCT_TEST_SCALE, binning=4, seed=0, extra=()):
    return start_simulator(
        "operando.iocs.xct",
        tmp_dir,
        time_scale=time_scale,
        seed=seed,
        extra=["--binning", binning, *extra],
    )


def start_saxs_ioc(
    tmp_dir, *, time_scale=SAXS_TEST_SCALE, beamline="synchrotron", seed=0, extra=()
):
    return start_simulator(
        "operando.iocs.saxs",
        tmp_dir,
        time_scale=time_scale,
        seed=seed,
        extra=["--beamline", beamline, *extra],
    )
