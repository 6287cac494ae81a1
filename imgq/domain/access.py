"""Who is asking, and which jobs that lets them see.

A job belongs to its owner: the API key that submitted it (`key:<id>`), or, in the keyless
mode, the anonymous client's address (`anon:<address>`). Every read and write of a job in the
repository takes a `Scope` and filters on it, so no route can forget to.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

#: Every secret starts so, which makes leaked keys easy to search for in logs and code.
SECRET_PREFIX = "imgq_"


@dataclass(frozen=True)
class Scope:
    """Which jobs a caller may see and change.

    owner: whose jobs are listed, and who owns the jobs this caller creates (None: nobody's,
    so lists are empty unless `sees_all`).
    sees_all: an admin key, or imgq's own processes (workers, sweeper).
    ids_open: the keyless mode, where a job's id is its capability: knowing it opens the job
    (read, cancel, delete), but lists still show only the caller's own jobs.
    """

    owner: str | None
    sees_all: bool = False
    ids_open: bool = False

    def opens(self, owner: str | None, by_id: bool = True) -> bool:
        """Whether a job of this owner is open to the scope: what the repository's WHERE
        clause (`store.repository.base.visible`) decides, for jobs already in memory."""
        if self.sees_all or (by_id and self.ids_open):
            return True
        return self.owner is not None and owner == self.owner


#: imgq's own processes: workers, the sweeper, the webhook sender, the CLI's admin commands.
SYSTEM = Scope(owner=None, sees_all=True)


def key_owner(key_id: str) -> str:
    return f"key:{key_id}"


def anonymous_owner(address: str | None) -> str:
    return f"anon:{address or 'unknown'}"[:80]


@dataclass(frozen=True)
class ApiKey:
    """An API key as stored: never its secret, only the secret's SHA-256 digest. A quota left
    None takes the server's default (IMGQ_QUOTA_*)."""

    id: str
    name: str
    secret_hash: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None = None
    max_active_items: int | None = None
    max_items_per_day: int | None = None
    max_stored_bytes: int | None = None

    @property
    def owner(self) -> str:
        return key_owner(self.id)


@dataclass(frozen=True)
class Quotas:
    """What one owner may use; 0 means no limit."""

    active_items: int = 0  # queued or running at once
    items_per_day: int = 0  # submitted per UTC day
    stored_bytes: int = 0  # inputs and results kept

    def overridden_by(self, key: ApiKey) -> Quotas:
        return Quotas(
            active_items=_first(key.max_active_items, self.active_items),
            items_per_day=_first(key.max_items_per_day, self.items_per_day),
            stored_bytes=_first(key.max_stored_bytes, self.stored_bytes))


def _first(own: int | None, default: int) -> int:
    return default if own is None else own


@dataclass(frozen=True)
class Principal:
    """The caller of one request: its scope, its key when it sent one, and the quotas that
    hold for what it submits (None: none, as for clients without a key)."""

    scope: Scope
    key: ApiKey | None = None
    quotas: Quotas | None = None


def new_secret() -> str:
    """A key's secret: 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """What is stored of a secret. A plain SHA-256 suffices: the secret is random, not a
    password a dictionary could guess, and it is checked on every request."""
    return hashlib.sha256(secret.encode()).hexdigest()
