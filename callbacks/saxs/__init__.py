"""Reduction of the scanning operando SAXS/WAXS experiment (``technique="saxs_waxs"`` runs).

Same shape as every technique here: :mod:`.science` (the measurements, pure
functions), :mod:`.model` (parameters, a raster integrated, the results),
:mod:`.pipeline` (one raster, stage by stage), :mod:`.experiment` (across
rasters), :mod:`.store` (Tiled), :mod:`.figures`, :mod:`.live` and
:mod:`.offline`. The method, with its sources: ``docs/reduction-saxs.md``.

Importing this package registers the technique ``saxs`` (``operando.techniques``);
the modules behind it are imported when first used.
"""

from operando.techniques import Technique, register

from .model import RUN_TECHNIQUE


def live_reducer(client, *, figures_dir=None, **options):
    """:class:`~.live.SAXSLiveReducer` (options: ``npt``, ``parameters``, ``pixel``, ...)."""
    from .live import SAXSLiveReducer

    return SAXSLiveReducer(client, figures_dir=figures_dir, **options)


def reduce_offline(client, uid_or_experiment_id: str, *, figures_dir=None, **options) -> dict:
    """:func:`~.offline.reduce_experiment`."""
    from .offline import reduce_experiment

    return reduce_experiment(client, uid_or_experiment_id, figures_dir=figures_dir, **options)


def draw_figures(figure_data: dict, directory, **options) -> list[str]:
    """:func:`~.figures.experiment_figures`."""
    from .figures import experiment_figures

    return experiment_figures(figure_data, directory, **options)


TECHNIQUE = register(
    Technique(
        name="saxs",
        run_technique=RUN_TECHNIQUE,
        live_reducer=live_reducer,
        reduce_offline=reduce_offline,
        figures=draw_figures,
        description="scanning operando SAXS/WAXS of an all-solid-state Li-S cell",
    )
)
