"""GET /v1/jobs/{id}/items/{n}/preview: a small WebP of an item's input or result.

The page shows these instead of the files themselves: a result may be 100 megapixels, or in
a format the browser cannot show (TIFF, HEIC); a preview is a few kilobytes in every case.

Previews are made with libvips' shrink-on-load where the format allows it (JPEG, WebP,
non-interlaced PNG, TIFF stream through in a few megabytes). Interlaced PNG, progressive
JPEG, GIF, HEIF and AVIF decode whole first: each render reserves its decoded size from
IMGQ_PREVIEW_MEMORY_BYTES, waits its turn, and identical requests share one render.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from pathlib import Path
from enum import Enum
from typing import Annotated

import anyio
import pyvips
from fastapi import APIRouter, Query, Response

from imgq.api.auth import ScopeDep
from imgq.api.budget import MemoryBudget, SingleFlight
from imgq.api.deps import RuntimeDep, errors, load_item
from imgq.domain.status import Status
from imgq.errors import Conflict, DecodeError, Gone, ImageTooLarge
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
_flight: SingleFlight[bytes] = SingleFlight()
_budgets: dict[int, MemoryBudget] = {}
#: What a render that shrinks while it loads may hold: a few strips and the small image.
STREAMED_COST = 16 * 1024 * 1024
_SAMPLE_BYTES = {"uchar": 1, "char": 1, "ushort": 2, "short": 2, "uint": 4, "int": 4,
                 "float": 4, "double": 8, "complex": 8, "dpcomplex": 16}


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
    job, item = await load_item(rt, scope, job_id, index)
    key = item.input_key if of == Which.input else item.result_key
    if of == Which.result and (item.status != Status.succeeded or not key):
        raise Conflict(f"item {index} has no result: it is {item.status.value}",
                       status=item.status.value)
    assert key is not None
    body = _cache.get((key, size))
    if body is None:
        body = await _flight.run((key, size), lambda: _make(rt, key, size, item.input_name))
        _cache.put((key, size), body)
    return Response(body, media_type="image/webp",
                    headers={"Cache-Control": "private, max-age=600"})


def _budget(rt: Runtime) -> MemoryBudget:
    """One budget per app (its runtime), made on first use inside the event loop."""
    budget = _budgets.get(id(rt))
    if budget is None:
        s = rt.settings
        budget = _budgets[id(rt)] = MemoryBudget(s.preview_memory_bytes, s.preview_wait_seconds,
                                                 "IMGQ_PREVIEW_MEMORY_BYTES")
    return budget


async def _make(rt: Runtime, key: str, size: int, name: str) -> bytes:
    budget = _budget(rt)
    with contextlib.ExitStack() as stack:
        try:
            path = await anyio.to_thread.run_sync(stack.enter_context, rt.blobs.open_local(key))
        except KeyError:
            raise Gone("the file of this preview is no longer in storage") from None
        cost = await anyio.to_thread.run_sync(decode_cost, path, name)
        if cost > budget.capacity:
            raise ImageTooLarge(f"{name}: no preview, decoding it would take "
                                f"{cost / 1e6:,.0f} MB, more than IMGQ_PREVIEW_MEMORY_BYTES "
                                f"({budget.capacity / 1e6:,.0f} MB)")
        async with budget.reserve(cost):
            return await anyio.to_thread.run_sync(_render, path, size, name)


def decode_cost(path: Path, name: str) -> int:
    """Bytes a thumbnail of this file holds at once, from its header."""
    try:
        header = pyvips.Image.new_from_file(str(path))
        loader = str(header.get("vips-loader"))
        interlaced = "interlaced" in header.get_fields() and bool(header.get("interlaced"))
    except pyvips.Error:
        raise DecodeError(f"{name}: no preview, the image could not be decoded") from None
    pixels = int(header.width) * int(header.height) * int(header.bands)
    whole = pixels * _SAMPLE_BYTES.get(str(header.format), 4)
    if loader.startswith("png") and interlaced:
        return whole
    if loader.startswith("jpeg") and interlaced:
        return pixels * 2  # progressive: every DCT coefficient is kept until the last scan
    if loader.startswith(("gif", "heif")):
        return whole
    return STREAMED_COST


def _render(path: Path, size: int, name: str) -> bytes:
    try:
        image = pyvips.Image.thumbnail(str(path), size, height=size, size="down")
        if image.interpretation not in ("srgb", "b-w"):
            image = image.colourspace("srgb")
        if image.format != "uchar":
            image = image.cast("uchar")
        return bytes(image.webpsave_buffer(Q=78, keep="none"))
    except pyvips.Error:
        raise DecodeError(f"{name}: no preview, the image could not be decoded") from None
