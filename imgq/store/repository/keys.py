"""API keys: created, listed, revoked, and found by the digest of their secret."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from imgq.domain.access import ApiKey
from imgq.errors import Conflict, NotFound
from imgq.store.repository.base import RepositoryBase, utcnow
from imgq.store.tables import api_keys


class KeyStore(RepositoryBase):
    def create_key(self, name: str, secret_hash: str, admin: bool = False,
                   max_active_items: int | None = None, max_items_per_day: int | None = None,
                   max_stored_bytes: int | None = None) -> ApiKey:
        key = ApiKey(id=secrets.token_hex(6), name=name, secret_hash=secret_hash, admin=admin,
                     created_at=utcnow(), max_active_items=max_active_items,
                     max_items_per_day=max_items_per_day, max_stored_bytes=max_stored_bytes)
        try:
            with self._write() as conn:
                conn.execute(insert(api_keys).values(**key.__dict__))
        except IntegrityError:
            raise Conflict(f"a key named {name!r} exists already") from None
        return key

    def key_by_hash(self, secret_hash: str) -> ApiKey | None:
        """The key with this digest, if it is not revoked: read from the database on each
        call, so a revoke on any server counts at once everywhere."""
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.secret_hash == secret_hash,
                                                      api_keys.c.revoked_at.is_(None))).first()
        return None if row is None else key_from_row(row)

    def key_by_owner(self, owner: str) -> ApiKey | None:
        """The key (revoked or not) that owns jobs as `owner` (key:<id>)."""
        kind, _, key_id = owner.partition(":")
        if kind != "key":
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return None if row is None else key_from_row(row)

    def list_keys(self, include_revoked: bool = False) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.name)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [key_from_row(r) for r in conn.execute(query).all()]

    def revoke_key(self, name_or_id: str) -> ApiKey:
        """Revoke the key with this name or id; its jobs stay, for admins to see."""
        which = or_(api_keys.c.name == name_or_id, api_keys.c.id == name_or_id)
        with self._write() as conn:
            done = conn.execute(update(api_keys).where(which, api_keys.c.revoked_at.is_(None))
                                .values(revoked_at=utcnow())).rowcount
            row = conn.execute(select(api_keys).where(which)).first()
        if row is None or not done:
            raise NotFound(f"no active key is named {name_or_id!r}")
        return key_from_row(row)


def key_from_row(row: Row[Any]) -> ApiKey:
    return ApiKey(**{c.name: getattr(row, c.name) for c in api_keys.columns})
