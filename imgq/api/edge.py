"""The outermost layer of imgq's own: the Host check, the security headers and the catch-all
for failures, in one pure ASGI middleware.

Each was a middleware of its own, and every request paid for each: a coroutine, and for the
last two a wrapper of `send` that every message went through. Their order is kept: a request
for a host not served here is refused before anything else (with no security headers, as the
check stood outside them); every other answer, a failure's included, carries the security
headers; a failure after the answer started cuts the connection.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgq.api.failures import answer_failure
from imgq.api.headers import add_security_headers, security_headers
from imgq.api.hosts import HostCheck
from imgq.config import Settings


class Edge:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = HostCheck(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            refusal = self.hosts.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        headers = security_headers(scope["path"])
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                add_security_headers(message, headers)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            await answer_failure(exc, scope, started)(scope, receive, send_with_headers)
