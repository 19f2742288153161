"""The IPython profile: a user session runs a scan against the simulator into Tiled."""

import os
import subprocess
import sys
from pathlib import Path

from tiled.client import from_uri

ROOT = Path(__file__).resolve().parents[2]


def test_profile_session_runs_scan3d_into_tiled(xct_ioc, tiled_server, tmp_path):
    env = dict(os.environ)
    env.update(
        {
            "OPERANDO_XCT_PREFIX": xct_ioc.prefix,
            "OPERANDO_TILED_URI": tiled_server.uri,
            "TILED_API_KEY": tiled_server.api_key,
            "OPERANDO_DATA_DIR": str(tiled_server.layout.root),
            "MPLBACKEND": "Agg",
            "IPYTHONDIR": str(tmp_path / "ipython"),
        }
    )
    code = (
        "r = RE(scan3d(xct, num_projections=3, images_per_projection=1, exposure=0.2, "
        "num_darks=1, num_flats=1, experiment_id='from-profile')); "
        "print('UID', r.run_start_uids[0])"
    )
    ipython = Path(sys.executable).with_name("ipython")
    proc = subprocess.run(
        [
            str(ipython),
            "--profile-dir",
            str(ROOT / "profile_collection"),
            "--no-banner",
            "--colors=NoColor",
            "--HistoryManager.hist_file=:memory:",
            "-c",
            code,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    uids = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("UID ")]
    assert len(uids) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = from_uri(tiled_server.uri, api_key=tiled_server.api_key, structure_clients="numpy")
    run = client["raw"][uids[0]]
    assert run.metadata["start"]["experiment_id"] == "from-profile"
    assert run["primary"]["ct_det_image"].read().shape[0] == 3
