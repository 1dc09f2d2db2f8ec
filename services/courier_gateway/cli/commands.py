"""The command line of every role: its parser, and the handler each command runs.

Only the standard library is imported at module level; each handler imports what its role
needs, so ``--help``, a usage error or the refusal of a second ``courier-gateway dev`` answer
at once, and the ingress can choose its metrics mode before prometheus-client loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from courier_gateway import __version__
from courier_gateway.cli.parsing import CommandParser, UsageError

__all__ = ["parser", "run"]


def _prepare_multiprocess_metrics(processes: int) -> None:
    """Give several ingress processes one fresh metrics directory.

    It must be set before prometheus-client is first imported (it picks its value class then),
    so this runs before the intake package is imported.
    """
    import shutil
    import tempfile

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
    settings.require_redis()
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


def _module(name: str) -> Callable[[argparse.Namespace], int]:
    """The handler of a command whose ``run`` lives in ``courier_gateway.cli.<name>``.

    The module is imported only when that command runs, so every other command starts fast.
    """

    def handler(args: argparse.Namespace) -> int:
        import importlib

        run: Callable[[argparse.Namespace], int] = importlib.import_module(
            f"courier_gateway.cli.{name}"
        ).run
        return run(args)

    return handler


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
    # The lock comes first, before the stack's modules load: a second `make dev` on the same
    # directory is refused in a fraction of a second and the first one is never touched.
    from courier_gateway.devstack.lock import DataDirLock, DataDirLockedError

    try:
        lock = DataDirLock.acquire(Path(args.data_dir).resolve())
    except DataDirLockedError as error:
        sys.stderr.write(f"courier-gateway dev: {error}\n")
        return 1
    try:
        from courier_gateway.devstack.stack import run

        return run(lock)
    finally:
        lock.release()


def parser() -> argparse.ArgumentParser:
    """The ``courier-gateway`` argument parser, every command included."""
    from courier_gateway.cli import adapters, deadletters, events, migrate, replay, sign

    root = CommandParser(
        prog="courier-gateway",
        description="Courier Gateway: signed courier webhooks in, exactly-once updates out.",
    )
    root.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = root.add_subparsers(dest="command", metavar="COMMAND", required=True)

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

    replay_command = commands.add_parser(
        "replay", help="replay (or discard) dead letters selected by id, reason, source or time"
    )
    replay.add_arguments(replay_command)
    replay_command.set_defaults(handler=_module("replay"))

    events_command = commands.add_parser(
        "events", help="what happened to an event: intake, attempts, effect, dead letter"
    )
    events.add_arguments(events_command)
    events_command.set_defaults(handler=_module("events"))

    letters_command = commands.add_parser(
        "deadletters", help="dead letters: counts by reason, source and age; list; show"
    )
    deadletters.add_arguments(letters_command)
    letters_command.set_defaults(handler=_module("deadletters"))

    migrate_command = commands.add_parser(
        "migrate",
        help="move documents written by earlier versions into their tenants' namespaces"
        " (idempotent; run once after upgrading)",
    )
    migrate.add_arguments(migrate_command)
    migrate_command.set_defaults(handler=_module("migrate"))

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

    sign_command = commands.add_parser(
        "sign", help="sign an event and print a ready-to-run curl command (or the headers as JSON)"
    )
    sign.add_arguments(sign_command)
    sign_command.set_defaults(handler=_module("sign"))

    adapters_command = commands.add_parser(
        "adapters",
        help="list the adapters, or show what a provider's payload becomes (adapters check)",
    )
    adapters.add_arguments(adapters_command)
    adapters_command.set_defaults(handler=_module("adapters"))
    return root


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen command, turn its errors into one line and an exit code."""
    args = parser().parse_args(argv)
    if args.command != "ingress":
        # Only a multi-process ingress aggregates metrics through files; every other role is
        # one process with its own registry, whatever the environment inherited says.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as error:
        sys.stderr.write(f"courier-gateway {args.command}: usage error: {error}\n")
        return 2
    except Exception as error:
        # A configuration error can only come from the configuration package once loaded; not
        # importing it here keeps the refusal of a second `dev` free of pydantic's start-up.
        errors = sys.modules.get("courier_gateway.config._errors")
        if errors is None or not isinstance(error, errors.ConfigError):
            raise
        sys.stderr.write(f"courier-gateway: configuration error: {error}\n")
        return 2
