"""What every technique's reduction shares, whatever the technique.

* :mod:`.documents`: :class:`RunCollector`, one run's documents as arrays and
  frame locations;
* :mod:`.frames`: the detector frames read from their HDF5 files while they are
  written (:class:`SWMRFile`, :class:`FrameReader`, :class:`FrameStack`,
  :class:`RowWindow`);
* :mod:`.live`: the queued worker and the base of the live reducers
  (:class:`QueuedReducer`, :class:`LiveReducer`);
* :mod:`.store`: Tiled helpers (:func:`json_safe`, :func:`replace_container`,
  :func:`stream_columns`, :func:`find_experiment_runs`, :func:`mark_complete`,
  :func:`is_complete`, :func:`server_may_recover`).

Nothing here imports the simulators or the acquisition code.
"""

from .documents import RunCollector
from .frames import FrameReader, FrameStack, RowWindow, SWMRFile, path_of_uri
from .live import LiveReducer, QueuedReducer
from .store import (
    FIGURES_KEY,
    find_experiment_runs,
    is_complete,
    json_safe,
    mark_complete,
    replace_container,
    run_problems,
    server_may_recover,
    stored_frames,
    stream_columns,
    write_array,
    write_figures,
    write_table,
)

__all__ = [
    "RunCollector",
    "SWMRFile",
    "FrameReader",
    "FrameStack",
    "RowWindow",
    "path_of_uri",
    "QueuedReducer",
    "LiveReducer",
    "json_safe",
    "replace_container",
    "stream_columns",
    "find_experiment_runs",
    "stored_frames",
    "run_problems",
    "server_may_recover",
    "is_complete",
    "mark_complete",
    "write_array",
    "write_figures",
    "FIGURES_KEY",
    "write_table",
]
