"""RunEngine with Tiled writing and live feedback (table, plots)."""

import bluesky.plan_stubs as bps  # noqa: F401
import bluesky.plans as bp  # noqa: F401
import ophyd

from operando.profile import connect_tiled, make_user_run_engine

ophyd.set_cl("caproto")
tiled = connect_tiled()
RE = make_user_run_engine(tiled)
bec = RE.bec
