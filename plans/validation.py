"""Argument checks run when a plan is called, before it is handed to the RunEngine.

Each check raises ``PlanArgumentError`` (a ``ValueError``) with a one-line message
that names the argument, the value and the allowed range with its unit. Ranges
come from the hardware where it publishes them (PV control limits, enum
strings, motor soft limits), else from the documented constants below;
``docs/plan-arguments.md`` lists every bound. ``install_argument_error_handler``
makes an IPython session show the error as that one line.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from ..constants import FARADAY, HOUR, M_LI, RHO_LI

DAY = 24 * HOUR


class PlanArgumentError(ValueError):
    """A plan argument is out of range; nothing has moved."""


def one_line(err: BaseException) -> str:
    """``PlanArgumentError: <message>`` on one line."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


# -- bounds ---------------------------------------------------------------------------
def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _show(value) -> str:
    """A value as the message shows it: numbers compact, anything else as its repr."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return repr(value)
    return _num(float(value)) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Bound:
    """An allowed range: ``low``/``high`` (None: unbounded), open or closed, a unit.

    ``integer`` requires an integer (an integral float such as ``5.0`` passes;
    ``2.5``, ``True`` and ``"5"`` do not).
    """

    low: float | None = None
    high: float | None = None
    unit: str = ""
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def __str__(self) -> str:
        lo = "-inf" if self.low is None else _num(self.low)
        hi = "inf" if self.high is None else _num(self.high)
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        text = f"{left}{lo}, {hi}{right}"
        if self.unit:
            text = f"{text} {self.unit}"
        return f"{text} (integer)" if self.integer else text

    def contains(self, v: float) -> bool:
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        if self.high is not None and (v > self.high or (self.high_open and v == self.high)):
            return False
        return True

    def intersect(self, other: Bound) -> Bound:
        """The tighter of two bounds on the same quantity (this one's unit)."""
        low, low_open = self.low, self.low_open
        if other.low is not None and (
            low is None or other.low > low or (other.low == low and other.low_open)
        ):
            low, low_open = other.low, other.low_open
        high, high_open = self.high, self.high_open
        if other.high is not None and (
            high is None or other.high < high or (other.high == high and other.high_open)
        ):
            high, high_open = other.high, other.high_open
        return replace(
            self,
            low=low,
            high=high,
            low_open=low_open,
            high_open=high_open,
            integer=self.integer or other.integer,
        )

    def check(self, name: str, value, *, note: str = ""):
        """``value`` as a float (an int when ``integer``), or PlanArgumentError."""
        unit = f" {self.unit}" if self.unit else ""
        kind = "an integer" if self.integer else "a number"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise PlanArgumentError(
                f"{name} must be {kind} in {self}, not {value!r} ({type(value).__name__})"
            )
        v = float(value)
        if not math.isfinite(v):
            raise PlanArgumentError(f"{name} = {_show(value)} is not finite; allowed: {self}")
        if self.integer:
            if not v.is_integer():
                raise PlanArgumentError(
                    f"{name} = {_show(value)} is not an integer; allowed: {self}"
                )
            v = int(value) if isinstance(value, numbers.Integral) else int(v)
        if not self.contains(v):
            raise PlanArgumentError(
                f"{name} = {_show(value)}{unit}{note} is outside the allowed range {self}"
            )
        return v


# -- documented ranges of the stations' PVs (docs/xct-pvs.md, docs/saxs-pvs.md), -----
# used when a PV does not publish its control limits (a device not connected)
ACQUIRE_TIME = Bound(1e-3, 3600.0, "s")  # det:cam:AcquireTime, clipped by the IOC
NUM_EXPOSURES = Bound(1, 100, integer=True)  # det:cam:NumExposures
SOURCE_KV = Bound(0.0, 70.0, "kV")  # src:kv
PSTAT_CURRENT = Bound(-0.8, 0.8, "A")  # pstat:current_sp (SP-150e range)
PSTAT_POTENTIAL = Bound(-10.0, 10.0, "V")  # pstat:e_min, pstat:e_max
PSTAT_DURATION = Bound(1e-3, 1e8, "s")  # pstat:duration
PSTAT_CYCLES = Bound(1, 100, integer=True)  # pstat:cycles (GCPL)
FILTERS = ("None", "LE1", "LE2", "LE3", "HE1")  # src:filter
OBJECTIVES = ("4X", "4X-wide", "20X")  # det:cam:Objective

# -- the experiments' scale (this project's choices; docs/plan-arguments.md) -----------
#: one protocol step (OCV, plating), in cell seconds
STEP_DURATION = Bound(1.0, 7 * DAY, "s")
#: a whole protocol (all cycles and the post-mortem scans)
EXPERIMENT_DURATION = Bound(0.0, 60 * DAY, "s", low_open=True)
#: one 3D scan (darks, flats, projections)
SCAN_DURATION = Bound(0.0, 2 * DAY, "s", low_open=True)
#: one SAXS/WAXS raster (exposures only)
RASTER_DURATION = Bound(0.0, DAY, "s", low_open=True)
CYCLES = Bound(1, 100, integer=True)
PROJECTIONS = Bound(2, 10_000, integer=True)
DARKS_FLATS = Bound(0, 100, integer=True)
#: the X-ray tube below 1 kV gives no usable flux
KV = Bound(1.0, None, "kV")
ROTATION_SPAN = Bound(0.0, 360.0, "deg", low_open=True)
#: flats: the cell moved out of the widest field of view (5.4 mm, 4X-wide objective)
FLAT_OFFSET_MIN_MM = 2.7
#: cell recording period, and the most records one step may take
SAMPLE_EVERY = Bound(0.1, 7 * DAY, "s")
MAX_CELL_SAMPLES = 100_000
#: plating current densities: the paper's are 2, 20 and 40 µA/cm² (160 µA/cm² in
#: its Faraday comparison); 1 mA/cm² is past the critical current density of
#: garnet/PEO hybrid electrolytes
CURRENT_DENSITY = Bound(0.1, 1000.0, "µA/cm²")
#: the Li electrode, inside the cell's ø6 mm bore
ELECTRODE_DIAMETER = Bound(0.5, 6.0, "mm")
#: the top Li layer (138 µm): plating cannot strip more Li than there is
LI_TOP_LAYER_UM = 138.0
SHORT_THRESHOLD = Bound(0.0, 1.0, "V", low_open=True)
#: galvanostatic cycling of the Li–S cell: C/1000 .. 2C
C_RATE = Bound(1e-3, 2.0, "1/h")
#: Li–In | Li6PS5Cl | S–C: a window inside [0, 4] V (the sulfide oxidises above)
LIS_WINDOW = Bound(0.0, 4.0, "V")
RASTER_AXIS = Bound(1, 200, integer=True)
MAX_RASTER_POINTS = 2000
ALIGN_POINTS = Bound(5, 1001, integer=True)
FRAMES = Bound(1, 100, integer=True)
OCV_RASTERS = Bound(0, 100, integer=True)
RUN_CYCLE = Bound(0, 10_000, integer=True)


def plated_um(j_uA_cm2: float, seconds: float) -> float:
    """Faraday: the Li thickness (µm) moved by ``j`` µA/cm² in ``seconds``."""
    return j_uA_cm2 * 1e-6 * seconds * M_LI / (FARADAY * RHO_LI) * 1e4


def duration_text(seconds: float) -> str:
    if seconds >= 2 * DAY:
        return f"{seconds / DAY:.1f} d"
    if seconds >= HOUR:
        return f"{seconds / HOUR:.2f} h"
    return f"{seconds:g} s"


# -- reading limits from the hardware --------------------------------------------------
def signal_bound(signal, fallback: Bound) -> Bound:
    """``fallback`` with the control limits ``signal`` publishes (when it does)."""
    try:
        low, high = signal.limits
        low, high = float(low), float(high)
    except Exception:  # not connected, or no limits: the documented range
        return fallback
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        return fallback
    return replace(fallback, low=low, high=high, low_open=False, high_open=False)


def enum_strings(signal, fallback: Sequence[str]) -> tuple[str, ...]:
    """The enum strings ``signal`` publishes, else ``fallback``."""
    try:
        strs = getattr(signal, "enum_strs", None) or signal.metadata.get("enum_strs")
    except Exception:
        strs = None
    return tuple(str(s) for s in strs) if strs else tuple(fallback)


# -- checks ------------------------------------------------------------------------------
def number(name: str, value, bound: Bound, *, note: str = ""):
    return bound.check(name, value, note=note)


def positive(name: str, value, unit: str = "") -> float:
    return Bound(0.0, None, unit, low_open=True).check(name, value)


def positive_int(name: str, value, *, minimum: int = 1) -> int:
    return Bound(minimum, None, integer=True).check(name, value)


def within(name: str, value, low: float, high: float, unit: str = "") -> float:
    return Bound(low, high, unit).check(name, value)


def optional(name: str, value, bound: Bound):
    return None if value is None else bound.check(name, value)


def choice(name: str, value, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise PlanArgumentError(
            f"{name} = {value!r} is not one of {', '.join(repr(a) for a in allowed)}"
        )
    return value


def flag(name: str, value) -> bool:
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise PlanArgumentError(f"{name} must be True or False, not {value!r}")
    return bool(value)


def text(name: str, value, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        what = "a non-empty string" + (" or None" if optional else "")
        raise PlanArgumentError(f"{name} must be {what}, not {value!r}")
    return value


def mapping(name: str, value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise PlanArgumentError(f"{name} must be a dict or None, not {value!r}")
    return dict(value)


def pair(name: str, value, unit: str = "", *, increasing: bool = False) -> tuple[float, float]:
    """Two finite numbers (lo, hi); with ``increasing``, lo < hi."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise PlanArgumentError(f"{name} must be a pair (low, high) in {unit}, not {value!r}")
    items = list(value)
    if len(items) != 2:
        raise PlanArgumentError(f"{name} must be a pair (low, high) in {unit}, not {value!r}")
    any_number = Bound(unit=unit)
    lo = any_number.check(f"{name}[0]", items[0])
    hi = any_number.check(f"{name}[1]", items[1])
    if increasing and not lo < hi:
        raise PlanArgumentError(f"{name} = {value!r} {unit}: low must be below high")
    return lo, hi


def grid_shape(name: str, value, *, axis: Bound = RASTER_AXIS, max_points: int = MAX_RASTER_POINTS):
    """A (ny, nx) grid of integers, each in ``axis``, at most ``max_points`` in all."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise PlanArgumentError(f"{name} must be (ny, nx), two integers, not {value!r}")
    items = list(value)
    if len(items) != 2:
        raise PlanArgumentError(f"{name} must be (ny, nx), two integers, not {value!r}")
    ny = axis.check(f"{name} ny", items[0])
    nx = axis.check(f"{name} nx", items[1])
    if ny * nx > max_points:
        raise PlanArgumentError(
            f"{name} = {value!r}: {ny * nx} points is more than the allowed {max_points}"
        )
    return ny, nx


def budget(name: str, seconds: float, bound: Bound, detail: str = "") -> float:
    """An estimated duration inside ``bound`` (cell seconds)."""
    if not (math.isfinite(seconds) and bound.contains(seconds)):
        limit = duration_text(bound.high) if bound.high is not None else "inf"
        extra = f" ({detail})" if detail else ""
        raise PlanArgumentError(
            f"{name} would take {duration_text(seconds)}{extra}, more than the allowed {limit}"
        )
    return seconds


def motor_positions(motor, positions: Iterable[float], name: str | None = None) -> None:
    """All positions finite and inside the motor's soft limits (when it has any)."""
    label = name or motor.name
    unit = getattr(motor, "egu", "") or ""
    values = [Bound(unit=unit).check(f"{label} position", p) for p in positions]
    low, high = motor.limits
    if low == high == 0 or not values:
        return
    for p in (min(values), max(values)):
        if not low <= p <= high:
            raise PlanArgumentError(
                f"{label} position {p:g} {unit} is outside the soft limits "
                f"[{low:g}, {high:g}] {unit}"
            )


def signal_range(signal, value: float, name: str, unit: str = "") -> float:
    """``value`` inside the control limits the IOC publishes for ``signal``."""
    return number(name, value, signal_bound(signal, Bound(unit=unit)))


def checked_plan(function):
    """Mark ``function`` as a plan: it checks its arguments when called, then returns
    the plan's generator. ``bluesky.utils.is_plan`` (and so the queue server) knows
    it by the ``_is_plan_`` attribute, as it knows ``bluesky.utils.plan``'s."""
    function._is_plan_ = True
    return function


def keyword_defaults(function) -> dict:
    """A function's (a plan's) keyword-only arguments and their defaults."""
    params = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


@contextlib.contextmanager
def context(label: str):
    """Prefix the messages raised inside with ``label: ``."""
    try:
        yield
    except PlanArgumentError as err:
        raise PlanArgumentError(f"{label}: {err}") from None


# -- the IPython session --------------------------------------------------------------
def install_argument_error_handler(ipython=None):
    """Show ``PlanArgumentError`` as one line in IPython (no traceback).

    ``ipython`` defaults to the running shell (``get_ipython()``); returns it, or
    None outside IPython (a queue server's worker loading the same startup files).
    """
    if ipython is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return None
        ipython = get_ipython()
    if ipython is None:
        return None

    def show(shell, etype, value, tb, tb_offset=None):
        print(one_line(value))  # IPython prints tracebacks on stdout too

    ipython.set_custom_exc((PlanArgumentError,), show)
    return ipython
