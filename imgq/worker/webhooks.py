"""Webhooks: signed POSTs of a finished job, sent from the outbox with retries and backoff.

Each delivery carries `Imgq-Signature: t=<unix seconds>,v1=<hex>` where the hex is
HMAC-SHA256(secret, "<t>.<raw body>"), as Stripe signs its events. The secret is that of the
API key that submitted the job, as the hex SHA-256 digest of the key (which is all the server
keeps of it, and which its owner computes from the key); for jobs without a key it is
IMGQ_WEBHOOK_SECRET. A receiver
recomputes it over the raw body, compares in constant time, and refuses old timestamps
(`verify_signature` does all three). Deliveries are at least once: `Imgq-Delivery` is the same
on every retry of one webhook, so a receiver can drop duplicates.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx

from imgq import __version__
from imgq.config import Settings
from imgq.domain.access import SYSTEM
from imgq.domain.retry import backoff
from imgq.domain.views import job_out
from imgq.errors import ImgqError, InvalidRequest, InvalidTransition, NotFound
from imgq.store.repository import Delivery, utcnow
from imgq.worker.runtime import Runtime

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Imgq-Signature"
MAX_URL_LENGTH = 2000
MAX_BACKOFF = 3600.0
SENDERS = 8


class WebhookRefused(ImgqError):
    """The callback URL is not allowed."""

    status_code = 422
    code = "invalid_callback_url"


# -- signing --------------------------------------------------------------------------------
def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The value of the Imgq-Signature header for this body."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(secret: str, body: bytes, header: str, tolerance: float = 300.0,
                     now: float | None = None) -> bool:
    """True when the header signs this body with this secret and is at most `tolerance`
    seconds old. For receivers written in Python; the test suite uses it too."""
    parts: dict[str, list[str]] = {}
    for piece in header.split(","):
        key, _, value = piece.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


# -- where deliveries may go ----------------------------------------------------------------
def check_callback_url(url: str, allow_private: bool) -> str:
    """Refuse what is not an absolute http(s) URL, or names a local address literally.
    Names are resolved again at each delivery (`resolve_public`)."""
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise WebhookRefused(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("callback_url must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise WebhookRefused("callback_url must not carry a user name or password")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise WebhookRefused("callback_url has an invalid port") from None
    host = parts.hostname.rstrip(".").lower()
    if not allow_private:
        if host == "localhost" or host.endswith(".localhost"):
            raise WebhookRefused(f"callback_url points at {host}, a loopback name; set "
                                 "IMGQ_WEBHOOK_ALLOW_PRIVATE=true to allow local receivers")
        address = _literal(host)
        if address is not None and not _is_public(address):
            raise WebhookRefused(f"callback_url points at {host}, a private or local address; "
                                 "set IMGQ_WEBHOOK_ALLOW_PRIVATE=true to allow it")
    return url


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve_public(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to: the first that the name resolves to, after checking every
    one of them (a name with one private address among public ones is refused)."""
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConnectionError(f"cannot resolve {host}: {exc.strerror}") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not allow_private:
        bad = [a for a in addresses if not _is_public(a)]
        if bad:
            raise WebhookRefused(f"{host} resolves to {bad[0]}, a private or local address")
    return str(addresses[0])


# -- delivery -------------------------------------------------------------------------------

