"""Security headers on every answer; the page's strict Content-Security-Policy."""

from __future__ import annotations

from starlette.types import Message

#: The page loads its own scripts, styles and images only (no inline script, nothing from
#: another origin); previews it fetches with a key are shown as blob: URLs.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; "
            "base-uri 'none'; frame-ancestors 'none'")
#: Everything else (the API, results, the older systems' pages, the docs) may not be framed.
OTHER_CSP = "frame-ancestors 'none'"
PAGE_PATHS = frozenset({"/", "/jobs"})
COMMON = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
          "X-Frame-Options": "DENY"}

Raw = list[tuple[bytes, bytes]]


def _raw(csp: str) -> Raw:
    pairs = {**COMMON, "Content-Security-Policy": csp}
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs.items()]


#: Built once: the headers of a page answer, and of every other answer.
_PAGE, _OTHER = _raw(PAGE_CSP), _raw(OTHER_CSP)


def security_headers(path: str) -> Raw:
    """The security headers of an answer to `path` (names in lower case, as ASGI sends them)."""
    return _PAGE if path in PAGE_PATHS or path.startswith("/static/") else _OTHER


def add_security_headers(start: Message, headers: Raw) -> None:
    """Add to an `http.response.start` message each of `headers` that it does not set itself
    (a route may set its own Content-Security-Policy)."""
    raw = start["headers"] = list(start.get("headers", ()))
    present = {name for name, _ in raw}
    raw.extend(pair for pair in headers if pair[0] not in present)
