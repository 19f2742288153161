"""Plans of the operando experiments."""

from operando.devices.common import Technique  # noqa: F401
from operando.plans.saxs import align, background, raster, saxs_waxs_operando  # noqa: F401
from operando.plans.xct import plating, postmortem, radiogram, scan3d, xct_operando  # noqa: F401
