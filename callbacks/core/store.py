"""Tiled helpers shared by the techniques' stores and offline reductions.

:func:`json_safe` (metadata), :func:`replace_container` (every reduced node is
written anew), :func:`write_array` / :func:`write_table` (with units and
descriptions from :mod:`..units`), :func:`stream_columns` (a stored stream's scalars in one request)
and :func:`find_experiment_runs` (a raw run uid or an ``experiment_id`` → the
experiment's raw runs).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable

import numpy as np

from ..units import array_metadata, column_metadata, describe

logger = logging.getLogger(__name__)

__all__ = [
    "json_safe",
    "replace_container",
    "write_array",
    "write_table",
    "stream_columns",
    "find_experiment_runs",
    "write_figures",
    "save_png",
    "FIGURES_KEY",
    "stored_frames",
    "run_problems",
    "COMPLETE_KEY",
    "mark_complete",
    "is_complete",
]

#: the container of an experiment's figures, under its reduced node
FIGURES_KEY = "figures"

#: metadata key of a reduced node once everything in it is written: a node
#: without it was cut short (the writer stopped mid-way) and is written again
COMPLETE_KEY = "complete"


def json_safe(obj):
    """JSON-safe copy: numpy scalars → Python, NaN/inf → None, tuples → lists."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def server_may_recover(err: BaseException) -> bool:
    """Whether ``err``, or an error that caused it, is a failure of the Tiled
    server that may pass (no answer, a 5xx, a 429), by the rule Tiled's client
    retries its own requests by; not a refusal (4xx) and not a bug here."""
    from tiled.client.utils import should_retry

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, Exception) and should_retry(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def replace_container(parent, key: str, metadata: dict):
    """Delete ``parent[key]`` (recursively) if it exists and create it anew."""
    if key in parent:
        parent.delete_contents(key, recursive=True, external_only=False)
    return parent.create_container(key, metadata=json_safe(metadata))


def mark_complete(node) -> None:
    """Say in ``node``'s metadata that it is written whole (the last write of a store)."""
    node.update_metadata(metadata={COMPLETE_KEY: True}, drop_revision=True)


def is_complete(node) -> bool:
    """Whether a reduced node was written whole (:func:`mark_complete`)."""
    return bool((node.metadata or {}).get(COMPLETE_KEY))


def write_array(node, array, *, key: str, metadata: dict | None = None, **kwargs):
    """``node.write_array`` with the array's unit and description in its metadata."""
    md = {**array_metadata(key), **(metadata or {})}
    return node.write_array(array, key=key, metadata=json_safe(md), **kwargs)


def write_table(node, data, *, key: str, metadata: dict | None = None, **kwargs):
    """``node.write_table`` with every column's unit and description in its metadata."""
    columns = list(data.columns) if hasattr(data, "columns") else list(data)
    md = {**column_metadata(columns), **(metadata or {})}
    return node.write_table(data, key=key, metadata=json_safe(md), **kwargs)


def save_png(fig, path, *, dpi: int = 110) -> str:
    """Write a matplotlib ``Figure`` as PNG at ``path`` (to a temporary name, then
    renamed: readers never see half a file); returns the path as a string."""
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)
    return str(path)


