"""Reduction of the operando X-ray CT experiment (``technique="xct"`` runs).

Same shape as every technique here: :mod:`.science` (the measurements, pure
functions), :mod:`.model` (parameters, a run as arrays, the results),
:mod:`.pipeline` (one run, stage by stage), :mod:`.experiment` (across runs),
:mod:`.store` (Tiled), :mod:`.figures`, :mod:`.live` and :mod:`.offline`.
The method, with its sources: ``docs/reduction-xct.md``.

Importing this package registers the technique ``xct`` (``operando.techniques``);
the modules behind it are imported when first used.
"""

from operando.techniques import Technique, lazy, register

from .model import RUN_TECHNIQUE

TECHNIQUE = register(
    Technique(
        name="xct",
        run_technique=RUN_TECHNIQUE,
        live_reducer=lazy(f"{__name__}.live", "XCTLiveReducer"),
        reduce_offline=lazy(f"{__name__}.offline", "reduce_experiment"),
        figures=lazy(f"{__name__}.figures", "experiment_figures"),
        description="operando X-ray CT of a pressurized Li | hybrid solid electrolyte | Li cell",
    )
)
