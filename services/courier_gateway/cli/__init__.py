"""The ``courier-gateway`` command: one entry point for every role the image runs.

Configuration problems end the process with one line on stderr naming what is wrong and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from courier_gateway import __version__
from courier_gateway.config import ConfigError

__all__ = ["main"]


def _prepare_multiprocess_metrics(processes: int) -> None:
    """Give several ingress processes one fresh metrics directory.

    It must be set before prometheus-client is first imported (it picks its value class then),
    so this runs before the intake package is imported.
    """
    import os
    import shutil
    import tempfile
    from pathlib import Path

    if processes < 2:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="courier-gateway-metrics-"))
    if directory.exists():
        shutil.rmtree(directory)  # counters of a previous run must not be added to ours
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _run_ingress(args: argparse.Namespace) -> int:
    from courier_gateway.config import Settings, load_sources

    settings = Settings.from_env()
    settings.require("REDIS_URL")
    if args.listen_fd is not None:  # a server process started by the supervisor
        from courier_gateway.intake import serve

        return serve(settings, listen_fd=args.listen_fd)
    load_sources(settings)  # fail here, in the parent, before any process is spawned
    _prepare_multiprocess_metrics(settings.ingress_workers)
    if settings.ingress_workers > 1:
        from courier_gateway.intake.supervisor import Supervisor

        return Supervisor(settings).run()
    from courier_gateway.intake import serve

    return serve(settings)


def _run_worker(args: argparse.Namespace) -> int:
    import asyncio

    from courier_gateway.config import Settings
    from courier_gateway.worker.runtime import run_worker

    return asyncio.run(run_worker(Settings.from_env()))


def _run_replay(args: argparse.Namespace) -> int:
    from courier_gateway.cli.replay import run

    return run(args)


def _run_migrate(args: argparse.Namespace) -> int:
    from courier_gateway.cli.migrate import run

    return run(args)


def _run_sign(args: argparse.Namespace) -> int:
    from courier_gateway.cli.sign import run

    return run(args)


def _run_operator(args: argparse.Namespace) -> int:
    import asyncio

    from courier_gateway.config import Settings
    from courier_operator import run_operator

    asyncio.run(run_operator(Settings.from_env()))
    return 0


def _run_cleanup(args: argparse.Namespace) -> int:
    import asyncio

    from courier_gateway.config import Settings
    from courier_operator.runner import cleanup

    return asyncio.run(
        cleanup(
            Settings.from_env(),
            namespace=args.namespace,
            gateways=args.gateway,
            wait_seconds=args.timeout,
        )
    )


def _run_dev(args: argparse.Namespace) -> int:
    from courier_gateway.devstack import run

    return run(data_dir=args.data_dir)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="courier-gateway",
        description="Courier Gateway: signed courier webhooks in, exactly-once updates out.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ingress = commands.add_parser(
        "ingress", help="run the HTTP ingress (settings from the environment)"
    )
    # Internal: how the supervisor of several ingress processes starts each of them.
    ingress.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    ingress.set_defaults(handler=_run_ingress)

    worker = commands.add_parser(
        "worker", help="run the queue worker (settings from the environment)"
    )
    worker.set_defaults(handler=_run_worker)

    from courier_gateway.cli.replay import add_arguments as add_replay_arguments

    replay = commands.add_parser(
        "replay", help="replay (or discard) dead letters selected by id, reason, source or time"
    )
    add_replay_arguments(replay)
    replay.set_defaults(handler=_run_replay)

    from courier_gateway.cli.migrate import add_arguments as add_migrate_arguments

    migrate = commands.add_parser(
        "migrate",
        help="move documents written by earlier versions into their tenants' namespaces"
        " (idempotent; run once after upgrading)",
    )
    add_migrate_arguments(migrate)
    migrate.set_defaults(handler=_run_migrate)

    operator = commands.add_parser(
        "operator",
        help="run the Kubernetes operator for CourierGateway and ReplayRequest resources",
    )
    operator.set_defaults(handler=_run_operator)

    cleanup = commands.add_parser(
        "cleanup",
        help="delete the named CourierGateways and wait until the running operator has released"
        " them (before removing the operator; nothing else is touched)",
    )
    cleanup.add_argument("--namespace", required=True, help="the gateways' namespace")
    cleanup.add_argument(
        "--gateway", action="append", required=True, help="a gateway to delete (repeatable)"
    )
    cleanup.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for them to go (120)"
    )
    cleanup.set_defaults(handler=_run_cleanup)

    dev = commands.add_parser(
        "dev", help="run the whole gateway locally with a private Redis and an embedded store"
    )
    dev.add_argument(
        "--data-dir", default=".data", help="where the local stack keeps its data (.data)"
    )
    dev.set_defaults(handler=_run_dev)

    from courier_gateway.cli.sign import add_arguments

    sign = commands.add_parser(
        "sign", help="sign an event and print a ready-to-run curl command (or the headers as JSON)"
    )
    add_arguments(sign)
    sign.set_defaults(handler=_run_sign)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the chosen role and return its exit code."""
    args = _parser().parse_args(argv)
    if args.command != "ingress":
        # Only a multi-process ingress aggregates metrics through files; every other role is
        # one process with its own registry, whatever the environment inherited says.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as error:
        print(f"courier-gateway: configuration error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 130
