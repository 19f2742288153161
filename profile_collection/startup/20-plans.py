"""Plans of the operando experiments; the long ones show the experiment's progress bar."""

from operando.devices.common import Technique  # noqa: F401
from operando.plans import saxs as _saxs
from operando.plans import xct as _xct
from operando.plans.saxs import align, background, raster  # noqa: F401
from operando.plans.xct import postmortem, radiogram, scan3d  # noqa: F401
from operando.progress import with_progress

plating = with_progress(_xct.plating)
xct_operando = with_progress(_xct.xct_operando)
saxs_waxs_operando = with_progress(_saxs.saxs_waxs_operando)
