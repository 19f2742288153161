"""The top-level group of a station simulator, and its command line.

:class:`Station`: seed, data dir, truth log, simulated clock, start-up hook
(cell t = 0 when serving starts; SIGTERM = SIGINT), autosave/restore
(``iocs/autosave.py``) and clean close; :func:`station_arg_parser` /
:func:`serve` for a station's ``main()``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from pathlib import Path
from textwrap import dedent

from caproto.server import PVGroup, run, template_arg_parser

from . import access as ca_access
from .autosave import Autosave, default_autosave_path, read_state
from .clock import VIRTUAL, make_clock, parse_time_scale
from .detector import FrameDetector
from .motor import SimMotor
from .potentiostat import Potentiostat
from .pvs import TruthLog

logger = logging.getLogger(__name__)

#: PVs never restored: commands, the clock's readbacks and the client's waiting flag.
_NOT_RESTORED = (
    "clock:time",
    "clock:scale",
    "clock:virtual",
    "clock:wait",
    "clock:waiting",
    "cam:Acquire",
    "cam:Acquire_RBV",
    "pstat:start",
    "pstat:stop",
    "pstat:wait",
    "force:tare",
    "Geometry_RBV",
    "PoniFile_RBV",
)


def walk_groups(group: PVGroup):
    """``group`` and every subgroup below it."""
    yield group
    for sub in getattr(group, "groups", {}).values():
        yield from walk_groups(sub)


def request_autosave(group) -> None:
    """Tell the station of ``group`` that a state change worth saving happened."""
    while group is not None:
        autosave = getattr(group, "autosave", None)
        if isinstance(autosave, Autosave):
            autosave.request()
            return
        group = getattr(group, "parent", None)


__all__ = ["Station", "station_arg_parser", "station_kwargs", "serve"]


class Station(PVGroup):
    """Base of a station IOC: shared state its subgroups find through ``.parent``.

    Attributes set before the subgroups are created: ``seed``, ``data_dir``,
    ``truth`` (:class:`TruthLog`), ``simclock`` (:class:`SimClock`). A
    subclass sets its own models (e.g. ``self.cell``) before calling
    ``super().__init__``.
    """

    def __init__(
        self,
        *args,
        time_scale: float = 1.0,
        seed: int = 0,
        data_dir=".",
        truth_file=None,
        hold: bool = False,
        access: ca_access.AccessPolicy | None = None,
        autosave=None,
        restore: bool = False,
        **kwargs,
    ):
        self.seed = int(seed)
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.truth = TruthLog(truth_file)
        self.simclock = make_clock(time_scale, hold=hold)
        self.autosave: Autosave | None = None
        self.restored: dict | None = None
        super().__init__(*args, **kwargs)
        # who may write what (iocs/access.py): the owner by default, others read
        self.access = access or ca_access.AccessPolicy()
        ca_access.install(self.pvdb, self.access, prefix=self.prefix)
        if autosave:
            self.autosave = Autosave(autosave, self.collect_state)
            if restore:
                state = read_state(autosave)
                if state is not None:
                    self.restore(state)

    # -- autosave / restore ----------------------------------------------------------
    def _saved_pvs(self):
        for name, inst in self.pvdb.items():
            rel = name[len(self.prefix) :]
            if "." in rel or any(rel.endswith(s) for s in _NOT_RESTORED):
                continue
            if getattr(inst, "field_inst", None) is not None:  # motor records: below
                continue
            yield name, inst

    def collect_state(self) -> dict:
        """Everything a restarted IOC needs to continue (picklable)."""
        clock = self.simclock
        motors = {}
        pstats = {}
        detectors = {}
        for g in walk_groups(self):
            if isinstance(g, SimMotor):
                motors[g.prefix] = {"position": g.position, "target": g._target}
            elif isinstance(g, Potentiostat):
                pstats[g.prefix] = g.save_state()
            elif isinstance(g, FrameDetector):
                detectors[g.prefix] = g.save_state()
        return {
            "t": clock.now(),
            "held": clock.held,
            "sync": bool(getattr(clock, "_sync", False)),
            "pvs": {name: inst.value for name, inst in self._saved_pvs()},
            "motors": motors,
            "pstats": pstats,
            "detectors": detectors,
            "models": self.save_models(),
        }

    def save_models(self) -> dict:
        """Hook: the station's own model objects (e.g. the cell)."""
        return {"cell": self.cell} if hasattr(self, "cell") else {}

    def restore_models(self, models: dict) -> None:
        """Hook: put back what :meth:`save_models` saved."""
        if "cell" in models:
            self.cell = models["cell"]

    def restore(self, state: dict) -> None:
        """Bring a saved state back (before serving: no client sees the defaults)."""
        clock = self.simclock
        clock.restart(float(state["t"]))
        if state.get("held"):
            clock.hold()
        elif clock.held:
            clock.release()
        clock.set_sync(bool(state.get("sync")))
        self.restore_models(state.get("models", {}))
        for name, value in state.get("pvs", {}).items():
            inst = self.pvdb.get(name)
            if inst is not None:
                inst._data["value"] = value  # not served yet: no subscriber to tell
        for g in walk_groups(self):
            if isinstance(g, SimMotor) and g.prefix in state.get("motors", {}):
                saved = state["motors"][g.prefix]
                g.defaults["position"] = float(saved["position"])
                g._target = float(saved["position"])
            elif isinstance(g, Potentiostat) and g.prefix in state.get("pstats", {}):
                g.restore_state(state["pstats"][g.prefix])
            elif isinstance(g, FrameDetector) and g.prefix in state.get("detectors", {}):
                g.restore_state(state["detectors"][g.prefix])
        self.restored = state
        logger.info("restored the station's state at cell time %.3f s", clock.now())

    async def _autosave_loop(self) -> None:
        """Scaled time: save every ``wall_period`` wall seconds."""
        while True:
            await asyncio.sleep(self.autosave.wall_period)
            self.autosave.save()

    def start_info(self) -> dict:
        """Station-specific fields of the ``ioc_start`` truth record."""
        return {}

    def detectors(self) -> list[FrameDetector]:
        return [g for g in self.groups.values() if isinstance(g, FrameDetector)]

    async def startup_hook(self, async_lib) -> None:
        """``run(..., startup_hook=ioc.startup_hook)``: cell t = 0 when serving starts.

        It runs before the groups' startup methods (first task created). It also
        makes SIGTERM stop the server cleanly (open HDF5 files are closed), even
        when SIGINT is ignored (started in the background by a shell, nohup).
        """
        if self.restored is None:
            self.simclock.restart(0.0)
        if self.autosave is not None:
            if self.simclock.virtual:
                self.simclock.add_step_hook(self.autosave.on_step)
            else:
                asyncio.get_running_loop().create_task(self._autosave_loop())
            self.autosave.save()
        self.truth.write(
            {
                "event": "ioc_start",
                "restored": self.restored is not None,
                "t": self.simclock.now(),
                "prefix": self.prefix,
                "time_scale": VIRTUAL if self.simclock.virtual else self.simclock.scale,
                "seed": self.seed,
                "held": self.simclock.held,
                **self.start_info(),
            }
        )
        if threading.current_thread() is threading.main_thread():
            _stop_on_sigterm(asyncio.get_running_loop())

    def close(self) -> None:
        """Close open HDF5 files and the truth log (at exit)."""
        if self.autosave is not None:
            self.autosave.save()
        for det in self.detectors():
            det.writer.close()
        self.truth.close()


