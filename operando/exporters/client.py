"""``operando export``: find the node a format applies to and download the file.

A reference is a raw run uid, an experiment id, or a path below one of them
(``<id>/cycles``, ``<uid>/volume``), or a full path (``raw/<uid>``,
``reduced/<id>/timeseries``). Each format has its default node
(:data:`operando.exporters.FORMATS`):

* ``nxtomo``: ``raw/<uid>`` (a 3D scan);
* ``nxcansas``, ``nexus``, ``tiff``: ``reduced/<uid>`` (a raster; a scan's
  volume; ``<uid>/volume`` names the array itself);
* ``csv``, ``parquet``: a table, ``reduced/<id>/<table>``, or the container's
  only table (``points`` of a raster).

The file is streamed to disk (a temporary name, renamed when complete) with a
read timeout long enough for the server to write a full-size scan first.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from . import FORMATS

__all__ = ["ExportProblem", "resolve", "download", "export"]

#: the server writes the whole file before its first byte: allow it time
READ_TIMEOUT_S = 1800.0
CONTAINERS = ("raw", "reduced")


class ExportProblem(Exception):
    """The reference or the format does not name an exportable node."""


def _family(node) -> str:
    family = node.structure_family
    return str(getattr(family, "value", family))


def _child(node, key: str):
    try:
        return node[key]
    except (KeyError, ValueError) as err:  # a partial uid too short or ambiguous: ValueError
        raise ExportProblem(str(err) if isinstance(err, ValueError) else f"no {key!r}") from None


def _lookup(client, path: list[str]) -> tuple[object, list[str]]:
    """The node at ``path`` and its full path (a raw run may be given by a partial uid,
    in ``raw/`` and in ``reduced/``)."""
    node, full = client, []
    for key in path:
        try:
            child = _child(node, key)
        except ExportProblem as err:
            where = "/".join(full) or "the catalog"
            if full == ["reduced"] and "raw" in client:
                try:  # a partial raw uid: its reduced node has the full one
                    child = _child(node, _child(client["raw"], key).item["id"])
                except ExportProblem:
                    raise ExportProblem(f"{err} in {where}") from None
            else:
                raise ExportProblem(f"{err} in {where}") from None
        node = child
        full.append(child.item["id"])
    return node, full


def resolve(client, ref: str, fmt: str) -> tuple[object, list[str]]:
    """The node that ``fmt`` exports for ``ref``, and its path in the catalog."""
    if fmt not in FORMATS:
        raise ExportProblem(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    parts = [p for p in ref.strip("/").split("/") if p]
    if not parts:
        raise ExportProblem("nothing to export: give a run uid, an experiment id or a path")
    if parts[0] in CONTAINERS:
        path = parts
    elif FORMATS[fmt]["node"] == "raw":
        path = ["raw", *parts]
    else:
        path = ["reduced", *parts]
    node, path = _lookup(client, path)
    if FORMATS[fmt]["node"] == "table" and _family(node) != "table":
        tables = [k for k, v in node.items() if _family(v) == "table"]
        if len(tables) != 1:
            listed = ", ".join(tables) if tables else "none"
            raise ExportProblem(
                f"{'/'.join(path)} holds tables {listed}: name one, e.g. "
                f"{'/'.join(path[1:])}/{tables[0] if tables else 'TABLE'}"
            )
        path = [*path, tables[0]]
        node = node[tables[0]]
    return node, path


def _default_name(path: list[str], fmt: str) -> str:
    stem = "-".join(path[1:]) or path[0]
    label = FORMATS[fmt].get("name", "")
    return stem + ("" if stem.endswith(label) else label) + FORMATS[fmt]["suffix"]


def download(node, fmt: str, out: Path) -> int:
    """Stream ``node`` exported as ``fmt`` into ``out``; returns the number of bytes."""
    http = node.context.http_client
    link = node.item["links"]["full"]
    out = Path(out)
    part = out.with_name(out.name + ".part")
    timeout = httpx.Timeout(30.0, read=READ_TIMEOUT_S)
    size = 0
    try:
        with http.stream("GET", link, params={"format": fmt}, timeout=timeout) as response:
            if response.status_code != 200:
                response.read()
                try:
                    detail = response.json().get("detail", response.text)
                except ValueError:
                    detail = response.text
                raise ExportProblem(f"the server refused ({response.status_code}): {detail}")
            with open(part, "wb") as f:
                for chunk in response.iter_bytes():
                    f.write(chunk)
                    size += len(chunk)
        os.replace(part, out)
    except httpx.HTTPError as err:
        raise ExportProblem(f"the download from {link} failed: {err}") from err
    finally:
        if part.exists():
            part.unlink()
    return size


def export(
    client, ref: str, fmt: str, out: str | os.PathLike | None = None
) -> tuple[Path, int, str]:
    """Export ``ref`` as ``fmt``; returns the file, its size and the node's catalog path."""
    node, path = resolve(client, ref, fmt)
    target = Path(out) if out else Path(_default_name(path, fmt))
    if target.is_dir():
        target = target / _default_name(path, fmt)
    size = download(node, fmt, target)
    return target, size, "/".join(path)
