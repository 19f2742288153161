"""Reduction of the scanning operando SAXS/WAXS experiment (``technique="saxs_waxs"`` runs).

Same shape as every technique here: :mod:`.science` (the measurements, pure
functions), :mod:`.model` (parameters, a raster integrated, the results),
:mod:`.pipeline` (one raster, stage by stage), :mod:`.experiment` (across
rasters), :mod:`.store` (Tiled), :mod:`.figures`, :mod:`.live` and
:mod:`.offline`. The method, with its sources: ``docs/reduction-saxs.md``.

Importing this package registers the technique ``saxs`` (``operando.techniques``);
the modules behind it are imported when first used.
"""

from operando.techniques import Technique, lazy, register

from .model import RUN_TECHNIQUE

TECHNIQUE = register(
    Technique(
        name="saxs",
        run_technique=RUN_TECHNIQUE,
        live_reducer=lazy(f"{__name__}.live", "SAXSLiveReducer"),
        reduce_offline=lazy(f"{__name__}.offline", "reduce_experiment"),
        figures=lazy(f"{__name__}.figures", "experiment_figures"),
        description="scanning operando SAXS/WAXS of an all-solid-state Li-S cell",
    )
)
