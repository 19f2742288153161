"""Live plots fit for each plan of the operando experiments, as one RunEngine callback.

:class:`LiveViews` looks at each run's start document and draws what the plan
is about, with bluesky's own plotting callbacks where they fit:

- ``plating`` and ``scan3d`` (the ``cell`` stream): force and Ewe against cell
  time (two ``LivePlot``), and the latest radiogram or projection, flat-field
  corrected when the run took darks and flats (frames read from the
  detector's HDF5 file, SWMR, at most every ``redraw_every`` s of wall time);
- ``raster``: the transmission map (``diode_trans``) filling in point by point
  (``LiveGrid``, snaking followed);
- ``align``: the transmission profile against the scanned motor (``LivePlot``).

With ``directory`` each view is also saved there as PNG, with a JSON summary
beside it (points drawn, image statistics), every ``save_every`` s of wall
time and at the run's end: ``<scan_id>-<plan>-<view>-<uid8>.png``. Headless
(matplotlib's Agg backend) that is the only way to see them: the views draw on
bare figures (no pyplot, nothing left open); on a screen, through pyplot, the
latest figure of each kind stays open. A view that fails logs the error: it
never stops a run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from bluesky.callbacks.mpl_plotting import LiveGrid, LivePlot, QtAwareCallback

logger = logging.getLogger(__name__)

CELL_STREAM = "cell"
NON_INTERACTIVE = {"agg", "pdf", "ps", "svg", "cairo", "template", "pgf"}


def headless() -> bool:
    """True when matplotlib draws into files only (Agg and the like)."""
    import matplotlib

    return matplotlib.get_backend().lower() in NON_INTERACTIVE


def new_figure(nrows: int = 1, *, screen: bool, figsize=None, sharex=False):
    """A figure and its axes: through pyplot on a screen (it shows, it updates),
    else a bare ``Figure`` (no GUI, any thread, nothing to close)."""
    if screen:
        import matplotlib.pyplot as plt

        return plt.subplots(nrows, 1, figsize=figsize, sharex=sharex)
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, 1, sharex=sharex)


class StreamFilter:
    """Forwards a run's documents to ``callback``, events of ``stream`` only."""

    def __init__(self, callback, stream: str):
        self.callback, self.stream = callback, stream
        self._descriptors: set[str] = set()
        self.events = 0

    def __call__(self, name, doc):
        if name == "descriptor":
            if doc.get("name") != self.stream:
                return
            self._descriptors.add(doc["uid"])
        elif name == "event":
            if doc["descriptor"] not in self._descriptors:
                return
            self.events += 1
        elif name == "event_page":
            from event_model import unpack_event_page

            for event in unpack_event_page(doc):
                self("event", event)
            return
        elif name not in ("start", "stop"):
            return
        self.callback(name, doc)


class View:
    """One figure of a run: the callbacks drawing it, and what it shows (``summary``)."""

    kind = "view"

    def __init__(self, fig, callbacks):
        self.fig = fig
        self.callbacks = list(callbacks)

    def __call__(self, name, doc):
        for cb in self.callbacks:
            cb(name, doc)

    def refresh(self) -> None:
        """Bring the figure up to date before it is saved (views drawing lazily)."""

    def summary(self) -> dict:
        return {}


class CellView(View):
    """Force and Ewe against cell time, from the ``cell`` stream."""

    kind = "cell"

    def __init__(self, start, *, screen=False, fields=("force_force", "pstat_ewe"), x="clock_time"):
        fields = [f for f in fields if f]
        fig, axes = new_figure(
            len(fields), screen=screen, sharex=True, figsize=(6.4, 2.4 * len(fields))
        )
        axes = np.atleast_1d(axes)
        self.plots = [
            LivePlot(field, x=x, ax=ax, marker=".", use_teleporter=False)
            for field, ax in zip(fields, axes, strict=True)
        ]
        self.filters = [StreamFilter(p, CELL_STREAM) for p in self.plots]
        self.axes, self.x = axes, x
        fig.suptitle(_title(start, "cell"))
        super().__init__(fig, self.filters)

    def __call__(self, name, doc):
        super().__call__(name, doc)
        if name == "start":  # LivePlot labels its axes when the run starts
            for ax in self.axes[:-1]:
                ax.set_xlabel("")
            self.axes[-1].set_xlabel(f"{self.x} (cell time, s)")

    def summary(self) -> dict:
        return {
            "stream": CELL_STREAM,
            "fields": [p.y for p in self.plots],
            "points": [len(getattr(p, "y_data", [])) for p in self.plots],
            "x_range": _range(getattr(self.plots[0], "x_data", [])),
        }


class ProfileView(View):
    """A detector value against the scanned motor (the alignment scans)."""

    kind = "profile"

    def __init__(self, start, *, screen=False, y="diode_trans"):
        motor = (start.get("motors") or ["seq_num"])[0]
        fig, ax = new_figure(screen=screen)
        self.plot = LivePlot(y, x=motor, ax=ax, marker=".", use_teleporter=False)
        ax.set_title(_title(start, start.get("direction", "")))
        super().__init__(fig, [StreamFilter(self.plot, "primary")])

    def summary(self) -> dict:
        return {"field": self.plot.y, "points": len(getattr(self.plot, "y_data", []))}


