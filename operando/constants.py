"""Numbers that more than one part of the project needs, defined once.

Units are in the names or the comments. The reduction (``operando.callbacks``)
takes them from here, never from the simulators (``operando.iocs``).
"""

from __future__ import annotations

import math

__all__ = [
    "HOUR",
    "FARADAY",
    "M_LI",
    "RHO_LI",
    "LI_ELECTRODE_DIAMETER_MM",
    "LI_ELECTRODE_AREA_CM2",
    "SPRING_K_N_PER_MM",
    "FRAME_DATASET",
    "S_SPECIFIC_CAPACITY_MAH_G",
]

#: seconds in an hour (cell time is in seconds)
HOUR = 3600.0

#: Faraday constant, C/mol
FARADAY = 96485.33212
#: molar mass of Li, g/mol
M_LI = 6.94
#: density of Li, g/cm³
RHO_LI = 0.534

#: the XCT cell's nominal Li electrode (ø4 mm): the current density and the
#: homogeneous (Faraday) plated thickness refer to it
LI_ELECTRODE_DIAMETER_MM = 4.0
#: its area, cm²
LI_ELECTRODE_AREA_CM2 = math.pi * (0.1 * LI_ELECTRODE_DIAMETER_MM) ** 2 / 4.0
#: the XCT cell's spring (force change per stack height change), N/mm
SPRING_K_N_PER_MM = 72.78

#: the dataset holding the detector frames in each HDF5 file
FRAME_DATASET = "/entry/data/data"

#: theoretical specific capacity of sulfur (S + 2 Li → Li2S), mAh/g S: the
#: SAXS/WAXS cell's 1C current is its sulfur mass times this over one hour
S_SPECIFIC_CAPACITY_MAH_G = 1672.0
