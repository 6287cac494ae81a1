"""GET /v1/jobs/{id}/items/{n}/preview: a small WebP of an item's input or result.

The page shows these instead of the files themselves: a result may be 100 megapixels, or in
a format the browser cannot show (TIFF, HEIC); a preview is a few kilobytes in every case.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from enum import Enum
from typing import Annotated

import anyio
import pyvips
from fastapi import APIRouter, Query, Response

from imgq.api.auth import ScopeDep
from imgq.api.deps import RuntimeDep, errors, load_item
from imgq.domain.status import Status
from imgq.errors import Conflict, DecodeError, Gone
from imgq.worker.runtime import Runtime

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
CACHE_ENTRIES = 256


class Which(str, Enum):
    input = "input"
    result = "result"


class _Cache:
    """A small LRU of rendered previews; blob keys never change their bytes, so no expiry."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> bytes | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: tuple[str, int], value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.size:
                self._data.popitem(last=False)


_cache = _Cache(CACHE_ENTRIES)


@router.get(
    "/{job_id}/items/{index}/preview", summary="A small preview of an item's input or result",
    responses={200: {"content": {"image/webp": {}}, "description": "A WebP at most `size` "
                     "pixels on its longer side."}, **errors(404, 409, 410, 422)},
)
async def preview(
    job_id: str, index: int, rt: RuntimeDep, scope: ScopeDep,
    of: Annotated[Which, Query(description="The uploaded image or the result.")] = Which.input,
    size: Annotated[int, Query(ge=16, le=1024, description="Longest side in pixels.")] = 480,
) -> Response:
    job, item = await load_item(rt, scope, job_id, index)
    key = item.input_key if of == Which.input else item.result_key
    if of == Which.input and not key:
        raise Conflict(f"item {index} has no input image: its first step made it",
                       status=item.status.value)
    if of == Which.result and (item.status != Status.succeeded or not key):
        raise Conflict(f"item {index} has no result: it is {item.status.value}",
                       status=item.status.value)
    assert key is not None
    body = _cache.get((key, size))
    if body is None:
        body = await anyio.to_thread.run_sync(_render, rt, key, size, item.input_name)
        _cache.put((key, size), body)
    return Response(body, media_type="image/webp",
                    headers={"Cache-Control": "private, max-age=600"})


def _render(rt: Runtime, key: str, size: int, name: str) -> bytes:
    try:
        with rt.blobs.open_local(key) as path:
            image = pyvips.Image.thumbnail(str(path), size, height=size, size="down")
            if image.interpretation not in ("srgb", "b-w"):
                image = image.colourspace("srgb")
            if image.format != "uchar":
                image = image.cast("uchar")
            return bytes(image.webpsave_buffer(Q=78, keep="none"))
    except pyvips.Error:
        raise DecodeError(f"{name}: no preview, the image could not be decoded") from None
    except KeyError:
        raise Gone() from None
