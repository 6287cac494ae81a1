"""`Idempotency-Key` on submits: a client that retries after a lost answer gets the first
job's answer again, never a second job.

The first answer (status, body, Location) is kept in the database for
IMGQ_IDEMPOTENCY_TTL_SECONDS per key and client (the API key's owner, or the client's address
in the keyless mode), so it holds across a fleet of API servers. A retry with the same key and
a different request is a 422; one while the first is still being processed is a 409. An answer
that made no job (an error) is not kept: the client may correct the request and send it again.

The request is compared by a SHA-256 of its method, path and body as it streams through (the
multipart boundary left out, since a client draws a new one for each try): nothing is held in
memory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import anyio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgq.api.auth import PRINCIPAL
from imgq.domain.access import Principal
from imgq.errors import Conflict, ImgqError, InvalidParameters, InvalidRequest
from imgq.store.repository import Answer
from imgq.worker.runtime import Runtime

HEADER = b"idempotency-key"
REPLAYED = "Idempotent-Replayed"
MAX_ANSWER_BYTES = 1024 * 1024  # a job's JSON is far smaller; a larger answer is not kept
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.IGNORECASE)


class BodyDigest:
    """SHA-256 of a request body with its multipart boundary left out, fed chunk by chunk."""

    def __init__(self, method: str, path: str, content_type: bytes) -> None:
        self._hash = hashlib.sha256(f"{method} {path}\n".encode())
        found = _BOUNDARY.search(content_type)
        self._boundary = found.group(1) if found else b""
        self._tail = b""

    def update(self, chunk: bytes) -> None:
        if not self._boundary:
            self._hash.update(chunk)
            return
        data = (self._tail + chunk).replace(self._boundary, b"")
        keep = len(self._boundary) - 1  # a boundary may begin in this chunk and end in the next
        self._tail = data[-keep:] if keep else b""
        self._hash.update(data[: len(data) - len(self._tail)])

    def hexdigest(self) -> str:
        self._hash.update(self._tail)
        self._tail = b""
        return self._hash.hexdigest()


class IdempotencyMiddleware:
    """Wraps the submit routes named in `paths` (POST only)."""

    def __init__(self, app: ASGIApp, runtime: Runtime, paths: Iterable[str]) -> None:
        self.app, self.rt = app, runtime
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, HEADER) if _wrapped(scope, self.paths) else None
        if key is None:
            await self.app(scope, receive, send)
            return
        try:
            await self._handle(scope, receive, send, key.decode("latin-1"))
        except ImgqError as exc:
            await JSONResponse({"error": exc.to_dict()}, exc.status_code)(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        if not _KEY.match(key):
            raise InvalidRequest("Idempotency-Key must be 1 to 255 visible ASCII characters")
        client = _client(scope)
        digest = BodyDigest(scope["method"], scope["path"],
                            _header(scope, b"content-type") or b"")
        ttl = self.rt.settings.idempotency_ttl_seconds
        held = await anyio.to_thread.run_sync(self.rt.repo.reserve_key, client, key, ttl)
        if held is not None:
            await _answer_again(held, digest, scope, receive, send)
            return
        recorder = _Recorder(send)
        hashing = _hashing(receive, digest)
        try:
            await self.app(scope, hashing, recorder.send)
        finally:
            answer = recorder.answer()
            if answer is not None and getattr(hashing, "finished", False):
                await anyio.to_thread.run_sync(self.rt.repo.record_answer, client, key,
                                               digest.hexdigest(), answer)
            else:
                await anyio.to_thread.run_sync(self.rt.repo.release_key, client, key)


async def _answer_again(held: Answer, digest: BodyDigest, scope: Scope, receive: Receive,
                        send: Send) -> None:
    if held.status_code is None:
        raise Conflict("a request with this Idempotency-Key is still being processed; "
                       "try again in a moment")
    while True:  # read the retry's body through, only to compare it with the first
        message = await receive()
        digest.update(message.get("body", b""))
        if not message.get("more_body", False):
            break
    if digest.hexdigest() != held.request_hash:
        raise InvalidParameters("this Idempotency-Key was used for a different request; use "
                                "a new key for a new request")
    headers = [(b"content-type", (held.content_type or "application/json").encode()),
               (b"content-length", str(len(held.body)).encode()),
               (REPLAYED.lower().encode(), b"true")]
    if held.location:
        headers.append((b"location", held.location.encode("latin-1")))
    await send({"type": "http.response.start", "status": held.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": held.body})


class _Recorder:
    """Passes the answer on and keeps a copy of a successful one."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.complete = False
        self.too_big = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = {k.lower(): v for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            self.too_big = self.too_big or len(self.body) > MAX_ANSWER_BYTES
            if self.too_big:
                self.body.clear()
            self.complete = not message.get("more_body", False)
        await self._send(message)

    def answer(self) -> Answer | None:
        if not (200 <= self.status < 300 and self.complete and not self.too_big):
            return None
        location = self.headers.get(b"location")
        return Answer(None, self.status,
                      self.headers.get(b"content-type", b"application/json").decode("latin-1"),
                      location.decode("latin-1") if location else None, bytes(self.body))


def _hashing(receive: Receive, digest: BodyDigest) -> Receive:
    async def hashing_receive() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            digest.update(message.get("body", b""))
            if not message.get("more_body", False):
                hashing_receive.finished = True  # type: ignore[attr-defined]
        return message

    hashing_receive.finished = False  # type: ignore[attr-defined]
    return hashing_receive


def _wrapped(scope: Scope, paths: frozenset[str]) -> bool:
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in paths


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None


def _client(scope: Scope) -> str:
    """The API key's owner, or (keyless) the owner the client's address stands for."""
    principal = scope.get(PRINCIPAL)
    if isinstance(principal, Principal) and principal.scope.owner:
        return principal.scope.owner[:80]
    client = scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"[:80]
