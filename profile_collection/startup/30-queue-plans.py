"""Plans for the queue server (and the session): the station plans with arguments a queue checks.

xct_scan3d, xct_radiogram, xct_plating, xct_postmortem, xct_protocol; saxs_align,
saxs_background, saxs_raster, saxs_protocol; count and mv of the stations' devices
by name; the SAXS/WAXS devices as saxs_stage, saxs_det, waxs_det, ... (docs/queue.md).
"""

from operando.plans.queue import queue_namespace

globals().update(queue_namespace(xct=xct, saxs=saxs, catalog=tiled))  # noqa: F821 (from 00-, 10-, 11-)