def write_figures(node, paths, descriptions: dict[str, str] | None = None):
    """Store PNG figures under ``node/figures`` as image arrays (height, width,
    RGBA uint8), one per file, keyed by its stem, with what it shows in its
    metadata; a plain client reads each with ``.read()`` or exports it as PNG
    (``.export("f.png")``). Returns the keys written."""
    from pathlib import Path

    from matplotlib.image import imread

    descriptions = descriptions or {}
    paths = [Path(p) for p in paths if Path(p).is_file()]
    if not paths:
        return []
    if FIGURES_KEY in node:
        node.delete_contents(FIGURES_KEY, recursive=True, external_only=False)
    unit, description = describe(FIGURES_KEY)
    container = node.create_container(
        FIGURES_KEY, metadata={"units": unit, "description": description}
    )
    keys = []
    for path in paths:
        image = imread(path)
        if image.dtype != np.uint8:
            image = np.clip(np.round(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
        if image.ndim == 3 and image.shape[2] == 3:
            alpha = np.full(image.shape[:2] + (1,), 255, np.uint8)
            image = np.concatenate([image, alpha], axis=2)
        container.write_array(
            image,
            key=path.stem,
            dims=["y", "x", "rgba"],
            metadata=json_safe(
                {
                    "kind": "figure",
                    "description": descriptions.get(path.stem, ""),
                    "file": path.name,
                    "media_type": "image/png",
                }
            ),
        )
        keys.append(path.stem)
    return keys


def stream_columns(stream) -> dict[str, np.ndarray]:
    """A stored stream's scalar columns (TiledWriter's ``internal`` table, one
    request; else key by key)."""
    base = getattr(stream, "base", stream)
    if "internal" in base:
        table = base["internal"].read()
        return {c: table[c].to_numpy() for c in table.columns}
    out = {}
    for key in stream:
        node = stream[key]
        if len(getattr(node, "shape", ())) == 1:
            out[key] = np.asarray(node.read())
    return out


def find_experiment_runs(
    raw, experiment_id_or_raw_uid: str, *, accept: Callable[[dict], bool] | None = None
) -> tuple[str, list]:
    """``(experiment_id, [(uid, run), ...])`` of an experiment's raw runs in
    start-time order; ``accept(start_doc)`` filters them.

    The argument is an ``experiment_id`` or the uid of any of its raw runs; the
    runs are found with ``Key("start.experiment_id") == experiment_id``.
    """
    from tiled.queries import Key

    key = str(experiment_id_or_raw_uid)
    eid, single = key, None
    if key in raw:
        single = raw[key]
        eid = str(single.metadata["start"].get("experiment_id") or "")
    if eid:
        found = list(raw.search(Key("start.experiment_id") == eid).items())
    elif single is not None:
        found = [(key, single)]
    else:
        found = []
    runs = []
    for uid, run in found:
        start = run.metadata.get("start", {})
        if accept is None or accept(start):
            runs.append((float(start.get("time", 0.0)), uid, run))
    if not runs:
        raise KeyError(f"no runs to reduce for {key!r}")
    runs.sort(key=lambda r: (r[0], r[1]))
    return eid, [(uid, run) for _, uid, run in runs]


def run_problems(metadata: dict) -> list[str]:
    """Why a stored run is not a complete one (empty when it is): no stop
    document, or an exit status other than ``success``."""
    stop = metadata.get("stop") or {}
    if not stop:
        return ["no stop document: the acquisition ended before the run was closed"]
    status = stop.get("exit_status")
    if status != "success":
        reason = stop.get("reason") or ""
        return [f"exit_status {status!r}" + (f": {reason}" if reason else "")]
    return []


def _file_frames(array) -> list[tuple[str, str, int]]:
    """``(path, dataset, count)`` of the HDF5 files behind a stored external
    array, as far as they can be opened here (the frames they really hold)."""
    import h5py

    from operando.constants import FRAME_DATASET

    from .frames import path_of_uri

    out = []
    try:
        sources = array.data_sources()
    except Exception:  # noqa: BLE001 - a server that does not say
        return out
    for source in sources:
        src = source if isinstance(source, dict) else dataclasses.asdict(source)
        params = src.get("parameters") or {}
        dataset = params.get("dataset") or FRAME_DATASET
        if isinstance(dataset, (list, tuple)):
            dataset = "/".join(str(d) for d in dataset)
        for asset in src.get("assets") or []:
            path = path_of_uri(asset.get("data_uri", ""))
            try:
                with h5py.File(path, "r", swmr=True) as f:
                    out.append((path, dataset, int(f[dataset].shape[0])))
            except Exception:  # noqa: BLE001 - not readable from here
                try:
                    with h5py.File(path, "r") as f:
                        out.append((path, dataset, int(f[dataset].shape[0])))
                except Exception:  # noqa: BLE001
                    continue
    return out


def stored_frames(stream, key: str):
    """``(frames, n_events, problem)`` of the external array ``key`` of a stored stream.

    When the detector file holds every frame the events recorded, ``frames``
    is the Tiled array and ``problem`` None. When it holds fewer (a run cut
    short: events recorded for frames the file never received, which Tiled
    refuses to serve), ``frames`` is the frames the file does hold, read from
    the file itself (a :class:`~.frames.FrameStack`; None when the file cannot
    be opened here) and ``problem`` says what is missing.
    """
    from .frames import FrameStack

    array = stream[key]
    n = int(array.shape[0])
    if n == 0:
        return array, 0, None
    try:
        np.asarray(array[n - 1])
        return array, n, None
    except Exception as exc:  # noqa: BLE001 - Tiled's 4xx/5xx for a short file
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    files = _file_frames(array)
    held = sum(c for _, _, c in files)
    locations = []
    for path, dataset, count in files:
        locations += [(path, dataset, i) for i in range(count)]
    locations = locations[:n]
    problem = f"{key}: {n} events recorded, the detector file holds {held} frame(s) ({error})"
    if not locations:
        return None, n, problem
    shape = tuple(int(s) for s in array.shape[1:])
    frames = FrameStack(locations, frame_shape=shape, dtype=array.dtype, timeout=1.0)
    return frames, n, problem
