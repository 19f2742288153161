"""The SAXS/WAXS measurements as pure functions on arrays, usable from a notebook
without bluesky: nothing here knows of EPICS or the simulators.

One module per job: :mod:`.integration` (frames → I(q)), :mod:`.maps` (window
integrals, normalization, maps, raster grids), :mod:`.peaks` (fits, Scherrer
sizes, instrumental width) and :mod:`.electrochemistry` (capacity, state of
discharge). Everything is also importable from here. Method:
``docs/reduction-saxs.md``.
"""

from .electrochemistry import net_capacity, sodc
from .integration import (
    DetectorConfig,
    beamstop_mask,
    detector_configs,
    integrate,
    integrate_frame,
    integrator,
    reduce_frames,
)
from .maps import (
    LI2S_WINDOW,
    SAXS_WINDOW,
    grid_indices,
    li2s_map,
    normalize_to_reference,
    raster_to_map,
    reference_average,
    saxs_map,
    subtract_background,
    window_sum,
)
from .peaks import (
    LI2S_A_NM,
    LI2S_Q111,
    LI2S_SATELLITES,
    LPSC_A_NM,
    PeakFit,
    fit_peak,
    instrument_fwhm_from_reference,
    li2s_fit,
    li2s_scherrer_size,
    lpsc_reflections,
    peak_position,
    scherrer_size,
)

__all__ = [
    "integrator",
    "integrate",
    "beamstop_mask",
    "DetectorConfig",
    "detector_configs",
    "integrate_frame",
    "reduce_frames",
    "LI2S_WINDOW",
    "SAXS_WINDOW",
    "window_sum",
    "subtract_background",
    "reference_average",
    "normalize_to_reference",
    "raster_to_map",
    "li2s_map",
    "saxs_map",
    "grid_indices",
    "LI2S_A_NM",
    "LI2S_Q111",
    "LI2S_SATELLITES",
    "LPSC_A_NM",
    "PeakFit",
    "fit_peak",
    "peak_position",
    "scherrer_size",
    "li2s_fit",
    "li2s_scherrer_size",
    "lpsc_reflections",
    "instrument_fwhm_from_reference",
    "net_capacity",
    "sodc",
]
