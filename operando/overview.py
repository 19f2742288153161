"""One readable block of a station's state: ``wh(xct)``, ``wh(saxs)``, ``%wh``.

:func:`read_station` reads every value once (a fresh Channel Access read per
signal, unreachable ones as ``None``); :func:`format_overview` turns those
values into text and is pure, so the layout is tested without a station.
"""

from __future__ import annotations

import math

from .constants import HOUR

#: What the overview reads: (key, attribute path on the station). Missing
#: attributes (a station without that device) are skipped.
FIELDS = (
    ("cell_time", "clock.time"),
    ("time_scale", "clock.scale"),
    ("virtual", "clock.virtual"),
    ("mode", "pstat.mode"),
    ("state", "pstat.state"),
    ("duration", "pstat.duration"),
    ("elapsed", "pstat.elapsed"),
    ("current_sp", "pstat.current_sp"),
    ("ewe", "pstat.ewe"),
    ("current", "pstat.current"),
    ("charge", "pstat.charge"),
    ("capacity", "pstat.capacity"),
    ("half_cycle", "pstat.half_cycle"),
    ("direction", "pstat.direction"),
    ("force", "force.force"),
    ("source_on", "source.on_rbv"),
    ("kv", "source.kv"),
    ("ua", "source.ua"),
    ("filter", "source.filter"),
    ("shutter_open", "shutter.open_rbv"),
    ("sample_slot", "sample.slot"),
    ("diode", "diode.trans"),
    ("beam", "beam.config"),
    ("energy_kev", "beam.energy_kev"),
    ("wavelength_A", "beam.wavelength_A"),
    ("ct_exposure", "ct_det.cam.acquire_time"),
    ("ct_images", "ct_det.cam.num_exposures"),
    ("ct_objective", "ct_det.cam.objective"),
    ("saxs_exposure", "saxs.cam.acquire_time"),
    ("waxs_exposure", "waxs.cam.acquire_time"),
)


def _attr(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def read_station(station) -> dict:
    """Every value :func:`format_overview` shows, read now; ``None`` when unreadable.

    Motors come as ``positions``: ``{attribute path: (position, units)}``.
    """
    values: dict = {}
    for key, path in FIELDS:
        sig = _attr(station, path)
        if sig is None:
            continue
        try:
            values[key] = sig.get(use_monitor=False)
        except Exception:  # noqa: BLE001 - a disconnected PV shows as unknown
            values[key] = None
    positions = {}
    stage = getattr(station, "stage", None)
    for name in getattr(stage, "component_names", ()):
        motor = getattr(stage, name)
        try:
            positions[f"stage.{name}"] = (float(motor.position), str(motor.egu or ""))
        except Exception:  # noqa: BLE001
            positions[f"stage.{name}"] = (None, "")
    values["positions"] = positions
    return values


def _num(value, fmt: str, unit: str = "") -> str:
    if value is None:
        return "?"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return str(v)
    text = format(v, fmt)
    return f"{text} {unit}".rstrip() if unit else text


def _hours(seconds) -> str:
    if seconds is None:
        return "?"
    s = float(seconds)
    return f"{s / HOUR:.3f} h ({s:.1f} s)"


def _on_off(value, on: str, off: str) -> str:
    if value is None:
        return "?"
    return on if int(value) else off


def format_overview(title: str, values: dict) -> str:
    """The overview block of a station from :func:`read_station`'s values."""
    rows: list[tuple[str, str]] = []
    clock = _hours(values.get("cell_time"))
    if values.get("virtual"):
        clock += "  virtual time"
    elif values.get("time_scale") not in (None, 1, 1.0):
        clock += f"  time scale ×{_num(values.get('time_scale'), 'g')}"
    rows.append(("cell time", clock))

    mode, state = values.get("mode"), values.get("state")
    technique = f"{mode or '?'}  {state or '?'}"
    if state == "running" and values.get("elapsed") is not None:
        technique += f"  {_hours(values.get('elapsed'))}"
        if mode != "GCPL" and values.get("duration"):
            technique += f" of {float(values['duration']) / HOUR:.3f} h"
    if mode in ("CC", "GCPL") and values.get("current_sp") is not None:
        technique += f"  set {_num(values.get('current_sp'), '.4g', 'A')}"
    if values.get("half_cycle") is not None:
        technique += f"  half-cycle {int(values['half_cycle'])} {values.get('direction') or ''}"
    rows.append(("technique", technique.rstrip()))

    cell = (
        f"Ewe {_num(values.get('ewe'), '+.4f', 'V')}   I {_num(values.get('current'), '+.4g', 'A')}"
    )
    if "capacity" in values:
        cell += f"   capacity {_num(values.get('capacity'), '.4g', 'mAh')}"
    elif "charge" in values:
        cell += f"   charge {_num(values.get('charge'), '.4g', 'C')}"
    rows.append(("cell", cell))
    if "force" in values:
        rows.append(("force", _num(values.get("force"), ".2f", "N")))
    if "source_on" in values:
        rows.append(
            (
                "source",
                f"{_on_off(values.get('source_on'), 'ON', 'off')}  "
                f"{_num(values.get('kv'), '.1f', 'kV')}  {_num(values.get('ua'), '.1f', 'µA')}"
                f"  filter {values.get('filter') or '-'}",
            )
        )
    if "shutter_open" in values:
        rows.append(("shutter", _on_off(values.get("shutter_open"), "OPEN", "closed")))
    if "sample_slot" in values:
        rows.append(("sample", str(values.get("sample_slot") or "?")))
    if "beam" in values:
        rows.append(
            (
                "beam",
                f"{values.get('beam') or '?'}  {_num(values.get('energy_kev'), '.2f', 'keV')}"
                f"  {_num(values.get('wavelength_A'), '.4f', 'Å')}",
            )
        )
    if "diode" in values:
        rows.append(("diode", f"transmission {_num(values.get('diode'), '.4f')}"))
    positions = values.get("positions") or {}
    if positions:
        rows.append(
            (
                "positions",
                "  ".join(
                    f"{name.split('.')[-1]} {_num(v, '.4f', unit)}"
                    for name, (v, unit) in positions.items()
                ),
            )
        )
    if "ct_exposure" in values:
        rows.append(
            (
                "detector",
                f"ct_det {_num(values.get('ct_exposure'), 'g', 's')} × "
                f"{_num(values.get('ct_images'), '.0f')}  objective "
                f"{values.get('ct_objective') or '?'}",
            )
        )
    for det in ("saxs", "waxs"):
        if f"{det}_exposure" in values:
            rows.append(("detector", f"{det} {_num(values.get(f'{det}_exposure'), 'g', 's')}"))
    width = max(len(label) for label, _ in rows)
    lines = [title, "-" * max(len(title), 20)]
    lines += [f"  {label:<{width}}  {text}" for label, text in rows]
    return "\n".join(lines)


def overview(station, name: str = "") -> str:
    """The overview block of ``station``, read now (``name``: the variable it is in)."""
    kind = type(station).__name__.removesuffix("Station").upper() + " station"
    name = f"{name}: {kind}" if name else kind
    prefix = getattr(getattr(station, "clock", None), "prefix", "")
    if prefix:
        name += f"  [{prefix.rsplit('clock:', 1)[0]}]"
    return format_overview(name, read_station(station))


def wh(*stations) -> None:
    """Print the overview of each station (``wh(xct)``, ``wh(xct, saxs)``)."""
    print("\n\n".join(overview(s) for s in stations))
