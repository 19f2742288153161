"""A motor record that moves in simulated (cell) time.

``SimMotor`` serves one EPICS motor record (``pvproperty(record='motor')``) so
that ``ophyd.EpicsMotor`` works unchanged::

    {P}{name}       .VAL   setpoint; a put outside [LLM, HLM] is rejected (LVIO = 1)
                           and the motor does not move; put with completion
                           completes when the move is done
    {P}{name}.RBV          readback (also .DRBV, .RRBV)
    {P}{name}.DMOV/.MOVN   done moving / moving
    {P}{name}.VELO/.ACCL   velocity (EGU per cell s) / time to velocity (cell s)
    {P}{name}.STOP         put 1: stop where it is (VAL := RBV)
    {P}{name}.HLM/.LLM     soft limits, mirrored as the ctrl limits of .VAL
                           (what ``EpicsMotor.limits`` reports)
    {P}{name}.EGU          engineering units (also the units of .VAL and .RBV)
    {P}{name}.SET          'Set': a .VAL put redefines the position, no motion
    {P}{name}.HOMF/.HOMR   put 1: move to the home position 0

Moves follow a trapezoidal profile in cell time; the wall duration is the cell
duration divided by the clock's scale. A new .VAL put during a move retargets
from the current position.
"""

from __future__ import annotations

import asyncio
import math

from caproto.server import PVGroup, pvproperty
from caproto.server.server import PvpropertyDouble

from .clock import SimClock, find_clock

__all__ = ["SimMotor", "trapezoid"]


def trapezoid(distance: float, velocity: float, accel_time: float):
    """Trapezoidal move profile.

    Parameters
    ----------
    distance : float
        Signed distance to travel.
    velocity : float
        Cruise speed (> 0).
    accel_time : float
        Time to reach the cruise speed (>= 0).

    Returns
    -------
    duration, position : float, callable
        Total time and ``position(t)`` (displacement from the start, signed),
        ``position(t >= duration) == distance``.
    """
    d = abs(distance)
    sign = math.copysign(1.0, distance)
    if d == 0.0:
        return 0.0, lambda t: 0.0
    if accel_time <= 0:
        duration = d / velocity
        return duration, lambda t: sign * min(velocity * max(t, 0.0), d)
    a = velocity / accel_time
    if d >= velocity * accel_time:  # reaches cruise speed
        ta, v = accel_time, velocity
    else:  # triangular profile
        ta = math.sqrt(d / a)
        v = a * ta
    cruise = (d - a * ta * ta) / v
    duration = 2 * ta + cruise

    def position(t: float) -> float:
        if t <= 0:
            return 0.0
        if t < ta:
            return sign * 0.5 * a * t * t
        if t < ta + cruise:
            return sign * (0.5 * a * ta * ta + v * (t - ta))
        if t < duration:
            tr = duration - t
            return sign * (d - 0.5 * a * tr * tr)
        return distance

    return duration, position


class MotorValue(PvpropertyDouble):
    """The .VAL of :class:`SimMotor`: flags a soft-limit violation in .LVIO.

    The ctrl limits of .VAL (= HLM/LLM) make caproto reject a put outside them
    before the putter runs; this records it in .LVIO like a motor record does.
    """

    async def verify_value(self, value):
        lo, hi = self.lower_ctrl_limit, self.upper_ctrl_limit
        violation = lo != hi and not lo <= value <= hi
        fields = self.field_inst
        if fields is not None and fields.limit_violation.value != int(violation):
            await fields.limit_violation.write(int(violation))
        return await super().verify_value(value)


