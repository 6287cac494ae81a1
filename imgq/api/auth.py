"""Who is calling: the principal of a request, as the access middleware left it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.types import Scope as AsgiScope

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


ScopeDep = Annotated[Scope, Depends(scope_of)]
PrincipalDep = Annotated[Principal, Depends(principal_of)]