class MapView(View):
    """The raster's transmission map, point by point (``LiveGrid``)."""

    kind = "map"

    def __init__(self, start, *, screen=False, field="diode_trans"):
        shape = tuple(int(n) for n in start["shape"])
        (y0, y1), (x0, x1) = start["extents"]
        dy = (y1 - y0) / max(shape[0] - 1, 1) / 2
        dx = (x1 - x0) / max(shape[1] - 1, 1) / 2
        ylabel, xlabel = (start.get("motors") or ["y", "x"])[:2]
        fig, ax = new_figure(screen=screen)
        self.field = field
        self.grid = LiveGrid(
            shape,
            field,
            ax=ax,
            xlabel=xlabel,
            ylabel=ylabel,
            extent=(min(x0, x1) - dx, max(x0, x1) + dx, min(y0, y1) - dy, max(y0, y1) + dy),
            aspect="auto",
            title=_title(start, field),
            use_teleporter=False,
        )
        self.filter = StreamFilter(self.grid, "primary")
        super().__init__(fig, [self.filter])

    def summary(self) -> dict:
        data = getattr(self.grid, "_Idata", None)
        filled = int(np.isfinite(data).sum()) if data is not None else 0
        return {
            "field": self.field,
            "shape": list(self.grid.raster_shape) if data is not None else None,
            "points": filled,
            "range": _range(data[np.isfinite(data)]) if filled else None,
        }