class SimMotor(PVGroup):
    """One motor record moving in cell time (see the module docstring).

    Parameters
    ----------
    velocity : float
        Default .VELO in EGU per cell second.
    acceleration : float
        Default .ACCL, cell seconds to reach the velocity.
    limits : (float, float)
        Soft limits (LLM, HLM) in EGU.
    egu : str
        Engineering units.
    precision : int
        Display precision.
    position : float
        Initial position.
    resolution : float
        .MRES (EGU per step; only for .RRBV).
    simclock : SimClock, optional
        The clock; by default the nearest parent's ``simclock``.
    """

    tick = 0.05  # wall s between readback updates during a move

    motor = pvproperty(
        value=0.0,
        name="",
        record="motor",
        dtype=MotorValue,
        precision=3,
        doc="Motor record (cell-time motion)",
    )

    def __init__(
        self,
        *args,
        velocity: float = 1.0,
        acceleration: float = 0.2,
        limits: tuple[float, float] = (-100.0, 100.0),
        egu: str = "mm",
        precision: int = 3,
        position: float = 0.0,
        resolution: float = 1e-4,
        simclock: SimClock | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.simclock = simclock or find_clock(self.parent) or SimClock()
        self.defaults = dict(
            velocity=float(velocity),
            acceleration=float(acceleration),
            limits=(float(limits[0]), float(limits[1])),
            egu=str(egu),
            precision=int(precision),
            position=float(position),
            resolution=float(resolution),
        )
        self._target = float(position)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop_requested = False

    # -- public helpers for the station -------------------------------------
    @property
    def position(self) -> float:
        """Current readback (.RBV) in EGU."""
        return float(self.motor.field_inst.user_readback_value.value)

    @property
    def moving(self) -> bool:
        return not self._idle.is_set()

    # -- record -------------------------------------------------------------
    @motor.startup
    async def motor(self, instance, async_lib):
        fields = instance.field_inst
        d = self.defaults
        lo, hi = d["limits"]
        await fields.engineering_units.write(d["egu"])
        await fields.velocity.write(d["velocity"])
        await fields.max_velocity.write(d["velocity"] * 10)
        await fields.seconds_to_velocity.write(d["acceleration"])
        await fields.motor_step_size.write(d["resolution"])
        await fields.display_precision.write(d["precision"])
        await fields.user_low_limit.write(lo)
        await fields.user_high_limit.write(hi)
        await fields.dial_low_limit.write(lo)
        await fields.dial_high_limit.write(hi)
        await instance.write_metadata(
            lower_ctrl_limit=lo, upper_ctrl_limit=hi, units=d["egu"], precision=d["precision"]
        )
        await fields.user_readback_value.write_metadata(units=d["egu"], precision=d["precision"])
        await instance.write(d["position"], verify_value=False)
        await self._write_readback(d["position"])
        await fields.done_moving_to_value.write(1)
        await fields.motor_is_moving.write(0)

        # Field putters (instance attributes by design in caproto): keep the
        # ctrl limits of .VAL equal to HLM/LLM *before* the new limit is
        # published, so a client re-reading .VAL's ctrl vars on the HLM monitor
        # (ophyd.EpicsMotor does) sees the new limits.
        fields.user_high_limit.putter = self._put_high_limit
        fields.user_low_limit.putter = self._put_low_limit
        fields.dial_high_limit.putter = self._put_high_limit
        fields.dial_low_limit.putter = self._put_low_limit
        fields.engineering_units.putter = self._put_egu
        fields.stop.putter = self._put_stop
        fields.home_forward.putter = self._put_home
        fields.home_reverse.putter = self._put_home

        await self._motion_loop(instance)

    @motor.putter
    async def motor(self, instance, value):
        fields = instance.field_inst
        if fields.set_use_switch.value == "Set":
            # Redefine the current position; no motion.
            self._target = float(value)
            await self._write_readback(value)
            return value
        self._target = float(value)
        self._stop_requested = False
        self._idle.clear()
        self._wake.set()
        # Publish the new setpoint now, then hold the put completion until the
        # move is done (a motor record's put callback does the same).
        await instance.write(value, verify_value=False)
        await self._idle.wait()
        return instance.value

    async def _put_high_limit(self, instance, value):
        await self._set_limits(high=float(value))
        return value

    async def _put_low_limit(self, instance, value):
        await self._set_limits(low=float(value))
        return value

    async def _set_limits(self, *, low=None, high=None):
        """Mirror a new soft limit into .VAL's ctrl limits and the other of
        user/dial limit (user == dial here: no offset, DIR = Pos)."""
        fields = self.motor.field_inst
        lo = fields.user_low_limit.value if low is None else low
        hi = fields.user_high_limit.value if high is None else high
        await self.motor.write_metadata(lower_ctrl_limit=lo, upper_ctrl_limit=hi)
        pairs = []
        if low is not None:
            pairs += [(fields.user_low_limit, low), (fields.dial_low_limit, low)]
        if high is not None:
            pairs += [(fields.user_high_limit, high), (fields.dial_high_limit, high)]
        for fld, val in pairs:
            if fld.value != val:
                await fld.write(val, verify_value=False)

    async def _put_egu(self, instance, value):
        await self.motor.write_metadata(units=value)
        await self.motor.field_inst.user_readback_value.write_metadata(units=value)
        return value

    async def _put_stop(self, instance, value):
        if value:
            self._stop_requested = True
            self._wake.set()
        return 0

    async def _put_home(self, instance, value):
        """HOMF/HOMR: the simulated home switch is at 0 (a move there)."""
        if value:
            self._target = 0.0
            self._stop_requested = False
            self._idle.clear()
            self._wake.set()
            await self.motor.write(0.0, verify_value=False)
        return 0

    async def _write_readback(self, pos: float):
        fields = self.motor.field_inst
        res = fields.motor_step_size.value or 1.0
        await fields.user_readback_value.write(pos)
        await fields.dial_readback_value.write(pos)
        await fields.raw_readback_value.write(int(round(pos / res)))

    async def _motion_loop(self, instance):
        fields = instance.field_inst
        while True:
            await self._wake.wait()
            self._wake.clear()
            await fields.done_moving_to_value.write(0)
            await fields.motor_is_moving.write(1)
            await self._move(instance)
            await fields.motor_is_moving.write(0)
            await fields.done_moving_to_value.write(1)
            if not self._wake.is_set():  # no retarget raced in
                self._idle.set()
                from .station import request_autosave

                request_autosave(self)

    async def _move(self, instance):
        """Move to ``self._target`` in cell time; retarget on a new put, stop on STOP.

        Scaled time: the readback is published every ``tick`` s wall on the way.
        Virtual time: the move is one operation on the clock, from its start to
        its end (the clock jumps there unless a retarget or STOP comes first).
        """
        fields = instance.field_inst
        clock = self.simclock
        while True:
            start = self.position
            target = self._target
            velocity = fields.velocity.value
            if not velocity or velocity <= 0:
                velocity = self.defaults["velocity"]
            accel = max(fields.seconds_to_velocity.value or 0.0, 0.0)
            duration, profile = trapezoid(target - start, abs(velocity), accel)
            t0 = clock.now()
            retarget = False
            while True:
                if self._stop_requested:
                    self._stop_requested = False
                    self._wake.clear()
                    pos = start + profile(min(clock.now() - t0, duration))
                    await self._write_readback(pos)
                    self._target = pos
                    await instance.write(pos, verify_value=False)
                    return
                t_end = t0 + duration
                if clock.now() >= t_end:  # absolute times: no rounding in t - t0
                    await self._write_readback(target)
                    return
                await self._write_readback(start + profile(clock.now() - t0))
                until = t_end
                if not clock.virtual:
                    until = min(until, clock.now() + self.tick * clock.scale)
                if not await clock.sleep_until_or(until, self._wake):
                    continue
                self._wake.clear()
                if not self._stop_requested:
                    # retarget from where the motor is now
                    await self._write_readback(start + profile(min(clock.now() - t0, duration)))
                    retarget = True
                    break
            if not retarget:
                return
