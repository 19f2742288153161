"""The XCT station's devices, named as typed: clock, pstat, force, source, ct_det, stage."""
from operando.profile import xct_station

xct = xct_station()
globals().update(xct.devices())