class ImageView(QtAwareCallback):
    """The latest frame of a detector, flat-field corrected when darks and flats exist.

    The frame is not in the event (it is in the detector's HDF5 file): the
    view keeps the location of the latest ``stream_datum`` of each stream and
    reads the frame only when it draws.
    """

    kind = "image"

    def __init__(self, start, *, data_key: str, screen=False, stream="primary", timeout=10.0):
        super().__init__(use_teleporter=False)
        self.data_key, self.stream, self.timeout = data_key, stream, float(timeout)
        self.fig, self.ax = new_figure(screen=screen)
        self.title = _title(start, "latest radiogram" if start.get("step") == "plating" else "")
        self._resources: dict[str, tuple[str, str]] = {}
        self._streams: dict[str, str] = {}
        self._latest: dict[str, tuple[str, str, int]] = {}
        self._cell_time = None
        self._drawn = None
        self.frames = 0
        self.image = None

    # documents
    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc.get("name", "primary")

    def stream_resource(self, doc):
        from .callbacks.core.frames import path_of_uri

        if doc.get("data_key") == self.data_key:
            params = doc.get("parameters") or {}
            self._resources[doc["uid"]] = (path_of_uri(doc["uri"]), params.get("dataset"))

    def stream_datum(self, doc):
        where = self._resources.get(doc["stream_resource"])
        if where is None:
            return
        stream = self._streams.get(doc.get("descriptor"), "primary")
        index = int(doc["indices"]["stop"]) - 1
        self._latest[stream] = (*where, index)
        if stream == self.stream:
            self.frames += 1

    def event(self, doc):
        if self._streams.get(doc["descriptor"]) == self.stream:
            self._cell_time = doc["data"].get("clock_time", self._cell_time)

    # drawing
    def _read(self, stream):
        from .callbacks.core.frames import FrameReader

        where = self._latest.get(stream)
        if where is None:
            return None
        path, dataset, index = where
        reader = FrameReader(path, dataset or "/entry/data/data", timeout=self.timeout)
        try:
            return np.asarray(reader[index], dtype=np.float32)
        finally:
            reader.close()

    def refresh(self) -> None:
        where = self._latest.get(self.stream)
        if where is None or where == self._drawn:
            return
        frame = self._read(self.stream)
        label = "counts"
        dark, flat = self._read("dark"), self._read("flat")
        if dark is not None and flat is not None and dark.shape == frame.shape == flat.shape:
            span = flat - dark
            frame = np.where(span > 0, (frame - dark) / np.where(span > 0, span, 1), np.nan)
            label = "I / I0 (flat-field corrected)"
        self.image = frame
        self.ax.cla()
        finite = frame[np.isfinite(frame)]
        lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0, 1)
        im = self.ax.imshow(frame, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
        if not hasattr(self, "_colorbar"):
            self._colorbar = self.fig.colorbar(im, ax=self.ax)
        else:
            self._colorbar.update_normal(im)
        self._colorbar.set_label(label)
        when = f"  cell time {self._cell_time / 3600:.3f} h" if self._cell_time is not None else ""
        self.ax.set_title(f"{self.title}\nframe {self.frames}{when}")
        self.fig.canvas.draw_idle()
        self._drawn = where

    def summary(self) -> dict:
        if self.image is None:
            return {"frames": self.frames}
        finite = self.image[np.isfinite(self.image)]
        return {
            "data_key": self.data_key,
            "frames": self.frames,
            "shape": list(self.image.shape),
            "std": float(finite.std()) if finite.size else 0.0,
            "range": _range(finite),
        }


def _range(values):
    values = np.asarray(values, dtype=float)
    return [float(np.min(values)), float(np.max(values))] if values.size else None


def _title(start: dict, what: str) -> str:
    from .progress import run_label

    scan = start.get("scan_id")
    head = f"scan {scan}: " if scan is not None else ""
    return f"{head}{run_label(start)} {what}".strip()


def views_for(start: dict, *, screen: bool = False) -> list:
    """The views fit for the run that ``start`` opens (none for runs not known)."""
    plan = start.get("plan_name")
    views = []
    if plan in ("plating", "scan3d"):
        views.append(CellView(start, screen=screen))
        det = (start.get("detectors") or ["ct_det"])[0]
        views.append(ImageView(start, data_key=f"{det}_image", screen=screen))
    elif plan == "raster" and len(start.get("shape") or ()) == 2:
        views.append(MapView(start, screen=screen))
    elif plan == "align":
        views.append(ProfileView(start, screen=screen))
    return views


class LiveViews(QtAwareCallback):
    """A RunEngine callback drawing :func:`views_for` each run (see the module doc).

    ``directory``: where the PNGs (and their JSON summaries) go; None draws on
    screen only. ``screen``: draw through pyplot (default: unless matplotlib is
    headless); else on bare figures, saved only. With a Qt backend the
    documents reach the views on the GUI thread (bluesky's teleporter).
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        save_every: float = 5.0,
        redraw_every: float = 2.0,
        screen: bool | None = None,
    ):
        super().__init__(use_teleporter=None if screen is not False else False)
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.save_every = float(save_every)
        self.redraw_every = float(redraw_every)
        self.screen = (not headless()) if screen is None else bool(screen)
        self.views: list = []
        self.start_doc: dict | None = None
        self.saved: list[Path] = []
        self.errors: list[str] = []
        self._open: dict[str, object] = {}  # kind -> figure left open (on a screen)
        self._last_save = self._last_draw = 0.0

    def _safely(self, name, doc):
        try:
            self._route(name, doc)
        except Exception as exc:  # noqa: BLE001 - a plot never stops a run
            logger.exception("live view failed on %s", name)
            self.errors.append(f"{name}: {exc!r}")

    def start(self, doc):
        self._safely("start", doc)

    def descriptor(self, doc):
        self._safely("descriptor", doc)

    def event(self, doc):
        self._safely("event", doc)

    def stream_resource(self, doc):
        self._safely("stream_resource", doc)

    def stream_datum(self, doc):
        self._safely("stream_datum", doc)

    def stop(self, doc):
        self._safely("stop", doc)

    def _route(self, name, doc):
        if name == "start":
            self._begin(doc)
            return
        if not self.views:
            return
        for view in self.views:
            view(name, doc)
        now = time.monotonic()
        if name == "stop":
            self._finish()
        elif name == "event":
            if now - self._last_draw >= self.redraw_every:
                self._refresh()
                self._last_draw = now
            if self.directory is not None and now - self._last_save >= self.save_every:
                self.save()
                self._last_save = now

    def _begin(self, doc):
        self.start_doc = doc
        self.views = views_for(doc, screen=self.screen)
        for view in self.views:
            old = self._open.pop(view.kind, None)
            if old is not None:  # on a screen: the latest figure of each kind stays
                import matplotlib.pyplot as plt

                plt.close(old)
            view("start", doc)
        self._last_save = self._last_draw = time.monotonic()

    def _refresh(self):
        for view in self.views:
            try:
                view.refresh()
            except Exception as exc:  # noqa: BLE001 - e.g. a frame not readable yet
                logger.warning("live %s view: %r", view.kind, exc)

    def _finish(self):
        self._refresh()
        if self.directory is not None:
            self.save()
        if self.screen:
            for view in self.views:
                self._open[view.kind] = view.fig
        self.views = []

    def save(self) -> list[Path]:
        """Write every view of the present run (PNG + JSON summary); return the PNGs."""
        if self.directory is None or self.start_doc is None:
            return []
        start = self.start_doc
        stem = f"{int(start.get('scan_id') or 0):04d}-{start.get('plan_name', 'run')}"
        out = []
        for view in self.views:
            view.refresh()
            png = self.directory / f"{stem}-{view.kind}-{start['uid'][:8]}.png"
            view.fig.savefig(png, dpi=80)
            summary = {
                "uid": start["uid"],
                "scan_id": start.get("scan_id"),
                "plan_name": start.get("plan_name"),
                "view": view.kind,
                **view.summary(),
            }
            png.with_suffix(".json").write_text(json.dumps(summary, indent=1))
            out.append(png)
            if png not in self.saved:
                self.saved.append(png)
        return out
