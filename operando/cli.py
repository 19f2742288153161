"""The ``operando`` command line.

operando iocs {xct,saxs} [--prefix P] [--time-scale S] [--data-dir D] [--list-pvs]
operando run xct [--cycles N] [--time-scale S] [--projections N] [--binning B]
                 [--tiled-uri URI --api-key KEY] [--prefix P] [--data-dir D]
operando run saxs [--beamline synchrotron|lab] [--cycles N] [--grid NXxNY]
                  [--raster-every SECONDS] [--time-scale S] [--tiled-uri URI --api-key KEY]
operando rehearse xct|saxs [run options]    (the run on virtual time, timed)
operando reduce UID [--figures DIR] [--tiled-uri URI --api-key KEY] [--data-dir D]
operando reduce --follow --tiled-uri URI [--technique T] [--dask-scheduler ADDR]
operando replay [--data-dir D] [--tiled-uri URI --api-key KEY]
operando export UID --format nxtomo|nxcansas|tiff|nexus|csv|parquet [-o FILE]
                [--tiled-uri URI --api-key KEY] [--data-dir D]
operando serve [--data-dir D] [--port P] [--catalog-uri URI]
(run, rehearse, reduce, replay, export and serve take --catalog-uri: SQLite by
default, or postgresql+asyncpg://USER@HOST:PORT/catalog)
operando queue start [--tiled-uri URI] [--xct-prefix P] [--saxs-prefix P] [--data-dir D] [--http]
operando queue status|stop [--data-dir D];  operando queue plans-devices [--output DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from pathlib import Path

from . import acquisition

DEFAULT_DATA_DIR = "data"


def _add_tiled_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tiled-uri",
        help="write to this existing Tiled server instead of the "
        "embedded one (the server must be able to read --data-dir)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("TILED_API_KEY"),
        help="API key of --tiled-uri (default: $TILED_API_KEY)",
    )
    p.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="catalog, detector files and logs (default: ./data)",
    )
    _add_catalog_arg(p)


def _add_catalog_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--catalog-uri",
        default=os.environ.get("OPERANDO_CATALOG_URI"),
        help="the embedded Tiled's catalog: SQLite under --data-dir (default) or "
        "postgresql+asyncpg://USER@HOST:PORT/catalog, event tables then in the "
        "database 'tables' beside it; the password through PGPASSFILE or PGPASSWORD "
        "(default: $OPERANDO_CATALOG_URI; `make postgres` starts a local one)",
    )


def _layout(args):
    """The data root and catalog of the embedded Tiled; a bad catalog URI is a usage error."""
    from .tiled_server import DataLayout

    try:
        return DataLayout.at(args.data_dir, catalog_uri=getattr(args, "catalog_uri", None))
    except ValueError as err:
        print(f"operando: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _time_scale(text: str):
    """A time scale: a number > 0 or 'virtual'."""
    from .iocs.clock import parse_time_scale

    try:
        return parse_time_scale(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


TIME_SCALE_HELP = (
    "cell seconds per wall second (1 = real time), or 'virtual': cell time "
    "advances only by what the station's operations take, as fast as the "
    "machine allows (default {default})"
)


def _add_experiments(parser: argparse.ArgumentParser, *, default_scale) -> None:
    """The experiments ``run`` and ``rehearse`` take: each one's own options
    (``operando.acquisition``), then the options they all share."""
    run_sub = parser.add_subparsers(
        dest="experiment", required=True, parser_class=acquisition.CheckedParser
    )
    for name in acquisition.names():
        entry = acquisition.get(name)
        p = run_sub.add_parser(name, help=entry.help, check=entry.check)
        entry.add_options(p)
        _add_common_run_args(p, default_scale=default_scale)


def _add_common_run_args(p: argparse.ArgumentParser, *, default_scale) -> None:
    p.add_argument(
        "--time-scale",
        type=_time_scale,
        default=default_scale,
        help=TIME_SCALE_HELP.format(default=default_scale),
    )
    p.add_argument(
        "--prefix",
        help="PV prefix of IOCs already running (default: start "
        "the simulators for the job and stop them after)",
    )
    p.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    p.add_argument("--experiment-id", help="experiment id stored in every run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--live-plots",
        metavar="DIR",
        help="save the live plots of every run (cell, radiogram, map) as PNG into DIR",
    )
    p.add_argument(
        "--figures",
        default=None,
        help="folder for the figures, one sub-folder per experiment (default: DATA_DIR/figures)",
    )
    p.add_argument(
        "--no-reduction",
        action="store_true",
        help="raw data only (no live reduction, no figures)",
    )
    _add_tiled_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="operando", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    iocs = sub.add_parser(
        "iocs", help="run a station's simulators in the foreground", add_help=False
    )
    iocs.add_argument("station", choices=acquisition.names())
    iocs.add_argument(
        "ioc_args",
        nargs=argparse.REMAINDER,
        help="caproto IOC options: --prefix, --time-scale, --data-dir, "
        "--list-pvs, ... (see `operando iocs xct --help`)",
    )

    run = sub.add_parser("run", help="run an experiment headless")
    _add_experiments(run, default_scale=1.0)
    rehearse = sub.add_parser(
        "rehearse",
        help="rehearse an experiment on the simulators "
        "on virtual time, as fast as the machine allows, and time it",
    )
    _add_experiments(rehearse, default_scale="virtual")

    reduce = sub.add_parser(
        "reduce", help="reduce a stored raw run (or experiment) again, offline, from Tiled"
    )
    reduce.add_argument(
        "uid",
        nargs="?",
        help="raw run uid (its whole experiment is reduced) or an experiment id",
    )
    reduce.add_argument(
        "--figures", default=None, help="folder for the figures (default: DATA_DIR/figures/<id>)"
    )
    reduce.add_argument(
        "--follow",
        action="store_true",
        help="be a reduction worker: reduce what --tiled-uri holds and is not reduced "
        "yet, then every run as it stops, until SIGTERM/SIGINT (the server needs a "
        "streaming cache: operando serve --streaming)",
    )
    reduce.add_argument(
        "--technique",
        action="append",
        default=None,
        help="with --follow: reduce only this technique (repeatable; default: all)",
    )
    reduce.add_argument(
        "--rescan",
        type=float,
        default=300.0,
        help="with --follow: seconds between scans of the catalog for runs missed (0: none)",
    )
    reduce.add_argument(
        "--dask-scheduler",
        default=None,
        help="reconstruct on this dask.distributed scheduler (tcp://host:8786; default "
        "$OPERANDO_DASK_SCHEDULER, else a LocalCluster of this host's cores)",
    )
    _add_tiled_args(reduce)

    replay = sub.add_parser(
        "replay", help="write runs kept in TiledWriter's backup (Tiled was down) into Tiled"
    )
    _add_tiled_args(replay)

    export = sub.add_parser(
        "export",
        help="export a run or a reduced result as a standard "
        "file (NXtomo, NXcanSAS, TIFF, NeXus, CSV, Parquet)",
    )
    export.add_argument(
        "uid",
        help="raw run uid, experiment id, or a path below one "
        "(UID/volume, EXPERIMENT/cycles) or from the root (reduced/ID/points)",
    )
    export.add_argument(
        "--format",
        required=True,
        choices=("nxtomo", "nxcansas", "tiff", "nexus", "csv", "parquet"),
        help="nxtomo: raw 3D scan; nxcansas: reduced SAXS/WAXS raster; tiff, "
        "nexus: reconstructed volume; csv, parquet: a reduced table",
    )
    export.add_argument(
        "-o",
        "--output",
        default=None,
        help="file (or folder) to write (default: named after the node, here)",
    )
    _add_tiled_args(export)

    serve = sub.add_parser("serve", help="serve the local catalog with Tiled")
    serve.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1 only)"
    )
    serve.add_argument("--port", type=int, default=8000)
    _add_catalog_arg(serve)
    serve.add_argument(
        "--streaming",
        action="store_true",
        help="start Redis beside Tiled as its streaming cache, for reduction workers "
        "(operando reduce --follow) on any host",
    )

    # operando queue start|status|stop|plans-devices: the queue server (operando/queue.py)
    from . import queue

    queue.add_parser(sub)
    return parser


def cmd_iocs(args) -> int:
    import importlib

    module = importlib.import_module(acquisition.get(args.station).ioc_module)
    sys.argv = [f"operando iocs {args.station}", *args.ioc_args]
    # Serve on loopback unless the user chose interfaces (a real network is opt-in).
    os.environ.setdefault("EPICS_CAS_INTF_ADDR_LIST", "127.0.0.1")
    module.main()
    return 0


def cmd_run(args) -> int:
    from . import shutdown
    from .constants import HOUR
    from .jobs import TiledTarget

    if args.tiled_uri and not args.api_key:
        print("operando: --tiled-uri needs --api-key (or $TILED_API_KEY)", file=sys.stderr)
        return 2
    target = TiledTarget(args.tiled_uri, args.api_key, _layout(args))
    args.experiment_id = args.experiment_id or f"{args.experiment}-{uuid.uuid4().hex[:8]}"
    _private_files()
    if getattr(args, "live_plots", None):
        os.environ["OPERANDO_LIVE_PLOTS"] = str(args.live_plots)  # read by the job
    # SIGINT/SIGTERM: the plan is aborted through the RunEngine (stop documents,
    # source off, open circuit), Tiled drained, the children stopped; a summary.
    with shutdown.SignalGuard() as guard:
        try:
            figures = _figures_dir(args)
            report = acquisition.get(args.experiment).run(args, target, figures)
        except shutdown.Interrupted as stop:
            stop.experiment_id = stop.experiment_id or args.experiment_id
            stop.data_dir = stop.data_dir or target.layout.root
            print(shutdown.summary(stop, command=f"operando {args.command} {args.experiment}"))
            return stop.exit_code
    args.report = report
    _report(report, args)
    if report.failure:
        f = report.failure
        print(f"cell failed in cycle {f['cycle']} at {f['time_s'] / HOUR:.2f} h: {f['reason']}")
    print(f"data: {report.data_dir} (detector frames under {report.frames_dir})")
    if figures:
        print(f"figures: {figures / report.experiment_id}")
    if args.tiled_uri:
        print(f"runs written to {report.tiled_uri}")
    else:
        print(f"browse: operando serve --data-dir {args.data_dir}")
    if guard.signum is not None:  # came once the protocol had ended: all was written
        return shutdown.exit_code(guard.signum)
    return 0


def _private_files() -> None:
    """Files this command creates (backups, figures, configuration) are its user's
    alone: the umask gains 077 (the children get 077 too)."""
    os.umask(os.umask(0o077) | 0o077)


def cmd_rehearse(args) -> int:
    """``operando run`` on virtual time (by default), then how fast it went."""
    code = cmd_run(args)
    report = getattr(args, "report", None)
    if report is not None:
        for line in rehearsal_summary(report, args.time_scale):
            print(line)
    return code


def rehearsal_summary(report, time_scale) -> list[str]:
    """Cell time simulated, wall time, their ratio and where the wall time went."""
    cell_s = report.extra.get("cell_time_s", 0.0)
    t = report.extra.get("timing", {})
    wall = report.wall_s
    acquisition = t.get("plan_s", 0.0) - t.get("reducer_callback_s", 0.0)
    lines = [
        f"rehearsal: {cell_s / 3600:.2f} h of cell time in {wall:.1f} s of wall time "
        f"({cell_s / wall if wall else 0:.0f}x; time scale {time_scale})"
    ]
    if wall > 0:
        lines.append(
            f"  share of the wall time: acquisition (RunEngine) {acquisition / wall:.0%}; "
            f"Tiled writing {t.get('tiled_writer_s', 0.0) / wall:.0%} busy in its own process, "
            f"{t.get('ingest_drain_s', 0.0) / wall:.0%} draining after the plan; live "
            f"reduction {t.get('reduction_flush_s', 0.0) / wall:.0%} finishing after that"
        )
    return lines


def _figures_dir(args) -> Path | None:
    """Where the live reducer writes figures (it adds a sub-folder per experiment)."""
    if args.no_reduction:
        return None
    figures = Path(args.figures or Path(args.data_dir) / "figures").resolve()
    figures.mkdir(parents=True, exist_ok=True)
    return figures


def _report(report, args) -> None:
    print(
        f"experiment {report.experiment_id}: {len(report.runs)} runs in {report.wall_s:.1f} s wall"
    )
    for step, cycle, uid in report.runs:
        label = f"cycle {cycle}" if cycle else ""
        print(f"  {uid}  {step:<10} {label}")


def _find_technique(client, key: str) -> str:
    from tiled.queries import Key

    runs = client["raw"]
    if key in runs:
        return runs[key].metadata["start"].get("technique", "")
    found = runs.search(Key("start.experiment_id") == key)
    if len(found) == 0:
        raise SystemExit(f"operando: no raw run or experiment {key!r} in the catalog")
    return found.values().first().metadata["start"].get("technique", "")


def cmd_reduce(args) -> int:
    from . import techniques
    from .jobs import TiledTarget, tiled_client

    if args.dask_scheduler:
        from .callbacks.xct.science.reconstruction import SCHEDULER_ENV

        os.environ[SCHEDULER_ENV] = args.dask_scheduler
    if args.follow:
        return _follow(args)
    if not args.uid:
        print("operando: reduce needs a UID (or --follow)", file=sys.stderr)
        return 2
    target = TiledTarget(args.tiled_uri, args.api_key, _layout(args))
    figures = Path(args.figures or Path(args.data_dir) / "figures" / args.uid).resolve()
    figures.mkdir(parents=True, exist_ok=True)
    with tiled_client(target) as (client, uri):
        technique = _find_technique(client, args.uid)
        found = techniques.for_run({"technique": technique})
        if found is None:
            print(f"operando: no reduction for technique {technique!r}", file=sys.stderr)
            return 2
        summary = found.reduce_offline(client, args.uid, figures_dir=figures)
    print(f"reduced {args.uid} ({technique}) into {uri} under 'reduced/'")
    if isinstance(summary, dict):
        for key, value in summary.items():
            if isinstance(value, (int, float, str)):
                print(f"  {key}: {value}")
    print(f"figures: {figures}")
    return 0


def _follow(args) -> int:
    """``operando reduce --follow``: a reduction worker on the server at --tiled-uri."""
    from tiled.client import from_uri

    from . import techniques
    from .workers import run_worker

    if args.uid:
        print("operando: reduce --follow takes no UID", file=sys.stderr)
        return 2
    if not args.tiled_uri or not args.api_key:
        print(
            "operando: reduce --follow needs --tiled-uri and an API key "
            "($TILED_API_KEY or --api-key)",
            file=sys.stderr,
        )
        return 2
    unknown = sorted(set(args.technique or []) - set(techniques.names()))
    if unknown:
        print(
            f"operando: no technique {', '.join(unknown)}; known: {', '.join(techniques.names())}",
            file=sys.stderr,
        )
        return 2
    figures = Path(args.figures or Path(args.data_dir) / "figures").resolve()
    figures.mkdir(parents=True, exist_ok=True)
    client = from_uri(args.tiled_uri, api_key=args.api_key)
    return run_worker(
        client, figures_dir=figures, technique_names=args.technique, rescan_s=args.rescan
    )


def cmd_replay(args) -> int:
    from .jobs import TiledTarget, tiled_client
    from .session import backup_files, replay_backup

    layout = _layout(args)
    files = backup_files(layout.backup)
    if not files:
        print(f"no backups under {layout.backup}")
        return 0
    target = TiledTarget(args.tiled_uri, args.api_key, layout)
    with tiled_client(target) as (client, uri):
        for path in files:
            uid = replay_backup(path, client)
            print(f"  {uid}  from {path.name}")
    print(f"{len(files)} run(s) in {uri}")
    return 0


def cmd_export(args) -> int:
    from .exporters.client import ExportProblem, export
    from .jobs import TiledTarget, tiled_client

    if args.tiled_uri and not args.api_key:
        print("operando: --tiled-uri needs --api-key (or $TILED_API_KEY)", file=sys.stderr)
        return 2
    target = TiledTarget(args.tiled_uri, args.api_key, _layout(args))
    with tiled_client(target) as (client, uri):
        try:
            path, size, node = export(client, args.uid, args.format, args.output)
        except ExportProblem as err:
            print(f"operando: {err}", file=sys.stderr)
            return 2
    print(f"{node} as {args.format}: {path} ({size} bytes)")
    return 0


def cmd_serve(args) -> int:
    from . import shutdown
    from .tiled_server import TiledServer

    _private_files()
    layout = _layout(args)
    redis = None
    if args.streaming:
        from .services import RedisServer

        redis = RedisServer(layout.root / "redis").start()
    extra = {"streaming_cache": {"uri": redis.uri}} if redis else None
    server = TiledServer(layout, host=args.host, port=args.port, extra_config=extra)
    # SIGINT/SIGTERM stop the server (it also dies with this process, SIGKILL included)
    with shutdown.SignalGuard() as guard:
        try:
            server.start()
            print(f"Tiled serving {server.layout.root} at {server.uri}", flush=True)
            layout = server.layout
            print(f"catalog: {layout.catalog_location}; tables: {layout.tables_location}")
            print(f"API key: {server.api_key} (kept in {server.layout.api_key_file}, mode 0600)")
            print(
                f"  from tiled.client import from_uri; c = from_uri('{server.uri}', "
                f"api_key='{server.api_key}'); c['raw']"
            )
            if redis is not None:
                print(
                    f"streaming cache: {redis.uri}; reduction workers: TILED_API_KEY=... "
                    f"operando reduce --follow --tiled-uri {server.uri}"
                )
            print(f"Browse (web UI): {server.browse_url}", flush=True)
            code = server.wait()
            print(f"operando: the Tiled server exited with status {code}", file=sys.stderr)
            return code or 1
        except shutdown.Interrupted as stop:
            with guard.shielded():
                server.stop()
            print(
                f"operando: Tiled stopped ({shutdown.signal_name(stop.signum)}); "
                f"the catalog is in {server.layout.root}"
            )
            return stop.exit_code
        finally:
            with guard.shielded():
                server.stop()
                if redis is not None:
                    redis.stop()


def cmd_queue(args) -> int:
    from . import queue

    return queue.main(args)


def main(argv=None) -> int:
    from .memory import configure_malloc

    configure_malloc()  # before any thread: a session's heap that does not creep
    # pyFAI and the reconstruction share 2-4 cores with the RunEngine: OpenMP
    # threads that busy-wait between calls slow everyone else down.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    handlers = {
        "iocs": cmd_iocs,
        "run": cmd_run,
        "rehearse": cmd_rehearse,
        "serve": cmd_serve,
        "reduce": cmd_reduce,
        "replay": cmd_replay,
        "export": cmd_export,
        "queue": cmd_queue,
    }
    return handlers[args.command](args) or 0


if __name__ == "__main__":
    sys.exit(main())
