"""GET /v1/jobs/{id}/items/{n}/preview: a small WebP of an item's input or result.

The page shows these instead of the files themselves: a result may be 100 megapixels, or in
a format the browser cannot show (TIFF, HEIC); a preview is a few kilobytes in every case.

They are made within a memory budget (imgq.api.thumbnails): shrink-on-load where the format
allows it, a reservation of the decoded size where it does not.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Query, Response

from imgq.api.auth import ScopeDep
from imgq.api.deps import RuntimeDep, errors, load_item
from imgq.api.thumbnails import thumbnail
from imgq.domain.status import Status
from imgq.errors import Conflict

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class Which(str, Enum):
    input = "input"
    result = "result"


@router.get(
    "/{job_id}/items/{index}/preview", summary="A small preview of an item's input or result",
    responses={200: {"content": {"image/webp": {}}, "description": "A WebP at most `size` "
                     "pixels on its longer side."}, **errors(404, 409, 410, 413, 422, 429)},
)
async def preview(
    job_id: str, index: int, rt: RuntimeDep, scope: ScopeDep,
    of: Annotated[Which, Query(description="The uploaded image or the result.")] = Which.input,
    size: Annotated[int, Query(ge=16, le=1024, description="Longest side in pixels.")] = 480,
) -> Response:
    item = await load_item(rt, scope, job_id, index)
    key = item.input_key if of == Which.input else item.result_key
    if of == Which.input and not key:
        raise Conflict(f"item {index} has no input image: its first step made it",
                       status=item.status.value)
    if of == Which.result and (item.status != Status.succeeded or not key):
        raise Conflict(f"item {index} has no result: it is {item.status.value}",
                       status=item.status.value)
    assert key is not None
    body = await thumbnail(rt, key, item.input_name, size)
    return Response(body, media_type="image/webp",
                    headers={"Cache-Control": "private, max-age=600"})