class WebhookSender:
    """Deliveries in threads of their own: whoever sweeps hands due webhooks over and goes
    on at once, so a slow receiver delays neither the sweeper (leases, expiry) nor another
    job's webhook; at most `senders` deliveries run at a time, each within
    IMGQ_WEBHOOK_TIMEOUT_SECONDS in all."""

    def __init__(self, rt: Runtime, senders: int = SENDERS) -> None:
        self.rt, self.senders = rt, senders
        self._pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._running = 0

    def send_due(self) -> int:
        """Claim as many due webhooks as there are free senders and start them; return how
        many were started."""
        with self._lock:
            free = self.senders - self._running
        if free <= 0:
            return 0
        lease = self.rt.settings.webhook_timeout_seconds * 3 + 30
        due = self.rt.repo.claim_webhooks(lease, limit=free)
        with self._lock:
            self._running += len(due)
        for delivery in due:
            self._pool.submit(self._send, delivery)
        return len(due)

    def _send(self, delivery: Delivery) -> None:
        try:
            deliver(self.rt, delivery)
        except Exception:  # noqa: BLE001 - the lease brings it back; the sender lives on
            log.exception("webhook delivery failed", extra={"job_id": delivery.job_id})
        finally:
            with self._lock:
                self._running -= 1

    def close(self, wait: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


def deliver_due_webhooks(rt: Runtime) -> int:
    """Send every due webhook once and wait for them (for `imgq cleanup` and tests)."""
    lease = rt.settings.webhook_timeout_seconds * 3 + 30
    due = rt.repo.claim_webhooks(lease)
    if not due:
        return 0
    with ThreadPoolExecutor(max_workers=min(SENDERS, len(due)),
                            thread_name_prefix="webhook") as pool:
        list(pool.map(lambda d: deliver(rt, d), due))
    return len(due)


def deliver(rt: Runtime, delivery: Delivery) -> bool:
    """One attempt; records the outcome. True when the receiver answered 2xx."""
    s = rt.settings
    extra = {"job_id": delivery.job_id, "webhook_id": delivery.id}
    try:
        body = payload(rt, delivery)
        status = _post(delivery, body, signing_secret(rt, delivery), s.webhook_timeout_seconds,
                       s.webhook_allow_private)
        error = None if 200 <= status < 300 else f"the receiver answered HTTP {status}"
        permanent = False
    except WebhookRefused as exc:
        error, permanent = exc.message, True
    except NotFound:
        error, permanent = "the job was deleted", True
    except (httpx.HTTPError, OSError) as exc:
        error, permanent = f"{type(exc).__name__}: {exc}".rstrip(": "), False
    give_up = permanent or delivery.attempts >= s.webhook_max_attempts
    retry_at = None
    if error is None:
        log.info("webhook delivered to %s (attempt %d)", _host(delivery.url), delivery.attempts,
                 extra=extra)
    elif give_up:
        log.warning("webhook to %s given up after %d attempts: %s", _host(delivery.url),
                    delivery.attempts, error, extra=extra)
    else:
        delay = backoff(delivery.attempts, s.webhook_retry_backoff_seconds, MAX_BACKOFF)
        retry_at = utcnow() + timedelta(seconds=delay)
        log.info("webhook to %s failed (%s); retry in %.1f s", _host(delivery.url), error,
                 delay, extra=extra)
    try:
        rt.repo.webhook_done(delivery, error, retry_at)
    except InvalidTransition as exc:
        log.warning("%s", exc.message, extra=extra)
    return error is None


def payload(rt: Runtime, delivery: Delivery) -> bytes:
    """The job exactly as GET /v1/jobs/{id} shows it, now."""
    job = rt.repo.get_job(delivery.job_id, scope=SYSTEM)
    data = job_out(job, delivery.base_url).model_dump(mode="json")
    return json.dumps(data, separators=(",", ":")).encode()


def signing_secret(rt: Runtime, delivery: Delivery) -> str:
    """The secret of the key that submitted the job, else IMGQ_WEBHOOK_SECRET."""
    owner = rt.repo.get_job(delivery.job_id, scope=SYSTEM).owner
    key = rt.repo.key_by_owner(owner) if owner else None
    return key.secret_hash if key is not None else rt.settings.webhook_secret.get_secret_value()


def _post(delivery: Delivery, body: bytes, secret: str, timeout: float,
          allow_private: bool) -> int:
    parts = urlsplit(delivery.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve_public(host, port, allow_private)
    # Connect to the address just checked (no second lookup that could answer otherwise),
    # keep the name for the Host header and TLS.
    netloc = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((parts.scheme, f"{netloc}:{port}", parts.path or "/", parts.query, ""))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"imgq-webhook/{__version__}",
        "Host": parts.netloc.rsplit("@", 1)[-1],
        "Imgq-Event": "job.finished",
        "Imgq-Delivery": delivery.id,
        "Imgq-Attempt": str(delivery.attempts),
        SIGNATURE_HEADER: sign(secret, body),
    }
    return asyncio.run(_send_within(pinned, body, headers, host, timeout))


async def _send_within(url: str, body: bytes, headers: dict[str, str], host: str,
                       timeout: float) -> int:
    """POST and return the status, within `timeout` seconds in all (a receiver that dribbles
    its answer is cut off). The answer's body is never read: only its status counts."""
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                 trust_env=False) as client:
        try:
            async with asyncio.timeout(timeout):
                async with client.stream("POST", url, content=body, headers=headers,
                                         extensions={"sni_hostname": host}) as response:
                    return response.status_code
        except TimeoutError:
            raise httpx.TimeoutException(f"no answer within {timeout:g} s") from None


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"


def accept_callback_url(settings: Settings, url: str, with_key: bool = False) -> str:
    """Check a callback_url given at submit time; 400/422 naming the problem. with_key: the
    job is submitted with an API key, whose secret signs its webhook."""
    if not with_key and not settings.webhook_secret.get_secret_value():
        raise InvalidRequest("this server sends no webhooks to clients without an API key: "
                             "IMGQ_WEBHOOK_SECRET is not set")
    return check_callback_url(url, settings.webhook_allow_private)
