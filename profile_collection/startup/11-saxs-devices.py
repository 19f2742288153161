"""The SAXS/WAXS station, as one object: saxs.stage, saxs.pstat, saxs.saxs, saxs.waxs, ..."""

from operando.profile import saxs_station
from operando.session import synchronize_clock

saxs = saxs_station()
synchronize_clock(RE, saxs.clock)  # noqa: F821 (RE from 00-base): virtual time follows RE

from operando.suspenders import install_suspenders  # noqa: E402

saxs_suspensions = install_suspenders(RE, saxs)  # noqa: F821 (beam dump, IOC away: suspend)
