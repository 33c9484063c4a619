"""Command line: arguments -> config -> run on uvloop -> exit code. The only place that exits.

Exit codes: 0 success, 1 runtime failure (a stage could not start, a command failed),
2 bad usage or an invalid config file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

import structlog
import uvloop
import yaml

from ingestd import __version__, config
from ingestd.convert import native
from ingestd.errors import ConfigError
from ingestd.observe.telemetry import setup_logging
from ingestd.pipeline import StartupError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

log = structlog.get_logger("ingestd.cli")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except ConfigError as exc:
        print(f"ingestd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingestd", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version", action="version", version=f"ingestd {__version__} ({native.describe()})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    _config_option(run)
    run.set_defaults(handler=_run)

    check = sub.add_parser("check-config", help="validate a config file; list every problem")
    check.add_argument("file", nargs="?", default=os.environ.get("INGESTD_CONFIG"))
    check.set_defaults(handler=_check_config)

    show = sub.add_parser("print-config", help="print the effective config, secrets masked")
    show.add_argument("file", nargs="?", default=os.environ.get("INGESTD_CONFIG"))
    show.set_defaults(handler=_print_config)

    schema = sub.add_parser("schema", help="set up and look after the databases")
    actions = schema.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, handler, text in (
        ("apply", _schema_apply, "create or update tables, policies and templates (idempotent)"),
        ("status", _schema_status, "show the tier, tables, policies, rollups and jobs"),
        ("maintain", _schema_maintain, "run the maintenance job once, now"),
    ):
        command = actions.add_parser(action, help=text)
        _config_option(command)
        command.set_defaults(handler=handler)

    _applications_parser(sub)
    return parser


def _applications_parser(sub: Any) -> None:
    apps = sub.add_parser("applications", help="registered applications and their ingest keys")
    actions = apps.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="register an application; print its first key once")
    add.add_argument("name")
    add.add_argument("--id", dest="application_id", help="application id (default: a UUID)")
    add.add_argument("--namespace", default="")
    add.add_argument("--environment", default="")
    add.add_argument("--key-name", default="", help="a label for the key")
    listing = actions.add_parser("list", help="registered applications and their key prefixes")
    rotate = actions.add_parser("rotate", help="a new key (printed once); the old ones revoked")
    rotate.add_argument("application_id")
    rotate.add_argument("--keep-old", action="store_true", help="leave the old keys active")
    revoke = actions.add_parser("revoke", help="revoke an application's keys (or one of them)")
    revoke.add_argument("application_id")
    revoke.add_argument("--key", dest="prefix", help="only the key starting with this prefix")
    for command in (add, listing, rotate, revoke):
        _config_option(command)
        command.set_defaults(handler=_applications)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("INGESTD_CONFIG"),
        help="config file (default: $INGESTD_CONFIG)",
    )


def load_config(path: str | None) -> config.Config:
    if not path:
        raise ConfigError(["no config file given (use -c FILE or set INGESTD_CONFIG)"])
    return config.load(path)


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    """Run *coro* on uvloop and return its exit code."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _run(args: argparse.Namespace) -> int:
    from ingestd.workers.worker import (
        PARENT_DEATH_SIGNAL,
        WorkerSpec,
        die_with_parent,
        worker_config,
        worker_count,
    )

    cfg = load_config(args.config)
    worker = WorkerSpec.from_env()
    setup_logging(cfg.telemetry, **({"worker": worker.index} if worker else {}))
    # As PID 1 in a container a signal with no handler is ignored: catch the ones that arrive
    # while the daemon's imports load, and let serve() act on them once its loop runs.
    early: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda n, _frame: early.append(n))
    if worker is not None:
        signal.signal(PARENT_DEATH_SIGNAL, lambda n, _frame: early.append(n))
        die_with_parent(worker.parent_pid)
        cfg = worker_config(cfg, worker)
    else:
        count = worker_count(cfg)
        if count > 1:
            return _supervise(cfg, Path(args.config).resolve(), count, early)
        # One process: metrics live in memory, whatever the environment says.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from ingestd.daemon import serve  # the daemon pulls in grpc, psycopg, elasticsearch

    async def go() -> int:
        await serve(cfg, Path(args.config), early_signals=early, worker=worker)
        return EXIT_OK

    try:
        code = run_async(go())
    except StartupError as exc:
        log.error("startup_failed", error=str(exc))
        print(f"ingestd: startup failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except asyncio.CancelledError:
        log.warning("aborted", reason="second signal")
        code = EXIT_FAILURE
    _exit_now(code)


def _supervise(cfg: config.Config, path: Path, count: int, early: list[int]) -> int:
    """`workers: N > 1`: run the supervisor in this process (see ingestd.workers.supervisor)."""
    from ingestd.workers.worker import make_metrics_dir

    # prometheus_client picks file-backed values at import when this is set; nothing has
    # imported it yet (the supervisor module is the first), and the workers inherit it.
    metrics_dir, lock = make_metrics_dir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from ingestd.workers.supervisor import supervise

    try:
        code = run_async(supervise(cfg, path, count, metrics_dir, early))
    except StartupError as exc:
        log.error("startup_failed", error=str(exc))
        print(f"ingestd: startup failed: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.close(lock)
    _exit_now(code)


def _exit_now(code: int) -> NoReturn:
    """End the process once the daemon has stopped, skipping the interpreter's teardown.

    Tearing down grpc, psycopg, protobuf and the rest takes ~1 s (measured on the dev box),
    time taken from the shutdown grace period for nothing: every stage has stopped, buffers
    are flushed and connections closed; only the standard streams need flushing.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _check_config(args: argparse.Namespace) -> int:
    load_config(args.file)
    print(f"{args.file}: ok")
    return EXIT_OK


def _print_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    yaml.safe_dump(config.redacted(cfg), sys.stdout, sort_keys=False)
    return EXIT_OK


def _schema_command(args: argparse.Namespace, action: str) -> int:
    import psycopg

    from ingestd.errors import SchemaError
    from ingestd.schema import command

    cfg = load_config(args.config)
    setup_logging(cfg.telemetry)

    closed = False

    def out(line: str) -> None:
        # A reader that went away (`| head`) must not abort the work half-way: keep going
        # without output.
        nonlocal closed
        if closed:
            return
        try:
            print(line, flush=True)
        except BrokenPipeError:
            closed = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    async def go() -> int:
        if action == "apply":
            await command.apply(cfg, out)
            return EXIT_OK
        if action == "status":
            await command.show_status(cfg, out)
            return EXIT_OK
        return EXIT_OK if await command.maintain(cfg, out) else EXIT_FAILURE

    try:
        return run_async(go())
    except (SchemaError, psycopg.Error) as exc:
        print(f"ingestd: schema {action}: {exc}".rstrip(), file=sys.stderr)
        return EXIT_FAILURE


def _schema_apply(args: argparse.Namespace) -> int:
    return _schema_command(args, "apply")


def _schema_status(args: argparse.Namespace) -> int:
    return _schema_command(args, "status")


def _schema_maintain(args: argparse.Namespace) -> int:
    return _schema_command(args, "maintain")


def _applications(args: argparse.Namespace) -> int:
    import psycopg

    from ingestd import applications

    cfg = load_config(args.config)
    setup_logging(cfg.telemetry)

    def shown(key: applications.NewKey) -> None:
        print(f"application {key.application_id}")
        print(f"key {key.token}")
        print("(shown once: only its SHA-256 is stored)", file=sys.stderr)

    async def go() -> int:
        if args.action == "add":
            shown(
                await applications.add(
                    cfg,
                    args.name,
                    application_id=args.application_id,
                    namespace=args.namespace,
                    environment=args.environment,
                    key_name=args.key_name,
                )
            )
        elif args.action == "list":
            await applications.list_applications(cfg, print)
        elif args.action == "rotate":
            shown(await applications.rotate(cfg, args.application_id, keep_old=args.keep_old))
        else:
            count = await applications.revoke(cfg, args.application_id, args.prefix)
            print(f"revoked {count} key(s) of {args.application_id}")
        return EXIT_OK

    try:
        return run_async(go())
    except (applications.ApplicationError, psycopg.Error) as exc:
        print(f"ingestd: applications {args.action}: {exc}".rstrip(), file=sys.stderr)
        return EXIT_FAILURE
