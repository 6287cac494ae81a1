"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from imgq import __version__
from imgq.api import compat, cors, failures, openapi_errors
from imgq.api.access import AccessMiddleware
from imgq.api.auth import documented_security
from imgq.api.edge import Edge
from imgq.api.idempotency import IdempotencyMiddleware
from imgq.api.job_reads import JobReads
from imgq.api.job_watch import JobWatches
from imgq.api.routes import estimates, events, jobs, limits, meta, metrics, models, previews, web
from imgq.dispatch.base import Dispatcher
from imgq.dispatch.sweeper import sweep_queue
from imgq.worker.runtime import Runtime
from imgq.worker.sweeper import SweepReport, sweep_expiry
from imgq.worker.webhooks import WebhookSender

log = logging.getLogger(__name__)

#: The routes that make jobs, where an Idempotency-Key makes a retry safe: imgq's own and the
#: older APIs' (docs/compat.md).
SUBMIT_PATHS = ("/v1/jobs", "/api/jobs/upload", "/api/v1/tasks/create/", "/process-image/",
                "/process-job", "/upload")

DESCRIPTION = """Asynchronous image processing. Submit images with a pipeline of operations,
get job ids at once, poll the job, then download each result or a ZIP.

Every error answers `{"error": {"code": ..., "message": ...}}` with a message safe to show."""


async def _upkeep(rt: Runtime, dispatcher: Dispatcher | None, webhooks: WebhookSender) -> None:
    """The embedded sweeper: leases, re-dispatch and webhooks often, expiry every
    sweep_interval_seconds. Webhooks are handed to their own senders, never waited for."""
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
            await anyio.to_thread.run_sync(webhooks.send_due)
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
        webhooks = WebhookSender(runtime)
        task = asyncio.create_task(_upkeep(runtime, dispatcher, webhooks)) if sweeper else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            webhooks.close()
            if dispatcher is not None:
                await anyio.to_thread.run_sync(dispatcher.stop)
            runtime.close()

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from imgq, not from a CDN.
    app = FastAPIOffline(title="imgq", version=__version__, description=DESCRIPTION,
                         lifespan=lifespan, dependencies=documented_security(settings))
    app.state.runtime = runtime
    app.state.dispatcher = dispatcher
    app.state.job_watches = JobWatches(runtime)
    app.state.job_reads = JobReads(runtime)
    docs = list(app.router.routes)  # the documentation's routes, which FastAPI adds first
    app.include_router(jobs.router)
    app.include_router(meta.router)
    app.include_router(metrics.router)
    for router in (events.router, previews.router, limits.router, models.router,
                   estimates.router):
        app.include_router(router)
    web.install(app)
    for router, tag in compat.enabled(settings, runtime.registry):  # the earlier systems' APIs (docs/compat.md)
        app.include_router(router)
        if tag not in (app.openapi_tags or []):  # a route shared by two APIs comes twice
            app.openapi_tags = [*(app.openapi_tags or []), tag]
    # Every request is matched against the routes in their order: the documentation's go last
    # (no other route has their paths), so that a poller's GET is not compared with them first.
    app.router.routes[:] = [r for r in app.router.routes if r not in docs] + docs
    failures.install(app)
    openapi_errors.install(app)
    app.add_middleware(IdempotencyMiddleware, runtime=runtime, paths=SUBMIT_PATHS)
    app.add_middleware(AccessMiddleware, runtime=runtime)  # keys, rate limits
    # The Host check, the security headers, and the catch-all that answers a failure (the
    # database down while a key is checked: 503) in JSON, in one layer.
    app.add_middleware(Edge, settings=settings)
    cors.install(app, settings)  # outermost: preflights never need a key
    return app
