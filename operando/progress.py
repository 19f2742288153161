"""Progress of a long experiment on a terminal: cycle k of n, step, cell time, ETA.

A bluesky callback. The bar counts cell time (hours) against the protocol's total;
tqdm's rate is then the time-scale actually achieved and its ETA the wall time
left. On a non-terminal (a log file, a queue server) it stays silent, unless
``OPERANDO_PROGRESS=1``; in a Jupyter kernel it is tqdm's notebook widget.

:func:`with_progress` wraps a plan function so that every call shows the bar
for the plan's duration (``bluesky.preprocessors.subs_wrapper``): the IPython
profile's ``xct_operando``, ``plating`` and ``saxs_waxs_operando``.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys

from event_model import DocumentRouter
from tqdm.auto import tqdm

from .constants import HOUR


class ExperimentProgress(DocumentRouter):
    def __init__(
        self,
        total_cell_hours: float,
        *,
        cycles: int | None = None,
        clock_key: str = "clock_time",
        file=None,
        disable: bool | None = None,
    ):
        super().__init__()
        self.cycles = cycles
        self.clock_key = clock_key
        self.t0: float | None = None
        file = file or sys.stderr
        if disable is None:
            disable = not _interactive(file)
        self.bar = tqdm(
            total=round(total_cell_hours, 3),
            unit="cell-h",
            file=file,
            disable=disable,
            dynamic_ncols=True,
            bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} "
            "cell-h [{elapsed}<{remaining}]",
        )

    def start(self, doc):
        self.bar.set_description(run_label(doc, self.cycles))

    def event(self, doc):
        t = doc["data"].get(self.clock_key)
        if t is None:
            return
        if self.t0 is None:
            self.t0 = t
        hours = round((t - self.t0) / HOUR, 3)
        if hours > self.bar.n:
            self.bar.update(min(hours, self.bar.total) - self.bar.n)

    def event_page(self, doc):
        for ev in _unpack(doc):
            self.event(ev)

    def close(self):
        self.bar.close()


def run_label(start: dict, cycles: int | None = None) -> str:
    """What a run is in the protocol: ``cycle 2/5 plating``, ``post-mortem scan3d``,
    ``ocv raster``, ``alignment`` (its step, its cycle when it has one, its plan
    when the step does not name it)."""
    step = str(start.get("step") or start.get("plan_name") or "")
    plan = str(start.get("plan_name") or "")
    cycle = start.get("cycle")
    if step == "postmortem":
        words = ["post-mortem"]
    elif isinstance(cycle, int) and not isinstance(cycle, bool) and cycle > 0:
        words = [f"cycle {cycle}{f'/{cycles}' if cycles else ''}", step]
    else:
        words = [step]
    if plan and plan != step and not step.startswith(plan) and not plan.startswith(step):
        words.append(plan)
    return " ".join(w for w in words if w)


def _interactive(file) -> bool:
    if os.environ.get("OPERANDO_PROGRESS", "").strip().lower() in ("1", "yes", "true", "on"):
        return True
    if "ipykernel" in sys.modules:  # Jupyter: tqdm.auto draws a widget
        return True
    return bool(hasattr(file, "isatty") and file.isatty())


#: Cell hours a plan's progress bar counts, from the plan's bound arguments.
PLAN_HOURS = {
    "xct_operando": lambda a: a["cycles"] * (a["ocv_duration"] + a["plating_duration"]) / HOUR,
    "plating": lambda a: a["duration"] / HOUR,
    "saxs_waxs_operando": lambda a: a["cycles"] / a["c_rate"],
}


def with_progress(plan_function, hours=None):
    """``plan_function`` showing an :class:`ExperimentProgress` while it runs.

    ``hours(arguments)`` gives the bar's total in cell hours from the call's
    bound arguments (defaults applied); by default ``PLAN_HOURS[name]``. The
    bar is made when the plan starts and closed when it ends, however it ends.
    """
    import bluesky.preprocessors as bpp

    hours = hours or PLAN_HOURS[plan_function.__name__]
    signature = inspect.signature(plan_function)

    @functools.wraps(plan_function)
    def plan(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        try:
            total = float(hours(bound.arguments))
        except (ArithmeticError, KeyError, TypeError, ValueError):
            total = 0.0
        if not total > 0:  # bad arguments: the plan's own checks say what is wrong
            return (yield from plan_function(*args, **kwargs))
        bar = ExperimentProgress(total, cycles=bound.arguments.get("cycles"))
        try:
            return (yield from bpp.subs_wrapper(plan_function(*args, **kwargs), bar))
        finally:
            bar.close()

    return plan


def _unpack(page):
    from event_model import unpack_event_page

    return unpack_event_page(page)
