"""Bluesky/Ophyd integration for operando battery experiments.

Subpackages: ``operando.devices`` (Ophyd classes), ``operando.plans`` (Bluesky
plans), ``operando.callbacks`` (reduction and Tiled writing), ``operando.iocs``
(caproto simulators with their physics models).
"""

__version__ = "0.1.0"
