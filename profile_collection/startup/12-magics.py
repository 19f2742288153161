"""bluesky's magics (%wa, %mov, %movr, %ct), %wh and wh(): a station's overview."""

from IPython import get_ipython

from operando.overview import wh  # noqa: F401  wh(xct), wh(saxs)
from operando.profile import expose_station, make_magics_run_engine, register_magics

expose_station(saxs)  # noqa: F821 (11-saxs-devices): %wa finds saxs.stage.x
register_magics(get_ipython(), make_magics_run_engine(xct.clock, saxs.clock))  # noqa: F821
