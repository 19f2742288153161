"""The ``operando`` command line, run as a user would (subprocesses)."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiled.client import from_uri

from operando.tiled_server import DataLayout, TiledServer

OPERANDO = [str(Path(sys.executable).with_name("operando"))]


def _run(args, **kwargs):
    return subprocess.run(OPERANDO + args, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.mark.slow
def test_run_xct_headless_into_embedded_tiled(tmp_path):
    data = tmp_path / "data"
    proc = _run(
        [
            "run",
            "xct",
            "--cycles",
            "1",
            "--time-scale",
            "virtual",
            "--projections",
            "11",
            "--images",
            "1",
            "--no-postmortem",
            "--sample-every",
            "600",
            "--experiment-id",
            "cli-test",
            "--data-dir",
            str(data),
        ]
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    uids = re.findall(r"^\s+([0-9a-f-]{36})\s+(\w+)", proc.stdout, flags=re.M)
    assert [step for _, step in uids] == ["scan3d", "plating"]
    assert "experiment cli-test" in proc.stdout and str(data.resolve()) in proc.stdout
    assert "cell-h" not in proc.stderr  # no progress bar: not a terminal
    assert "live reduction reported" not in proc.stdout + proc.stderr  # reduced cleanly
    key_file = data / "api_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The catalog persists: a new server on the same data directory serves the runs.
    with TiledServer(DataLayout.at(data)) as server:
        client = from_uri(server.uri, api_key=server.api_key, structure_clients="numpy")
        for uid, step in uids:
            run = client["raw"][uid]
            assert run.metadata["start"]["step"] == step
            assert run.metadata["start"]["experiment_id"] == "cli-test"
        assert server.host == "127.0.0.1"
    # Nothing was left in the backup, so replay has nothing to do.
    proc = _run(["replay", "--data-dir", str(data)])
    assert proc.returncode == 0 and "no backups" in proc.stdout


def test_cli_rejects_bad_arguments(tmp_path):
    for bad in ("0", "-1", "nan", "inf", "fast"):
        proc = _run(["run", "xct", "--time-scale", bad, "--data-dir", str(tmp_path)])
        assert proc.returncode == 2 and "time-scale" in proc.stderr, bad
    proc = _run(["run", "saxs", "--grid", "0x4", "--data-dir", str(tmp_path)])
    assert proc.returncode == 2 and "grid" in proc.stderr
    proc = _run(
        ["run", "xct", "--tiled-uri", "http://127.0.0.1:1", "--data-dir", str(tmp_path)],
        env={k: v for k, v in os.environ.items() if k != "TILED_API_KEY"},
    )
    assert proc.returncode == 2 and "api-key" in proc.stderr


@pytest.mark.slow
def test_run_saxs_with_live_reduction_then_reduce_offline(tmp_path):
    data = tmp_path / "data"
    proc = _run(
        [
            "rehearse",
            "saxs",
            "--cycles",
            "1",
            "--grid",
            "3x2",
            "--c-rate",
            "0.5",
            "--raster-every",
            "2400",
            "--exposure",
            "1",
            "--sample-every",
            "600",
            "--experiment-id",
            "cli-saxs",
            "--data-dir",
            str(data),
        ]
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # the rehearsal's summary: cell hours, wall seconds, where the time went
    summary = re.search(r"rehearsal: ([\d.]+) h of cell time in ([\d.]+) s of wall", proc.stdout)
    assert summary and float(summary.group(1)) > 1.0  # a C/2 cycle takes over an hour
    assert "Tiled writing" in proc.stdout and "acquisition" in proc.stdout
    runs = re.findall(r"^\s+([0-9a-f-]{36})\s+(\w+)", proc.stdout, flags=re.M)
    steps = [step for _, step in runs]
    assert steps[:2] == ["background", "ocv"] and steps.count("operando") >= 2
    figures = data / "figures" / "cli-saxs"
    pngs = sorted(p.name for p in figures.glob("*.png"))
    assert {
        "li2s_maps.png",
        "voltage_capacity.png",
        "waterfall.png",
        "alignment.png",
        "iq_lines.png",
    } <= set(pngs)
    with TiledServer(DataLayout.at(data)) as server:
        client = from_uri(server.uri, api_key=server.api_key, structure_clients="numpy")
        last = runs[-1][0]
        live = client["reduced"][last]
        waxs_live = live["waxs"].read()
        assert waxs_live.shape[0] == 6 and live["li2s_map"].read().shape == (2, 3)
        assert live.metadata["raw_uid"] == last
        # --sample-every: the cycling record between rasters, at most 600 cell s apart
        # (closer near the potential limits), never the default 60 s grid throughout
        cycling = [uid for uid, step in runs if step == "cycling"]
        gaps = np.concatenate(
            [
                np.diff(np.asarray(client["raw"][uid]["cell"]["clock_time"].read()))
                for uid in cycling
            ]
        )
        assert gaps.max() <= 600.0 + 1e-6
        assert np.median(gaps) > 120.0
    # Offline, from the stored raw runs alone: the same curves.
    proc = _run(["reduce", last, "--data-dir", str(data), "--figures", str(tmp_path / "offline")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "saxs_waxs" in proc.stdout
    with TiledServer(DataLayout.at(data)) as server:
        client = from_uri(server.uri, api_key=server.api_key, structure_clients="numpy")
        offline = client["reduced"][last]
        assert offline.metadata["reduction"]["mode"] == "offline"
        np.testing.assert_allclose(offline["waxs"].read(), waxs_live, rtol=1e-6)
    assert list((tmp_path / "offline").rglob("li2s_maps.png"))
