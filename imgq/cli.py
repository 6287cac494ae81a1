"""The `imgq` command."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from imgq.config import Settings, SettingsError, describe_settings, load_settings
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
    setup_logging(settings.log_level)
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
    """Run the API, the web page, embedded workers and the sweeper."""
    import uvicorn

    from imgq.api.app import create_app
    from imgq.dispatch.embedded import EmbeddedDispatcher

    settings = _settings(host=host, port=port, workers=workers)
    dispatcher = None if no_workers else EmbeddedDispatcher(settings)
    application = create_app(settings, dispatcher)
    log.info("imgq serving on http://%s:%d (database %s, storage %s, %s)", settings.host,
             settings.port, settings.database_url.split("@")[-1], settings.storage_url,
             "no workers" if dispatcher is None else f"{dispatcher.workers} worker processes")
    uvicorn.run(application, host=settings.host, port=settings.port, log_config=None,
                access_log=False, timeout_graceful_shutdown=10)


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
    from imgq.worker.runtime import Runtime
    from imgq.worker.sweeper import sweep

    rt = Runtime.from_settings(_settings(), run_migrations=True)
    report = sweep(rt)
    typer.echo(f"expired {len(report.expired_jobs)} jobs, requeued {len(report.requeued)} "
               f"items, failed {len(report.stuck_failed) + len(report.lost_failed)} items")


@app.command("settings")
def show_settings() -> None:
    """Print every setting with its environment variable and current value."""
    settings = _settings()
    for name in Settings.model_fields:
        typer.echo(f"IMGQ_{name.upper()}={getattr(settings, name)}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
