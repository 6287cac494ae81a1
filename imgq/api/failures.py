"""Every failure answers the documented JSON body `{"error": {"code", "message"}}`.

imgq's own errors carry their status and a safe message. What the infrastructure raises is
named by its cause (the database, file storage, a full or read-only disk) as a 503 with
Retry-After, never blamed on the request. Anything else is a bug: a 500 with a generic
message, logged with its traceback. The mapping lives here, in one place, for the v1 API and
the older APIs (which render the same errors in their own shapes).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgq.errors import ImgqError, InvalidRequest, NotFound
from imgq.worker.classify import infrastructure_cause

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large",
               400: "invalid_request", 415: "unsupported_media_type"}


def public_error(exc: BaseException) -> ImgqError | None:
    """The client-facing error for `exc`, or None when it is an unexpected bug. The server's
    trouble is named by the one classification the workers use too (`infrastructure_cause`)."""
    if isinstance(exc, ImgqError):
        return exc
    if isinstance(exc, sa.DataError):  # e.g. a NUL character in an id, on PostgreSQL
        return InvalidRequest("a value in the request cannot be used (a control character?)")
    if isinstance(exc, RecursionError):
        return InvalidRequest("the request is nested too deeply")
    if isinstance(exc, OverflowError):
        return InvalidRequest("a number in the request is too large")
    return infrastructure_cause(exc)


def error_response(err: ImgqError) -> JSONResponse:
    return JSONResponse({"error": err.to_dict()}, status_code=err.status_code,
                        headers=err.headers())


def install(app: FastAPI) -> None:
    """The exception handlers; the catch-all (`imgq.api.edge.Edge`) is added by the app where
    it belongs among the middleware (inside CORS, so that its answers carry CORS headers)."""

    @app.exception_handler(ImgqError)
    async def imgq_error(request: Request, exc: ImgqError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        body = {"code": "invalid_request", "message": "; ".join(parts)[:2000]}
        return JSONResponse({"error": body}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err: ImgqError = NotFound(f"no route {request.url.path[:200]}")
        else:
            err = ImgqError(str(exc.detail))
            err.status_code = exc.status_code
            err.code = _HTTP_CODES.get(exc.status_code, "http_error")
        response = error_response(err)
        response.headers.update(exc.headers or {})
        return response


class CatchAll:
    """Turns an exception that no handler took into the JSON body, unless the response has
    already started (then the connection is cut, so a client never takes a truncated body
    for a whole one). imgq's app has this in `imgq.api.edge.Edge`; alone, it serves a bare
    app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            await answer_failure(exc, scope, started)(scope, receive, send)


def answer_failure(exc: Exception, scope: Scope, started: bool) -> JSONResponse:
    """The answer to an exception that no handler took, logged as its cause asks; re-raised
    when the answer has already started (the server then cuts the connection)."""
    where = f"{scope.get('method')} {str(scope.get('path'))[:200]}"
    if started:
        log.error("%s failed while its answer was being sent", where, exc_info=exc)
        raise exc
    err = public_error(exc)
    if err is None:
        log.error("%s failed unexpectedly", where, exc_info=exc)
        err = ImgqError("an unexpected error occurred on the server; it has been logged")
    elif err.status_code >= 500:
        log.warning("%s: %s (%s)", where, err.message, type(exc).__name__)
    return error_response(err)
