"""The XCT station's devices, named as typed: clock, pstat, force, source, ct_det, stage."""

from operando.profile import xct_station
from operando.session import synchronize_clock

xct = xct_station()
globals().update(xct.devices())
synchronize_clock(RE, xct.clock)  # noqa: F821 (RE from 00-base): virtual time follows RE

from operando.suspenders import install_suspenders  # noqa: E402

xct_suspensions = install_suspenders(RE, xct)  # noqa: F821 (source fault, IOC away: suspend)
