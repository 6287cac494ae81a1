"""The `imgq` command."""

from __future__ import annotations

import errno
import gc
import logging
import socket
import sys
from typing import Annotated, Any

import typer

from imgq.config import Settings, SettingsError, describe_settings, load_settings, redact
from imgq.logs import setup_logging

SETTINGS_HELP = "\b\nSettings (environment variables):\n" + describe_settings()

app = typer.Typer(
    help="imgq: self-hosted asynchronous image processing.",
    epilog=SETTINGS_HELP, no_args_is_help=True, rich_markup_mode=None,
)
log = logging.getLogger("imgq")


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        typer.echo(f"imgq: {exc}", err=True)
        raise typer.Exit(2) from None
    setup_logging(settings.log_level, settings.log_format)
    return settings


@app.command(epilog=SETTINGS_HELP)
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [env IMGQ_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [env IMGQ_PORT].")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Worker processes; 0 = one per core [env IMGQ_WORKERS].")] = None,
    no_workers: Annotated[bool, typer.Option(
        "--no-workers", help="Run the API only; workers run elsewhere.")] = False,
) -> None:
    """Run the API, the web page, embedded workers and the sweeper.

    With IMGQ_BROKER_URL set, only the API: it publishes to the broker, `imgq worker`
    processes run the items and `imgq beat` sweeps."""
    import uvicorn

    from imgq.api.access import exposure_warnings
    from imgq.compose import build_app

    settings = _settings(host=host, port=port, workers=workers)
    sock = _listen(settings.host, settings.port)  # a busy port is said before anything starts
    try:
        application, dispatcher = build_app(settings, embedded_workers=not no_workers)
    except SettingsError as exc:
        typer.echo(f"imgq: {exc}", err=True)
        raise typer.Exit(2) from None
    for warning in exposure_warnings(settings, application.state.runtime.repo):
        log.warning("%s", warning)
        typer.secho(f"imgq: WARNING: {warning}", err=True, fg="red", bold=True)
    log.info("imgq serving on http://%s:%d", settings.host, settings.port, extra={
        "database": redact(settings.database_url), "storage": settings.storage_url,
        "workers": "none" if dispatcher is None else dispatcher.describe()})
    config = uvicorn.Config(application, host=settings.host, port=settings.port,
                            log_config=None, access_log=False, timeout_graceful_shutdown=10)
    settle_heap()
    uvicorn.Server(config).run(sockets=[sock])


def settle_heap() -> None:
    """What a server made to start (modules, routes, models of the API, settings) lives as
    long as the process: after one collection, it is kept out of the cyclic collector's sight,
    so a full collection walks only what came later. Walking it took 70 ms of CPU in the API,
    every few seconds under load, and every request waited behind it (status reads 70-400 ms
    late, bench/bench_status.py).

    Code imported later, at its first use, lives as long: a fleet's first publish imports the
    broker's client (kombu's transport, redis-py: 18,000 objects, 8-9 ms of CPU in every full
    collection after it). A full collection that finds modules imported since the last
    settling settles what survived it too, at no cost of its own (the collection has just
    walked it). Only then: modules are imported a bounded number of times, so what such a
    settling keeps out of sight that dies later in a reference cycle (a request under way at
    that moment) is bounded too; a full collection with no new module leaves everything to
    the collector."""
    gc.collect()
    gc.freeze()
    _settled_modules[0] = len(sys.modules)
    if _settle_after_imports not in gc.callbacks:
        gc.callbacks.append(_settle_after_imports)


_settled_modules = [0]  # len(sys.modules) at the last settling


def _settle_after_imports(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info["generation"] == 2 and len(sys.modules) != _settled_modules[0]:
        _settled_modules[0] = len(sys.modules)
        gc.freeze()


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound; a port that cannot be had ends the command with a line
    that names it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        problem = ("is already in use (another imgq serve, or another program)"
                   if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})")
        typer.echo(f"imgq: port {port} on {host} {problem}: stop that program, or serve on "
                   "another port with --port N (or IMGQ_PORT=N)", err=True)
        raise typer.Exit(2) from None
    return sock


@app.command(epilog=SETTINGS_HELP)
def worker(
    queues: Annotated[str | None, typer.Option(
        help="Comma-separated queues; cpu and gpu stand for IMGQ_CPU_QUEUE and "
        "IMGQ_GPU_QUEUE [default: cpu,gpu].")] = None,
    concurrency: Annotated[int | None, typer.Option(
        help="Items run at once; default IMGQ_WORKERS, or one per core.")] = None,
    pool: Annotated[str | None, typer.Option(
        help="Celery pool: prefork (default), threads or solo.")] = None,
) -> None:
    """Run items from the broker (IMGQ_BROKER_URL: Celery on redis:// or amqp://, or nats://)."""
    from imgq.compose import run_worker

    try:
        run_worker(_settings(), queues, concurrency, pool)
    except SettingsError as exc:
        typer.echo(f"imgq: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command(epilog=SETTINGS_HELP)
def beat() -> None:
    """The fleet's sweeper: lost leases and unpublished items every IMGQ_QUEUE_SWEEP_INTERVAL_SECONDS,
    expiry every IMGQ_SWEEP_INTERVAL_SECONDS. Run exactly one per fleet."""
    from imgq.compose import run_beat

    try:
        run_beat(_settings())
    except SettingsError as exc:
        typer.echo(f"imgq: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command(epilog=SETTINGS_HELP)
def migrate() -> None:
    """Create or upgrade the database schema (imgq serve also does this at start)."""
    from imgq.store.db import make_engine
    from imgq.store.db import migrate as run_migrations

    settings = _settings()
    run_migrations(make_engine(settings.database_url))
    typer.echo("database is up to date")


@app.command(epilog=SETTINGS_HELP)
def cleanup() -> None:
    """Run one sweep now: expire old jobs, requeue lost items, fail stuck ones."""
    from imgq.compose import open_runtime
    from imgq.worker.sweeper import sweep

    rt = open_runtime(_settings(), run_migrations=True)
    report = sweep(rt)
    typer.echo(f"expired {len(report.expired_jobs)} jobs, requeued {len(report.requeued)} "
               f"items, failed {len(report.stuck_failed) + len(report.lost_failed)} items")


@app.command("settings")
def show_settings() -> None:
    """Print every setting as IMGQ_NAME=value lines that can be pasted back as an environment
    (secrets and URL passwords are printed as comments, never in clear)."""
    from imgq.config import as_environment

    typer.echo("\n".join(as_environment(_settings())))


from imgq import cli_client, cli_keys  # noqa: E402  (submit, status, download, ops; keys)

cli_client.register(app)
app.add_typer(cli_keys.keys_app, name="keys")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
