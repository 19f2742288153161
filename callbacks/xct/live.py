"""Live XCT reduction: a bluesky callback that reduces each run at its stop.

::

    reducer = XCTLiveReducer(tiled_client, figures_dir="figures")
    RE.subscribe(reducer)
    RE(xct_operando(station))
    reducer.close()          # waits for the queue, final figures

Reconstructions send their slabs to a dask ``LocalCluster`` (started by
``spawn``): a script that makes the reducer must guard its body with
``if __name__ == "__main__":``. What happens where: ``docs/reduction-xct.md``;
the same reducer in a worker process fed by Tiled: ``docs/workers.md``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from ..core import LiveReducer, RunCollector, server_may_recover
from .experiment import ExperimentState
from .model import FRAME_KEY, REDUCED_STEPS, RUN_TECHNIQUE, ReductionParameters, RunData
from .pipeline import reduce_run
from .store import write_experiment, write_run

__all__ = ["XCTLiveReducer", "run_data_from_collector"]

logger = logging.getLogger(__name__)


def run_data_from_collector(col: RunCollector, *, frame_timeout: float = 60.0) -> RunData:
    """A :class:`RunData` over a finished run's documents; frames stay in their files."""
    columns = {stream: col.column_arrays(stream) for stream in col.columns}
    frames = {}
    for stream in col.frame_locations:
        stack = col.frames(stream, FRAME_KEY, timeout=frame_timeout)
        if stack is not None:
            frames[stream] = stack
    configuration = {stream: col.configuration(stream) for stream in col.descriptors}
    return RunData(
        start=col.start_doc,
        stop=col.stop_doc or {},
        columns=columns,
        frames=frames,
        configuration=configuration,
    )


def _close_frames(run: RunData) -> None:
    for stack in run.frames.values():
        close = getattr(stack, "close", None)
        if close is not None:
            close()


#: where, under an experiment's figures, the arrays they are drawn from are kept
ARRAYS_SUBDIR = ".arrays"


class XCTLiveReducer(LiveReducer):
    """Live XCT reduction into Tiled.

    ``client``: a Tiled client (the root; results go to its ``reduced``
    container) or None to reduce without writing. ``figures_dir``: where the
    figures go (``<figures_dir>/<experiment_id>/*.png``), None for none.
    ``reconstruct``: reconstruct the 3D scans (default). ``parameters``: a
    :class:`~operando.callbacks.xct.model.ReductionParameters`.
    """

    technique = RUN_TECHNIQUE
    steps = REDUCED_STEPS
    timing_keys = ("reduce", "tiled", "figures")

    def __init__(
        self,
        client,
        *,
        figures_dir=None,
        reconstruct: bool = True,
        parameters: ReductionParameters | None = None,
        frame_timeout: float = 60.0,
    ):
        self.parameters = replace(
            parameters or ReductionParameters(), reconstruct=bool(reconstruct)
        )
        self.results: dict[str, object] = {}
        super().__init__(client, figures_dir=figures_dir, frame_timeout=frame_timeout)

    # ------------------------------------------------------------------ worker
    def _collector(self, start: dict) -> RunCollector:
        return RunCollector(start, on_stop=self._run_done)

    def _new_experiment(self, eid: str) -> ExperimentState:
        # what only the figures read is kept beside them, not in memory
        figures = self.figures_directory(eid)
        arrays = None if figures is None else figures / ARRAYS_SUBDIR
        return ExperimentState(eid, self.parameters, mode="live", arrays_dir=arrays)

    def _figures(self, exp: ExperimentState, directory: Path) -> list[str]:
        from .figures import experiment_figures

        return experiment_figures(exp.figure_data(), directory)

    def _run_done(self, col: RunCollector) -> None:
        self._reduce(run_data_from_collector(col, frame_timeout=self.frame_timeout))

    def _reduce(self, run: RunData) -> None:
        """Reduce one run, add it to its experiment, draw, write: the same for a
        run from live documents and one read back from Tiled."""
        uid = run.uid
        t0 = time.perf_counter()
        try:
            res = reduce_run(run, self.parameters)
        except Exception as err:  # noqa: BLE001
            if server_may_recover(err):
                raise  # frames read back from Tiled: the run is read again
            logger.exception("reducing XCT run %s failed", uid)
            self.errors.append(("reduce", f"{uid}: {err!r}"))
            return
        finally:
            _close_frames(run)
            self.timings["reduce"] += time.perf_counter() - t0
        if res is None:
            return
        self.results[uid] = res
        exp = self._experiment(run.experiment_id)
        volume = getattr(res, "volume", None)
        exp.add(res)  # drops the volume from the state; ``volume`` still holds it
        self._touch(exp)  # figures and reduced/<experiment_id>, once caught up
        if self.client is not None:
            # kept (the volume too) to be written again if Tiled refuses it now
            extra = {} if volume is None else {"volume": volume}
            self._write(uid, write_run, res, exp, **extra)
        del volume

    # -- runs read back from Tiled ----------------------------------------------------
    def _reduce_stored(self, run) -> None:
        from .offline import load_run

        self._reduce(load_run(run))

    def _restore_stored(self, run, node) -> None:
        from .store import read_run

        res = read_run(node, run)
        self.results[res.uid] = res
        self._experiment(res.experiment_id).add(res)

    def settle(self, experiment_id: str) -> None:
        exp = self.experiments.get(experiment_id)
        if exp is None or not exp.results:
            return
        self._draw(exp)
        if self.client is not None:
            t0 = time.perf_counter()
            try:
                write_experiment(
                    self._reduced_node(), exp, figures=self.figures.get(experiment_id, [])
                )
            except Exception as err:  # noqa: BLE001 - keep reducing when Tiled is down
                logger.exception("writing experiment %s to Tiled failed", experiment_id)
                self.errors.append(("tiled", f"{experiment_id}: {err!r}"))
            finally:
                self.timings["tiled"] += time.perf_counter() - t0
