"""The potentiostat simulator shared by the stations (OCV and constant current).

A station subclasses :class:`Potentiostat` to reach its cell model (hooks
:meth:`~Potentiostat.cell_time`, :meth:`~Potentiostat.cell_voltage`,
:meth:`~Potentiostat.advance_cell`, :meth:`~Potentiostat.limit_time`) or to add
techniques (the SAXS station adds GCPL). Next: ``xct.py``, ``saxs.py``.
"""

from __future__ import annotations

import asyncio
import math

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from .pvs import ClippedDouble, keyed_normal

TECHNIQUE_STATES = ("idle", "running", "done", "limit", "aborted")

__all__ = ["TECHNIQUE_STATES", "Potentiostat"]


class Potentiostat(PVGroup):
    """BioLogic SP-150e-like potentiostat: OCV and constant-current (CC) techniques.

    PVs
    ---
    mode (enum OCV/CC), current_sp (A, clipped to +-0.8), duration (s > 0),
    e_min/e_max (V, clipped to +-10; stop a CC technique when Ewe leaves them),
    start (put 1: start; completes once the technique runs; a running technique
    is aborted first), stop (put 1: abort; the cell goes to OCV), wait (put 1
    with completion: completes when the running technique ends, at once if none
    runs), state (idle/running/done/limit/aborted), ewe (V), i (A), charge (C),
    elapsed (s).

    The cell model (``station.cell``) is advanced with the applied current every
    ``tick`` s wall (scaled time) or at every advance of the clock (virtual
    time), and exactly to every technique event (its duration, an exact
    potential limit from :meth:`limit_time`), so a technique's end never
    depends on the loop tick.

    Hooks for a station's cell model: :meth:`cell_time`, :meth:`cell_voltage`,
    :meth:`advance_cell`, :meth:`limit_time`; for more techniques:
    :meth:`technique_current`, :meth:`begin_technique`, :meth:`handle_event`,
    :meth:`publish_technique`, :meth:`technique_truth`.
    """

    tick = 0.05  # wall s
    noise_v = 50e-6  # V rms on Ewe
    rng_stream = 1

    mode = pvproperty(
        value="OCV",
        enum_strings=("OCV", "CC"),
        dtype=ChannelType.ENUM,
        doc="Technique to run: OCV or CC",
    )
    current_sp = pvproperty(
        value=0.0,
        dtype=ClippedDouble,
        lower_ctrl_limit=-0.8,
        upper_ctrl_limit=0.8,
        units="A",
        precision=9,
        doc="CC current (A); clipped to the ctrl limits +-0.8 A",
    )
    duration = pvproperty(
        value=3600.0,
        dtype=ClippedDouble,
        lower_ctrl_limit=1e-3,
        upper_ctrl_limit=1e8,
        units="s",
        precision=3,
        doc="Technique duration in cell s (> 0)",
    )
    e_min = pvproperty(
        value=-10.0,
        dtype=ClippedDouble,
        lower_ctrl_limit=-10.0,
        upper_ctrl_limit=10.0,
        units="V",
        precision=4,
        doc="Lower Ewe limit of the CC technique (V)",
    )
    e_max = pvproperty(
        value=10.0,
        dtype=ClippedDouble,
        lower_ctrl_limit=-10.0,
        upper_ctrl_limit=10.0,
        units="V",
        precision=4,
        doc="Upper Ewe limit of the CC technique (V)",
    )
    start_cmd = pvproperty(
        name="start", value=0, doc="Put 1: start the technique (completes once it runs)"
    )
    wait_cmd = pvproperty(
        name="wait", value=0, doc="Put 1 with completion: completes when the technique ends"
    )
    stop_cmd = pvproperty(
        name="stop", value=0, doc="Put 1: abort the running technique; cell to OCV"
    )
    state = pvproperty(
        value="idle",
        enum_strings=TECHNIQUE_STATES,
        dtype=ChannelType.ENUM,
        read_only=True,
        doc="Technique state",
    )
    ewe = pvproperty(
        value=0.0, read_only=True, units="V", precision=6, doc="Working electrode potential (V)"
    )
    i = pvproperty(value=0.0, read_only=True, units="A", precision=9, doc="Current (A)")
    charge = pvproperty(
        value=0.0,
        read_only=True,
        units="C",
        precision=9,
        doc="Charge passed in the current technique (C)",
    )
    elapsed = pvproperty(
        value=0.0, read_only=True, units="s", precision=3, doc="Technique elapsed time (cell s)"
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.applied_current = 0.0
        self.technique: dict | None = None
        self._wake = asyncio.Event()
        self._ended = asyncio.Event()
        self._ended.set()
        self._lock = asyncio.Lock()

    @property
    def station(self):
        return self.parent

    @property
    def cell(self):
        return self.parent.cell

    # -- autosave ------------------------------------------------------------------
    def save_state(self) -> dict:
        """The running technique and its progress (autosave)."""
        return {
            "technique": dict(self.technique) if self.technique is not None else None,
            "applied_current": self.applied_current,
            "short_logged": getattr(self, "_short_logged", False),
        }

    def restore_state(self, state: dict) -> None:
        self.technique = state.get("technique")
        self.applied_current = float(state.get("applied_current", 0.0))
        if hasattr(self, "_short_logged"):
            self._short_logged = bool(state.get("short_logged"))
        if self.technique is not None:
            self._ended.clear()
        else:
            self._ended.set()

    def _autosave(self) -> None:
        from .station import request_autosave

        request_autosave(self)

    # -- cell-model hooks --------------------------------------------------------
    def cell_time(self) -> float:
        """The cell model's time (s)."""
        return float(self.cell.time)

    def cell_voltage(self, current_a: float) -> float:
        """Noise-free Ewe (V) of the cell model while ``current_a`` flows."""
        return float(self.cell.voltage(current_a))

    def advance_cell(self, t: float) -> None:
        """Advance the cell model to cell time ``t`` at the applied current."""
        if t > self.cell_time():
            self.cell.advance(t, self.applied_current)

    def limit_time(self, current_a: float, e_min: float, e_max: float) -> float:
        """Cell seconds of ``current_a`` from now until Ewe leaves [e_min, e_max]
        exactly (``inf``: none known; the noisy per-tick check still applies to CC)."""
        return math.inf

    # -- technique hooks ---------------------------------------------------------
    def technique_current(self, mode: str) -> float:
        """The current a technique starts with."""
        return float(self.current_sp.value) if mode == "CC" else 0.0

    def begin_technique(self, now: float) -> dict:
        """The state of a technique started at ``now`` (cell advanced to it)."""
        mode = self.mode.value
        current = self.technique_current(mode)
        tech = dict(
            mode=mode,
            current=current,
            t0=now,
            seg_t0=now,
            q0=0.0,
            t_end=now + float(self.duration.value),
            e_min=float(self.e_min.value),
            e_max=float(self.e_max.value),
        )
        tech["t_limit"] = self._limit_at(tech, now)
        return tech

    def _limit_at(self, tech: dict, now: float) -> float:
        if tech["current"] == 0.0:
            return math.inf
        return now + self.limit_time(tech["current"], tech["e_min"], tech["e_max"])

    def next_event(self) -> tuple[float, str]:
        """(cell time, kind) of the running technique's next event."""
        tech = self.technique
        if tech["t_limit"] < tech["t_end"]:
            return tech["t_limit"], "limit"
        return tech["t_end"], "duration"

    async def handle_event(self, kind: str, t: float) -> None:
        """React to an event at cell time ``t`` (the cell is advanced to it)."""
        await self._finish("done" if kind == "duration" else "limit", t)

    def technique_charge(self, t: float) -> float:
        tech = self.technique
        return tech["q0"] + tech["current"] * (t - tech["seg_t0"])

    async def publish_technique(self, t: float) -> None:
        """Readbacks of the running technique at cell time ``t``."""
        tech = self.technique
        await self.elapsed.write(t - tech["t0"])
        await self.charge.write(self.technique_charge(t))
        await self.i.write(tech["current"])

    def technique_truth(self, tech: dict) -> dict:
        """Extra ground truth for technique_start/technique_end records."""
        return {"truth": self.station.cell.truth()}

    # -- engine ------------------------------------------------------------------
    async def _finish(self, reason: str, t_end: float) -> None:
        """End the running technique at ``t_end`` (cell already advanced to it)."""
        tech = self.technique
        if tech is None:
            return
        elapsed = max(t_end - tech["t0"], 0.0)
        charge = self.technique_charge(t_end)
        await self.publish_technique(t_end)
        self.technique = None
        self.applied_current = 0.0
        self._ended.set()
        await self.elapsed.write(elapsed)
        await self.charge.write(charge)
        await self.i.write(0.0)
        await self.technique_ended(tech, reason, t_end)
        await self.state.write(reason)
        self._autosave()
        self.station.truth.write(
            {
                "event": "technique_end",
                "t": t_end,
                "reason": reason,
                "mode": tech["mode"],
                "current_a": tech["current"],
                "elapsed_s": elapsed,
                "charge_c": charge,
                "ewe_v": self.ewe.value,
                **self.technique_truth(tech),
            }
        )

    async def technique_ended(self, tech: dict, reason: str, t_end: float) -> None:
        """Hook: extra readbacks when a technique ends (before ``state`` changes)."""

    async def update(self) -> float:
        """Advance the cell to now through every technique event, refresh readbacks.

        Returns the cell time it advanced to. Everything that needs the cell at
        "now" calls this, so a technique never runs past its events.
        """
        async with self._lock:
            return await self._update()

    async def _update(self) -> float:
        """:meth:`update`, the lock held (one change of the technique at a time)."""
        now = self.station.simclock.now()
        while self.technique is not None:
            t_event, kind = self.next_event()
            if t_event > now:
                break
            self.advance_cell(t_event)
            await self.handle_event(kind, t_event)
        self.advance_cell(now)
        ewe = self.cell_voltage(self.applied_current) + keyed_normal(
            self.station.seed, self.rng_stream, now, self.noise_v
        )
        await self.ewe.write(ewe)
        tech = self.technique
        if tech is not None:
            await self.publish_technique(now)
            if tech["mode"] == "CC" and not tech["e_min"] <= ewe <= tech["e_max"]:
                await self._finish("limit", now)
        return now

    def next_event_time(self) -> float:
        """Cell time of the running technique's next event (``inf``: none)."""
        return self.next_event()[0] if self.technique is not None else math.inf

    async def _step(self, t: float) -> None:
        await self.update()

    @ewe.startup
    async def ewe(self, instance, async_lib):
        clock = self.station.simclock
        if clock.virtual:
            # Virtual time: the clock stops at every technique event and the
            # cell catches up at every advance; no loop of our own.
            clock.add_event_source(self.next_event_time)
            clock.add_step_hook(self._step)
            await self.update()
            return
        while True:
            await self.update()
            wall = self.tick
            if self.technique is not None:
                wall = min(wall, clock.wall_delay(self.next_event()[0] - clock.now()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(wall, 1e-3))
            except TimeoutError:
                pass
            self._wake.clear()

    @current_sp.putter
    async def current_sp(self, instance, value):
        await self.setpoint_changed(float(value))
        return value

    async def setpoint_changed(self, current_a: float) -> None:
        """Hook: ``current_sp`` was put (value already clipped)."""

    @start_cmd.putter
    async def start_cmd(self, instance, value):
        if not value:
            return 0
        async with self._lock:
            await self._start()
        self._wake.set()
        return 0

    async def _start(self) -> None:
        now = await self._update()
        if self.technique is not None:
            await self._finish("aborted", now)
        tech = self.begin_technique(now)
        self.technique = tech
        self._ended.clear()
        self.applied_current = tech["current"]
        await self.elapsed.write(0.0)
        await self.charge.write(0.0)
        await self.i.write(tech["current"])
        await self.publish_technique(now)
        await self.state.write("running")
        self._autosave()
        self.station.truth.write(
            {
                "event": "technique_start",
                "t": now,
                "mode": tech["mode"],
                "current_a": tech["current"],
                "duration_s": tech["t_end"] - now,
                "e_min": tech["e_min"],
                "e_max": tech["e_max"],
                **{k: tech[k] for k in ("cycles",) if k in tech},
                **self.technique_truth(tech),
            }
        )

    @wait_cmd.putter
    async def wait_cmd(self, instance, value):
        """Wait until the running technique ends (an operation: in virtual time
        the clock advances to the technique's next event while this waits)."""
        clock = self.station.simclock
        while self.technique is not None:
            if await clock.sleep_until_or(self.next_event_time(), self._ended):
                break
            await self.update()  # the event is due: handle it now
        return 0

    @stop_cmd.putter
    async def stop_cmd(self, instance, value):
        if value and self.technique is not None:
            async with self._lock:
                now = await self._update()
                if self.technique is not None:
                    await self._finish("aborted", now)
            self._wake.set()
        return 0
