"""The XCT measurements as pure functions on arrays (numpy, h5py datasets, Tiled
array clients): nothing here knows of bluesky, EPICS or the simulators.

One module per job: :mod:`.projections` (dark/flat, −ln, the 180° fold, rings),
:mod:`.center` (rotation axis), :mod:`.reconstruction`, :mod:`.layers`,
:mod:`.electrode`, :mod:`.particles`, :mod:`.radiography` (one radiogram) and
:mod:`.cell` (electrochemistry and mechanics of the cell). The functions of the
first six are also importable from here. Conventions and method:
``docs/reduction-xct.md``.
"""

from . import cell, radiography
from .center import find_center, find_center_projections
from .electrode import electrode_diameter, electrode_geometry, electrode_measurement
from .layers import find_layers, layer_profile
from .particles import match_particles, segment_particles
from .projections import MIN_TRANSMISSION, fold_to_180, minus_log, normalize, suppress_stripes
from .reconstruction import reconstruct, reconstruct_sinogram

__all__ = [
    "cell",
    "radiography",
    "MIN_TRANSMISSION",
    "normalize",
    "minus_log",
    "fold_to_180",
    "suppress_stripes",
    "find_center",
    "find_center_projections",
    "reconstruct",
    "reconstruct_sinogram",
    "layer_profile",
    "find_layers",
    "electrode_geometry",
    "electrode_diameter",
    "electrode_measurement",
    "segment_particles",
    "match_particles",
]
