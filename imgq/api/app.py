"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from imgq import __version__
from imgq.api import compat, cors
from imgq.api.routes import events, jobs, limits, meta, metrics, models, previews, web
from imgq.dispatch.base import Dispatcher
from imgq.dispatch.sweeper import sweep_queue
from imgq.errors import ImgqError
from imgq.worker.runtime import Runtime
from imgq.worker.sweeper import SweepReport, sweep_expiry
from imgq.worker.webhooks import deliver_due_webhooks

log = logging.getLogger(__name__)

DESCRIPTION = """Asynchronous image processing. Submit images with a pipeline of operations,
get job ids at once, poll the job, then download each result or a ZIP.

Every error answers `{"error": {"code": ..., "message": ...}}` with a message safe to show."""


async def _upkeep(rt: Runtime, dispatcher: Dispatcher | None) -> None:
    """The embedded sweeper: leases and re-dispatch often, expiry every sweep_interval_seconds."""
    tick = max(0.5, min(5.0, rt.settings.lease_seconds / 2, rt.settings.sweep_interval_seconds))
    loop = asyncio.get_running_loop()
    last_expiry = float("-inf")
    while True:
        report = SweepReport()
        try:
            await anyio.to_thread.run_sync(sweep_queue, rt, dispatcher, report)
            if loop.time() - last_expiry >= rt.settings.sweep_interval_seconds:
                await anyio.to_thread.run_sync(sweep_expiry, rt, report)
                last_expiry = loop.time()
            await anyio.to_thread.run_sync(deliver_due_webhooks, rt)
        except Exception:
            log.exception("sweep failed; trying again in %.0f s", tick)
        await asyncio.sleep(tick)


def create_app(runtime: Runtime, dispatcher: Dispatcher | None = None,
               sweeper: bool = True) -> FastAPI:
    """The API, the page and the older APIs around a runtime (built by `imgq.compose`); the
    app closes the runtime when it stops. `sweeper`: run the embedded sweeper."""
    settings = runtime.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if dispatcher is not None:
            dispatcher.start()
        task = asyncio.create_task(_upkeep(runtime, dispatcher)) if sweeper else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if dispatcher is not None:
                await anyio.to_thread.run_sync(dispatcher.stop)
            runtime.close()

    app = FastAPI(title="imgq", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.runtime = runtime
    app.state.dispatcher = dispatcher
    app.include_router(jobs.router)
    app.include_router(meta.router)
    app.include_router(metrics.router)
    for router in (events.router, previews.router, limits.router, models.router):
        app.include_router(router)
    web.install(app)
    for router, tag in compat.enabled(settings, runtime.registry):  # the earlier systems' APIs (docs/compat.md)
        app.include_router(router)
        app.openapi_tags = [*(app.openapi_tags or []), tag]
    _add_error_handlers(app)
    cors.install(app, settings)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImgqError)
    async def imgq_error(request: Request, exc: ImgqError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("request failed: %s", exc.message)
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        body = {"code": "invalid_request", "message": "; ".join(parts)}
        return JSONResponse({"error": body}, status_code=422)
