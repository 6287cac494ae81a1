"""GET /v1/estimate: how long a pipeline's AI steps will take on images of given sizes here.

The page asks it with the sizes it reads from the chosen files, before anything is uploaded;
the answer to POST /v1/jobs gives the same figure per item.
"""

from __future__ import annotations

import re
from typing import Annotated

import anyio
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from imgq.api.deps import RuntimeDep, errors
from imgq.domain.pipeline import parse_pipeline
from imgq.errors import InvalidRequest
from imgq.ops.ai_support import estimate_pipeline
from imgq.ops.base import BoundStep

router = APIRouter(tags=["operations"])
_SIZE = re.compile(r"^\s*(\d{1,6})\s*[x×]\s*(\d{1,6})\s*$")
MAX_SIZES = 100


class SizeEstimate(BaseModel):
    width: int
    height: int
    estimated_seconds: float | None = Field(
        description="Seconds of AI work for this size; null when the pipeline has no AI step "
        "(or one after a resize, thumbnail or crop, whose output size is not known yet).")
    basis: str | None = Field(description="What the figure rests on: measured on this machine, "
                              "or not measured here yet.")


class EstimateOut(BaseModel):
    estimates: list[SizeEstimate]


def parse_sizes(raw: str, max_pixels: int) -> list[tuple[int, int]]:
    sizes = []
    for part in raw.split(","):
        match = _SIZE.match(part)
        if match is None:
            raise InvalidRequest(f"sizes: {part.strip()!r} is not WIDTHxHEIGHT, e.g. 640x480")
        width, height = int(match[1]), int(match[2])
        if not (width and height) or width * height > max_pixels:
            raise InvalidRequest(f"sizes: {width}×{height} is outside 1 to {max_pixels:,} pixels "
                                 "(IMGQ_MAX_PIXELS)")
        sizes.append((width, height))
    if len(sizes) > MAX_SIZES:
        raise InvalidRequest(f"sizes: {len(sizes)} sizes, more than the limit of {MAX_SIZES} sizes")
    return sizes


def _estimate(steps: list[BoundStep], sizes: list[tuple[int, int]]) -> EstimateOut:
    out = []
    for width, height in sizes:
        estimate = estimate_pipeline(steps, width, height)
        out.append(SizeEstimate(
            width=width, height=height,
            estimated_seconds=None if estimate is None else round(estimate.seconds, 1),
            basis=None if estimate is None else estimate.basis))
    return EstimateOut(estimates=out)


@router.get("/v1/estimate", response_model=EstimateOut, responses=errors(400, 422),
            summary="Estimated seconds of a pipeline's AI steps for given image sizes")
async def estimate(
    rt: RuntimeDep,
    pipeline: Annotated[str, Query(description="The pipeline, as POST /v1/jobs takes it.")],
    sizes: Annotated[str, Query(description="Comma-separated WIDTHxHEIGHT, e.g. 640x480,4000x3000")],
) -> EstimateOut:
    parsed = parse_sizes(sizes, rt.settings.max_pixels)
    steps = await anyio.to_thread.run_sync(rt.registry.bind, parse_pipeline(pipeline))
    return await anyio.to_thread.run_sync(_estimate, steps, parsed)
