"""Who is calling: the principal of a request, as the access middleware left it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.types import Scope as AsgiScope

from imgq.config import AuthMode, Settings
from imgq.domain.access import Principal, Scope, anonymous_owner

#: Where the access middleware puts the request's `Principal` in the ASGI scope.
PRINCIPAL = "imgq.principal"


def anonymous(asgi: AsgiScope) -> Principal:
    """The keyless mode's caller: owns what it submits by its address; ids open jobs."""
    client = asgi.get("client")
    return Principal(Scope(owner=anonymous_owner(client[0] if client else None), ids_open=True))


def principal_of(request: Request) -> Principal:
    found = request.scope.get(PRINCIPAL)
    if not isinstance(found, Principal):  # the access middleware always sets it
        raise RuntimeError("no caller: the access middleware is not installed")
    return found


def scope_of(request: Request) -> Scope:
    return principal_of(request).scope


# FastAPI runs a plain `def` dependency in a worker thread: the async twins below read the
# request in the event loop instead, saving a thread hand-off per dependency per request.
async def _principal(request: Request) -> Principal:
    return principal_of(request)


async def _scope(request: Request) -> Scope:
    return scope_of(request)


ScopeDep = Annotated[Scope, Depends(_scope)]
PrincipalDep = Annotated[Principal, Depends(_principal)]


def documented_security(settings: Settings) -> list[DependsParam]:
    """The two ways to send a key, declared in the OpenAPI document (so /docs offers to
    authorise); the access middleware does the checking."""
    if settings.auth != AuthMode.keys:
        return []
    how = "An API key made with `imgq keys create NAME`."
    return [Security(HTTPBearer(auto_error=False, description=how)),
            Security(APIKeyHeader(name="X-API-Key", auto_error=False, description=how))]
