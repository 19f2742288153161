"""Progress of a long experiment on a terminal: cycle k of n, step, cell time, ETA.

A bluesky callback. The bar counts cell time (hours) against the protocol's total;
tqdm's rate is then the time-scale actually achieved and its ETA the wall time
left. On a non-terminal (a log file, a queue server) it stays silent.
"""

from __future__ import annotations

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
            disable = not (hasattr(file, "isatty") and file.isatty())
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
        cycle = doc.get("cycle")
        of = f"/{self.cycles}" if self.cycles else ""
        label = f"cycle {cycle}{of}" if cycle else "post-mortem"
        self.bar.set_description(f"{label} {doc.get('step', doc.get('plan_name', ''))}")

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


def _unpack(page):
    from event_model import unpack_event_page

    return unpack_event_page(page)
