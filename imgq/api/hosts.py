"""The Host header check (IMGQ_ALLOWED_HOSTS), which closes DNS rebinding.

A page on evil.example can make its own name resolve to 127.0.0.1 and then call a server on
the user's machine as if it were same-origin; the only trace is the Host header, which still
says evil.example. Starlette's TrustedHostMiddleware does this check but cuts an IPv6 address
at its first colon and answers a bare "Invalid host header"; this one knows [::1]:8000 and
says which setting to change. Health checks are exempt: load balancers and orchestrators
probe them by address, and they tell nothing.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import Scope

from imgq.api.access import is_loopback
from imgq.config import Settings

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


def allowed_hosts(settings: Settings) -> list[str]:
    """The setting; when empty, loopback names for a server bound to loopback, else any."""
    if settings.allowed_hosts:
        return [h.lower() for h in settings.allowed_hosts]
    return ["localhost", "*.localhost", "127.0.0.1", "::1"] if is_loopback(settings.host) else ["*"]


def host_name(header: str) -> str:
    """The name of a Host header without its port: example.com:80 → example.com, [::1]:8 → ::1."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_allowed(name: str, allowed: list[str]) -> bool:
    for pattern in allowed:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    # 127.0.0.2 and the like are as local as 127.0.0.1
    return "127.0.0.1" in allowed and is_loopback(name)


class HostCheck:
    """The check itself; `imgq.api.edge.Edge` makes it first, for HTTP and WebSocket."""

    def __init__(self, settings: Settings) -> None:
        self.allowed = allowed_hosts(settings)
        self.open = self.allowed == ["*"]
        self.loopback_only = not settings.allowed_hosts

    def refusal(self, scope: Scope) -> JSONResponse | None:
        """The 400 for a request whose Host is not served here; None when it is."""
        if self.open or scope["path"] in HEALTH_PATHS:
            return None
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        name = host_name(header)
        if host_allowed(name, self.allowed):
            return None
        why = ("this server listens on a loopback address, so it answers only to local names "
               "unless IMGQ_ALLOWED_HOSTS lists others" if self.loopback_only
               else "it is not in IMGQ_ALLOWED_HOSTS")
        body = {"error": {"code": "invalid_host",
                          "message": f"the host name {name or '(none)'!r} is not served here: "
                                     f"{why}"}}
        return JSONResponse(body, status_code=400)
