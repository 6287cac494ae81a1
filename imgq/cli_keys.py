"""`imgq keys create|list|revoke`: API keys for a server run with IMGQ_AUTH=keys.

The commands work on the database of IMGQ_DATABASE_URL directly, so they need no running
server and no key of their own; whoever may run them may read the database anyway.
"""

from __future__ import annotations

from typing import Annotated

import typer

from imgq.config import Settings, SettingsError, load_settings
from imgq.domain.access import ApiKey, hash_secret, new_secret
from imgq.errors import ImgqError
from imgq.store.db import make_engine, migrate
from imgq.store.repository import Repository

keys_app = typer.Typer(help="API keys (IMGQ_AUTH=keys): create, list, revoke.",
                       no_args_is_help=True, rich_markup_mode=None)
Quota = Annotated[int | None, typer.Option(min=0, show_default=False)]


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"imgq: {exc}", err=True)
        raise typer.Exit(2) from None


def _repository(settings: Settings) -> Repository:
    engine = make_engine(settings.database_url)
    migrate(engine)
    return Repository(engine)


def _quota(own: int | None, default: int) -> str:
    value = default if own is None else own
    text = "no limit" if value == 0 else f"{value:,}"
    return text if own is not None else f"{text} (default)"


def create(
    name: Annotated[str, typer.Argument(help="A name for the key: who or what uses it.")],
    admin: Annotated[bool, typer.Option(
        "--admin", help="The key sees and manages every job and reads /metrics.")] = False,
    max_active_items: Quota = None,
    max_items_per_day: Quota = None,
    max_stored_bytes: Quota = None,
) -> None:
    """Create a key and print its secret, once: only a digest of it is stored.

    Quotas left out follow IMGQ_QUOTA_ACTIVE_ITEMS, IMGQ_QUOTA_ITEMS_PER_DAY and
    IMGQ_QUOTA_STORED_BYTES; 0 means no limit."""
    settings = _settings()
    if not 1 <= len(name) <= 100:
        raise typer.BadParameter("a name has 1 to 100 characters")
    secret = new_secret()
    try:
        key = _repository(settings).create_key(
            name, hash_secret(secret), admin=admin, max_active_items=max_active_items,
            max_items_per_day=max_items_per_day, max_stored_bytes=max_stored_bytes)
    except ImgqError as exc:
        typer.echo(f"imgq: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"created {'admin ' if key.admin else ''}key {key.name!r} (id {key.id}); its "
               "secret, shown only this once:", err=True)
    typer.echo(secret)
    typer.echo("send it as `Authorization: Bearer <secret>` or `X-API-Key: <secret>`",
               err=True)


def list_keys(
    revoked: Annotated[bool, typer.Option("--revoked", help="Show revoked keys too.")] = False,
) -> None:
    """List keys (never their secrets) with their quotas."""
    settings = _settings()
    for key in _repository(settings).list_keys(include_revoked=revoked):
        typer.echo(_describe(key, settings))


def revoke(
    name: Annotated[str, typer.Argument(help="The key's name or id.")],
) -> None:
    """Revoke a key: every API server refuses it from the next request on. Its jobs stay,
    visible to admin keys, until they expire."""
    try:
        key = _repository(_settings()).revoke_key(name)
    except ImgqError as exc:
        typer.echo(f"imgq: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"revoked key {key.name!r} (id {key.id})")


def _describe(key: ApiKey, s: Settings) -> str:
    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
    return (f"{key.id}  {key.name}  {'admin' if key.admin else 'user'}  {state}  "
            f"created {key.created_at:%Y-%m-%d %H:%M}  "
            f"active items {_quota(key.max_active_items, s.quota_active_items)}, "
            f"items/day {_quota(key.max_items_per_day, s.quota_items_per_day)}, "
            f"bytes stored {_quota(key.max_stored_bytes, s.quota_stored_bytes)}")


keys_app.command("create")(create)
keys_app.command("list")(list_keys)
keys_app.command("revoke")(revoke)
