"""Reduction of the operando X-ray CT experiment (``technique="xct"`` runs).

Same shape as every technique here: :mod:`.science` (the measurements, pure
functions), :mod:`.model` (parameters, a run as arrays, the results),
:mod:`.pipeline` (one run, stage by stage), :mod:`.experiment` (across runs),
:mod:`.store` (Tiled), :mod:`.figures`, :mod:`.live` and :mod:`.offline`.
The method, with its sources: ``docs/reduction-xct.md``.
"""
