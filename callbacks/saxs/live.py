"""Live SAXS/WAXS reduction: a bluesky callback that integrates every frame as
its event comes and reduces each raster at its stop.

::

    reducer = SAXSLiveReducer(tiled_client, figures_dir="figures")
    RE.subscribe(reducer)
    RE(saxs_waxs_operando(station))
    reducer.close()                 # waits, writes the experiment's final figures

What happens where: ``docs/reduction-saxs.md``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core import FrameReader, LiveReducer, RunCollector
from .experiment import ExperimentState
from .model import (
    CELL_STREAM,
    REDUCED_STEPS,
    RUN_TECHNIQUE,
    AlignmentScan,
    CellRecord,
    RasterData,
    ReductionParameters,
    is_alignment,
    is_cycling,
)
from .science.integration import DetectorConfig, detector_configs, integrate_frame
from .store import update_points, write_experiment, write_run

__all__ = ["SAXSLiveReducer", "RasterCollector"]

logger = logging.getLogger(__name__)

_FINISH = "__finish_experiment__"


class RasterCollector(RunCollector):
    """The documents of one run → its integrated points, each event's frames
    integrated as it comes; at ``stop`` the :class:`RasterData` goes to
    ``on_raster`` (all in the worker thread)."""

    IMAGE_KEYS = {"saxs": "saxs_image", "waxs": "waxs_image"}

    def __init__(
        self,
        start: dict,
        *,
        npt: int,
        on_raster,
        warm_up=None,
        frame_timeout: float = 60.0,
        timings: dict | None = None,
    ):
        super().__init__(start)
        self.timings = timings if timings is not None else {}
        self.npt = int(npt)
        self.on_raster = on_raster
        self.warm_up = warm_up
        self.frame_timeout = frame_timeout
        self.descriptor_uid: str | None = None
        self.detectors: dict[str, DetectorConfig] = {}
        self.readers: dict[tuple[str, str], FrameReader] = {}
        self.curves: dict[str, list] = {"saxs": [], "waxs": []}
        self.q: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ documents
    def descriptor(self, doc):
        super().descriptor(doc)
        if doc.get("name") != "primary" or self.descriptor_uid is not None:
            return
        self.descriptor_uid = doc["uid"]
        configs = detector_configs(doc.get("configuration", {}))
        keys = doc.get("data_keys", {})
        self.detectors = {
            role: cfg for role, cfg in configs.items() if self.IMAGE_KEYS[role] in keys
        }
        for role, key in self.IMAGE_KEYS.items():
            if key in keys and role not in self.detectors:
                logger.warning(
                    "run %s: %s has no geometry in the descriptor's configuration: not reduced",
                    self.start_doc.get("uid"),
                    key,
                )
        if self.warm_up is not None:
            for cfg in self.detectors.values():
                self.warm_up(cfg)

    def event_frames(self, stream, doc, frames):
        if doc.get("descriptor") != self.descriptor_uid:
            return
        t0 = time.perf_counter()
        for role in self.detectors:
            path, dataset, index = frames[self.IMAGE_KEYS[role]]
            q, i, s = integrate_frame(
                self._reader(path, dataset)[index], self.detectors[role], self.npt
            )
            self.q[role] = q
            self.curves[role].append((i, s))
        self.timings["integrate_events"] = (
            self.timings.get("integrate_events", 0.0) + time.perf_counter() - t0
        )

    def stop(self, doc):
        super().stop(doc)
        for reader in self.readers.values():
            reader.close()
        self.readers.clear()
        if self.descriptor_uid is None or not self.columns.get("primary", {}).get("seq_num"):
            return
        self.on_raster(self.raster())

    # ------------------------------------------------------------------ helpers
    def _reader(self, path: str, dataset: str) -> FrameReader:
        reader = self.readers.get((path, dataset))
        if reader is None:
            reader = self.readers[(path, dataset)] = FrameReader(
                path, dataset, timeout=self.frame_timeout
            )
        return reader

    def raster(self) -> RasterData:
        def stack(role):
            if role not in self.detectors or not self.curves[role]:
                return None, None, None
            return (
                self.q[role],
                np.array([c[0] for c in self.curves[role]]),
                np.array([c[1] for c in self.curves[role]]),
            )

        curves = (*stack("saxs"), *stack("waxs"))
        config = (self.descriptors.get("primary") or {}).get("configuration", {})
        return RasterData.from_columns(
            self.start_doc, self.column_arrays("primary"), curves, config
        )


class SAXSLiveReducer(LiveReducer):
    """Live SAXS/WAXS reduction into Tiled.

    ``client``: a Tiled client (the root; results go to its ``reduced``
    container) or None to reduce without writing.  ``figures_dir``: where the
    figures go (``<figures_dir>/<experiment_id>/*.png``), None for none.
    ``npt``: q bins per curve.  ``parameters``: a
    :class:`~operando.callbacks.saxs.model.ReductionParameters` (its ``npt``
    is replaced by ``npt``).  ``pixel``: (row, col) of the waterfall point.
    """

    technique = RUN_TECHNIQUE
    steps = REDUCED_STEPS
    timing_keys = ("integrate_events", "raster", "tiled", "figures")

    def __init__(
        self,
        client,
        *,
        figures_dir=None,
        npt: int = 1000,
        parameters: ReductionParameters | None = None,
        pixel: tuple[int, int] | None = None,
        frame_timeout: float = 60.0,
    ):
        self.parameters = replace(parameters or ReductionParameters(), npt=int(npt))
        self.pixel = pixel
        self._drawn: dict[str, int] = {}
        self._exp_written: dict[str, int] = {}
        self._current: str | None = None
        self._warm: set = set()
        self._stored_sodc: dict[str, object] = {}
        super().__init__(client, figures_dir=figures_dir, frame_timeout=frame_timeout)

    # ------------------------------------------------------------------ public
    def finish_experiment(self, experiment_id: str | None = None) -> None:
        """Queue the end of an experiment (the current one by default): final
        experiment container and figures."""
        self(_FINISH, {"experiment_id": experiment_id})

    # ------------------------------------------------------------------ worker
    def _before_close(self) -> None:
        self.finish_experiment()

    def _handle(self, name: str, doc: dict) -> None:
        if name == _FINISH:
            self._finish(doc.get("experiment_id") or self._current)
            return
        if name == "start":
            self._on_start(doc)
        super()._handle(name, doc)

    def _collector(self, start: dict) -> RasterCollector:
        return RasterCollector(
            start,
            npt=self.parameters.npt,
            on_raster=self._raster_done,
            warm_up=self._warm_up,
            frame_timeout=self.frame_timeout,
            timings=self.timings,
        )

    def _new_experiment(self, eid: str) -> ExperimentState:
        return ExperimentState(eid, self.parameters, pixel=self.pixel, mode="live")

    def _factory(self, name, start):
        if is_alignment(start):
            return [RunCollector(start, on_stop=self._alignment_done)], []
        if is_cycling(start):
            return [RunCollector(start, on_stop=self._cycling_done)], []
        return super()._factory(name, start)

    def _cycling_done(self, col: RunCollector) -> None:
        record = CellRecord.from_columns(col.start_doc, col.column_arrays(CELL_STREAM))
        if record is not None:
            self._add_cell_record(record)

    def _add_cell_record(self, record: CellRecord, *, write: bool = True) -> None:
        """The cell record joins its experiment: the rasters whose SODC changed
        and (once there are rasters) the experiment container are rewritten."""
        exp = self._experiment(record.experiment_id)
        changed = exp.add_cell_record(record)
        if self.client is None or not write:
            return
        if exp.rasters():
            self._touch(exp)
        t0 = time.perf_counter()
        try:
            reduced = self._reduced_node()
            for uid in changed:
                if uid in self.written or uid in self._stored_sodc:
                    update_points(reduced, exp.results[uid], exp)
        except Exception as err:  # noqa: BLE001 - keep reducing when Tiled is down
            logger.exception("writing the cell record %s to Tiled failed", record.uid)
            self.errors.append(("tiled", repr(err)))
        finally:
            self.timings["tiled"] += time.perf_counter() - t0

    def _alignment_done(self, col: RunCollector) -> None:
        scan = AlignmentScan.from_columns(col.start_doc, col.column_arrays("primary"))
        if scan is not None:
            self._experiment(scan.experiment_id).add_alignment(scan)

    def _figures(self, exp: ExperimentState, directory: Path) -> list[str]:
        from .figures import experiment_figures

        return experiment_figures(exp.figure_data(), directory, title=exp.experiment_id)

    def _on_start(self, doc) -> None:
        if not self.accepts(doc):
            return
        eid = str(doc.get("experiment_id") or "")
        if self._current is not None and eid != self._current:
            self._finish(self._current)
        self._current = eid

    def _warm_up(self, cfg: DetectorConfig) -> None:
        import json

        key = (json.dumps(cfg.geometry, sort_keys=True), cfg.beamstop_radius)
        if key not in self._warm:
            cfg.warm_up(self.parameters.npt)
            self._warm.add(key)

    def _raster_done(self, raster: RasterData) -> None:
        t0 = time.perf_counter()
        exp = self._experiment(raster.experiment_id)
        res = exp.add(raster)
        self.timings["raster"] += time.perf_counter() - t0
        if res is None:
            return
        if raster.step == "operando":
            self._touch(exp)  # figures and reduced/<experiment_id>, once caught up
        if self.client is None:
            return
        if not self._write(raster.uid, write_run, res, exp):  # kept, written again later
            return
        t0 = time.perf_counter()
        try:
            reduced = self._reduced_node()
            for uid in exp.changed_sodc:
                update_points(reduced, exp.results[uid], exp)
        except Exception as err:  # noqa: BLE001 - keep reducing when Tiled is down
            logger.exception("writing the reduction of %s to Tiled failed", raster.uid)
            self.errors.append(("tiled", repr(err)))
        finally:
            self.timings["tiled"] += time.perf_counter() - t0

    def _draw(self, exp: ExperimentState) -> bool:
        drawn = super()._draw(exp)
        if drawn:
            self._drawn[exp.experiment_id] = exp.version
        return drawn

    # -- runs read back from Tiled ----------------------------------------------------
    def stored(self, start: dict) -> bool:
        return self.accepts(start) or is_alignment(start) or is_cycling(start)

    def _stored_cell_record(self, run, *, write: bool) -> None:
        from .offline import load_cell_record

        record = load_cell_record(run)
        if record is not None:
            self._add_cell_record(record, write=write)

    def _stored_alignment(self, run) -> None:
        from .offline import load_alignment

        scan = load_alignment(run)
        if scan is not None:
            self._experiment(scan.experiment_id).add_alignment(scan)

    def _reduce_stored(self, run) -> None:
        from .offline import load_run

        start = dict(run.metadata["start"])
        if is_alignment(start):
            self._stored_alignment(run)
            return
        if is_cycling(start):
            self._stored_cell_record(run, write=True)
            return
        self._on_start(start)
        raster = load_run(run, self.parameters.npt)
        if raster is None:
            logger.warning("run %s has no frames: skipped", start.get("uid"))
            return
        self._raster_done(raster)
        self._touch(self._experiment(raster.experiment_id))

    def _restore_stored(self, run, node) -> None:
        from .offline import load_run

        if is_alignment(run.metadata["start"]):
            self._stored_alignment(run)
            return
        if is_cycling(run.metadata["start"]):
            self._stored_cell_record(run, write=False)
            return
        raster = load_run(run, self.parameters.npt)
        if raster is None:
            return
        self._current = raster.experiment_id
        exp = self._experiment(raster.experiment_id)
        exp.add(raster)
        self._stored_sodc[raster.uid] = (node.metadata or {}).get("sodc_final")

    def settle(self, experiment_id: str) -> None:
        """Figures and ``reduced/<experiment_id>`` up to date; the ``points`` of
        runs written before the first discharge ended rewritten if still stale."""
        exp = self.experiments.get(experiment_id)
        if exp is None:
            return
        if self.client is not None:
            for uid, final in list(self._stored_sodc.items()):
                res = exp.results.get(uid)
                if res is not None and bool(final) != bool(exp.sodc_final):
                    update_points(self._reduced_node(), res, exp)
                self._stored_sodc.pop(uid)
        self._settle(exp)

    def _finish(self, eid: str | None) -> None:
        if eid is None or eid not in self.experiments:
            return
        exp = self.experiments[eid]
        if eid == self._current:
            self._current = None
        self._settle(exp)

    def _settle(self, exp: ExperimentState) -> None:
        eid = exp.experiment_id
        if not exp.rasters():
            return
        if self._drawn.get(eid) != exp.version:
            self._draw(exp)
        if self.client is not None and self._exp_written.get(eid) != exp.version:
            t0 = time.perf_counter()
            try:
                self._write_experiment(exp)
            except Exception as err:  # noqa: BLE001
                logger.exception("writing experiment %s to Tiled failed", eid)
                self.errors.append(("tiled", repr(err)))
            finally:
                self.timings["tiled"] += time.perf_counter() - t0

    def _write_experiment(self, exp: ExperimentState) -> None:
        write_experiment(self._reduced_node(), exp, figures=self.figures.get(exp.experiment_id, []))
        self._exp_written[exp.experiment_id] = exp.version
