"""Who may call: the API key check (IMGQ_AUTH=keys), the anonymous caller of the keyless mode,
and the rate limit of anonymous submissions.

A pure ASGI middleware, so that every route (the v1 API, the older systems' APIs, /metrics,
the docs) is behind it and none can be forgotten. It leaves the request's `Principal` in the
ASGI scope for the routes (`imgq.api.auth`). Keys are looked up in the database on every
request, never cached: a key revoked on one API server is refused by all at once.
"""

from __future__ import annotations

import ipaddress
import logging
import time

import anyio
from limits import parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from imgq.api.auth import PRINCIPAL, anonymous
from imgq.config import AuthMode, Settings
from imgq.domain.access import Principal, Quotas, Scope, hash_secret
from imgq.errors import Forbidden, ImgqError, RateLimited, Unauthorized
from imgq.store.repository import Repository
from imgq.worker.runtime import Runtime

log = logging.getLogger(__name__)

#: What needs no key: health checks and the page (which asks for the key itself).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/jobs"})
OPEN_PREFIXES = ("/static/",)
ADMIN_PATHS = frozenset({"/metrics"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOBODY = Principal(Scope(owner=None))


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warnings(settings: Settings, repo: Repository) -> list[str]:
    """What `imgq serve` says loudly at start about how exposed, or how closed, it is."""
    if settings.auth == AuthMode.keys and not repo.list_keys():
        return ["IMGQ_AUTH=keys but there is no API key yet, so every request will be refused: "
                "create one with `imgq keys create NAME` (--admin for one that sees all jobs)."]
    if settings.auth == AuthMode.none and not is_loopback(settings.host):
        return [f"IMGQ_AUTH=none while listening on {settings.host}: anyone who can reach this "
                "address can submit jobs, and open, cancel or delete any job whose id they "
                "learn. Set IMGQ_AUTH=keys and create keys with `imgq keys create NAME`, or "
                "listen on 127.0.0.1 (README, \"Running it on a network\")."]
    return []


class AccessMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app, self.rt = app, runtime
        settings = runtime.settings
        self.keys = settings.auth == AuthMode.keys
        self.rates = parse_many(settings.anonymous_rate_limit) if settings.anonymous_rate_limit else []
        self.limiter = (MovingWindowRateLimiter(rate_storage(settings.rate_limit_storage_url))
                        if self.rates else None)
        self.shared = bool(settings.rate_limit_storage_url)
        self.storage_down_logged = 0.0
        self.trust_loopback = settings.trust_loopback_clients
        self.quotas = Quotas(active_items=settings.quota_active_items,
                             items_per_day=settings.quota_items_per_day,
                             stored_bytes=settings.quota_stored_bytes)

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            scope[PRINCIPAL] = await self._principal(scope)
        except ImgqError as exc:
            body = {"error": exc.to_dict()}
            await JSONResponse(body, exc.status_code, headers=exc.headers())(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _principal(self, scope: AsgiScope) -> Principal:
        path: str = scope["path"]
        if not self.keys:
            caller = anonymous(scope)
            if scope["method"] in WRITE_METHODS:
                if self.shared:  # a network round trip: keep it off the event loop
                    await anyio.to_thread.run_sync(self._limit, scope)
                else:
                    self._limit(scope)
            return caller
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return NOBODY
        secret = _secret_of(scope)
        if not secret:
            raise Unauthorized()
        key = await anyio.to_thread.run_sync(self.rt.repo.key_by_hash, hash_secret(secret))
        if key is None:
            raise Unauthorized("this API key is unknown or was revoked; send a valid key as "
                               "`Authorization: Bearer <key>` or `X-API-Key: <key>`")
        if path in ADMIN_PATHS and not key.admin:
            raise Forbidden(f"{path} needs an admin key (imgq keys create NAME --admin)")
        return Principal(Scope(owner=key.owner, sees_all=key.admin), key,
                         self.quotas.overridden_by(key))

    def _limit(self, scope: AsgiScope) -> None:
        """Count a write of an anonymous client against IMGQ_ANONYMOUS_RATE_LIMIT."""
        client = scope.get("client")
        address = client[0] if client else "unknown"
        if self.limiter is None or (self.trust_loopback and is_loopback(address)):
            return
        for rate in self.rates:
            try:
                allowed = self.limiter.hit(rate, "imgq-anonymous", address)
            except Exception as exc:  # the shared storage is down: let the write through
                self._storage_down(exc)
                return
            if not allowed:
                reset, _ = self.limiter.get_window_stats(rate, "imgq-anonymous", address)
                raise RateLimited(
                    f"too many submissions from {address}: the limit without an API key is "
                    f"{rate} (IMGQ_ANONYMOUS_RATE_LIMIT)", retry_after=reset - time.time(),
                    limit=str(rate))


    def _storage_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self.storage_down_logged >= 60:  # once a minute, not once per request
            self.storage_down_logged = now
            log.warning("the rate limit storage (IMGQ_RATE_LIMIT_STORAGE_URL) cannot be "
                        "reached, so anonymous writes are not limited until it is back: %s", exc)


def rate_storage(url: str) -> Storage:
    """The anonymous rate limit's counters: this server's memory, or one storage for a fleet."""
    storage = storage_from_string(url) if url else MemoryStorage()
    assert isinstance(storage, Storage)  # the setting's validator refused the async+ forms
    return storage


def _secret_of(scope: AsgiScope) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None
