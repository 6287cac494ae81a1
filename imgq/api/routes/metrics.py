"""GET /metrics in the Prometheus text format (needs the `fleet` extra: prometheus-client)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request, Response

from imgq.api.deps import RuntimeDep
from imgq.errors import ImgqError

router = APIRouter()


class MetricsUnavailable(ImgqError):
    """Metrics need the prometheus-client package: pip install 'imgq[fleet]'."""

    status_code = 501
    code = "metrics_unavailable"


@router.get("/metrics", tags=["health"], summary="Prometheus metrics",
            description="Items by state, queue depth, failures by error code and processing "
            "seconds per pipeline, all read from the database at scrape time.",
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request, rt: RuntimeDep) -> Response:
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from imgq.metrics import make_registry
    except ImportError:
        raise MetricsUnavailable() from None
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = request.app.state.metrics_registry = make_registry(rt.repo)
    body = await anyio.to_thread.run_sync(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
