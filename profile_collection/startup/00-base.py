"""RunEngine with Tiled writing, persistent metadata, a table and live plots."""

import bluesky.plan_stubs as bps  # noqa: F401
import bluesky.plans as bp  # noqa: F401
import ophyd

from operando.memory import configure_malloc
from operando.plans.validation import install_argument_error_handler
from operando.profile import connect_tiled, make_user_run_engine, start_experiment

configure_malloc()  # before the session's threads start (see operando/memory.py)
ophyd.set_cl("caproto")
install_argument_error_handler()  # a rejected plan argument prints one line, no traceback
tiled = connect_tiled()
RE = make_user_run_engine(tiled)  # RE.md persists in DATA_DIR/session-md (scan_id counts on)
bec = RE.bec
live_views = RE.live_views


def new_experiment(experiment_id=None):
    """A new session experiment id (default: timestamped), for runs not given one."""
    return start_experiment(RE, experiment_id)


print(f"experiment_id {RE.md['experiment_id']!r}, next scan_id {RE.md.get('scan_id', 0) + 1}")