def _stop_on_sigterm(loop) -> None:
    """SIGTERM cancels the server's tasks once (asyncio's answer to a first
    Ctrl-C): caproto shuts down, then :meth:`Station.close` runs; later SIGTERMs
    are ignored while it does."""
    stopping = []

    def stop() -> None:
        if stopping:
            return
        stopping.append(True)
        for task in asyncio.all_tasks(loop):
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, stop)


def station_arg_parser(station_cls, *, default_prefix: str, default_data_dir: str, argv=None):
    """caproto's ``template_arg_parser`` with the options every station takes:
    ``--time-scale``, ``--data-dir``, ``--seed``, ``--truth-file``, ``--hold``.

    Returns ``(parser, split_args)``; add station options, then
    ``args = parser.parse_args(argv)`` and :func:`station_kwargs`.
    """
    parser, split_args = template_arg_parser(
        default_prefix=default_prefix,
        desc=dedent(station_cls.__doc__ or ""),
        supported_async_libs=("asyncio",),
        argv=argv,
    )
    parser.add_argument(
        "--time-scale",
        type=parse_time_scale,
        default=1.0,
        metavar="S",
        help="cell seconds per wall second (default 1), or 'virtual': "
        "cell time advances only by what the operations take",
    )
    parser.add_argument(
        "--data-dir",
        default=default_data_dir,
        metavar="D",
        help=f"default FilePath of the HDF5 files (default {default_data_dir})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="random seed of the cell and the noise (default 0)",
    )
    parser.add_argument(
        "--truth-file",
        default=None,
        metavar="PATH",
        help="append ground truth as JSON lines to PATH (for tests)",
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="start with the cell time frozen at 0 until clock:hold is put 0",
    )
    ca_access.add_arguments(parser)  # --ca-writers, --ca-hosts
    parser.add_argument(
        "--autosave",
        default=None,
        metavar="PATH",
        help="save the station's state to PATH (default: DATA_DIR/autosave-<prefix>.pkl)",
    )
    parser.add_argument(
        "--restore",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="restore the saved state at start when the autosave file exists (default on)",
    )
    return parser, split_args


def station_kwargs(parser, args) -> dict:
    """The common station keyword arguments from parsed ``args`` (validated)."""
    return dict(
        time_scale=args.time_scale,
        seed=args.seed,
        data_dir=args.data_dir,
        truth_file=args.truth_file,
        hold=args.hold,
        access=ca_access.policy_from_args(args),
        autosave=args.autosave or default_autosave_path(args.data_dir, args.prefix),
        restore=args.restore,
    )


def serve(ioc: Station, run_options: dict) -> None:
    """Serve a station until SIGINT/SIGTERM, then close it cleanly."""
    from operando.memory import configure_malloc

    configure_malloc()  # it runs for days too (see operando/memory.py)
    try:
        run(ioc.pvdb, startup_hook=ioc.startup_hook, **run_options)
    except KeyboardInterrupt:
        pass
    finally:
        ioc.close()
