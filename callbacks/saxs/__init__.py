"""Reduction of the scanning operando SAXS/WAXS experiment (``technique="saxs_waxs"`` runs).

Same shape as every technique here: :mod:`.science` (the measurements, pure
functions), :mod:`.model` (parameters, a raster integrated, the results),
:mod:`.pipeline` (one raster, stage by stage), :mod:`.experiment` (across
rasters), :mod:`.store` (Tiled), :mod:`.figures`, :mod:`.live` and
:mod:`.offline`. The method, with its sources: ``docs/reduction-saxs.md``.
"""
