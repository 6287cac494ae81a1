"""CORS: web pages served from the origins in IMGQ_CORS_ORIGINS may call every route."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from imgq.config import Settings

#: Request headers a page may send: content negotiation plus what API keys, idempotent
#: submissions and resumed event streams use.
ALLOWED_HEADERS = ["Accept", "Accept-Language", "Content-Language", "Content-Type",
                   "Authorization", "X-API-Key", "Idempotency-Key", "Last-Event-ID"]
#: Response headers a page may read besides the CORS-safelisted ones.
EXPOSED_HEADERS = ["Location", "Content-Disposition", "Retry-After"]
PREFLIGHT_MAX_AGE = 600


def install(app: FastAPI, settings: Settings) -> None:
    """Answer preflights and add CORS headers; nothing at all when no origin is configured."""
    if not settings.cors_origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        allow_credentials=False,
        max_age=PREFLIGHT_MAX_AGE,
    )
