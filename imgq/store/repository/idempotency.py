"""Idempotency-Key answers: reserve a key, record the first answer, replay it, forget it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from imgq.store.repository.base import RepositoryBase, utcnow
from imgq.store.tables import idempotency_keys as keys


@dataclass(frozen=True)
class Answer:
    """What a key holds: the first request's digest and answer (status None: in progress)."""

    request_hash: str | None
    status_code: int | None
    content_type: str | None = None
    location: str | None = None
    body: bytes = b""


IN_PROGRESS = Answer(None, None)


class IdempotencyStore(RepositoryBase):
    def reserve_key(self, client: str, key: str, ttl_seconds: float) -> Answer | None:
        """Take the key for a new request: None when it is ours now, else what it holds."""
        now = utcnow()
        mine = [keys.c.client == client, keys.c.key == key]
        try:
            with self._write() as conn:
                conn.execute(delete(keys).where(*mine, keys.c.expires_at <= now))
                row = conn.execute(select(keys).where(*mine)).first()
                if row is not None:
                    return Answer(row.request_hash, row.status_code, row.content_type,
                                  row.location, row.body or b"")
                conn.execute(insert(keys).values(
                    client=client, key=key, created_at=now,
                    expires_at=now + timedelta(seconds=ttl_seconds)))
        except IntegrityError:  # another request took it this very moment
            return IN_PROGRESS
        return None

    def record_answer(self, client: str, key: str, request_hash: str, answer: Answer) -> None:
        with self._write() as conn:
            conn.execute(update(keys).where(keys.c.client == client, keys.c.key == key).values(
                request_hash=request_hash, status_code=answer.status_code,
                content_type=answer.content_type, location=answer.location, body=answer.body))

    def release_key(self, client: str, key: str) -> None:
        """The request did not make a job: a retry with this key is a new request."""
        with self._write() as conn:
            conn.execute(delete(keys).where(keys.c.client == client, keys.c.key == key))

    def purge_idempotency_keys(self) -> int:
        with self._write() as conn:
            return conn.execute(delete(keys).where(keys.c.expires_at <= utcnow())).rowcount
