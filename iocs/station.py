"""The top-level group of a station simulator, and its command line.

:class:`Station`: seed, data dir, truth log, simulated clock, start-up hook
(cell t = 0 when serving starts; SIGTERM = SIGINT) and clean close;
:func:`station_arg_parser` / :func:`serve` for a station's ``main()``.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from textwrap import dedent

from caproto.server import PVGroup, run, template_arg_parser

from . import access as ca_access
from .clock import VIRTUAL, make_clock, parse_time_scale
from .detector import FrameDetector
from .pvs import TruthLog

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
        **kwargs,
    ):
        self.seed = int(seed)
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.truth = TruthLog(truth_file)
        self.simclock = make_clock(time_scale, hold=hold)
        super().__init__(*args, **kwargs)
        # who may write what (iocs/access.py): the owner by default, others read
        self.access = access or ca_access.AccessPolicy()
        ca_access.install(self.pvdb, self.access, prefix=self.prefix)

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
        self.simclock.restart(0.0)
        self.truth.write(
            {
                "event": "ioc_start",
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
    )


def serve(ioc: Station, run_options: dict) -> None:
    """Serve a station until SIGINT/SIGTERM, then close it cleanly."""
    try:
        run(ioc.pvdb, startup_hook=ioc.startup_hook, **run_options)
    except KeyboardInterrupt:
        pass
    finally:
        ioc.close()
