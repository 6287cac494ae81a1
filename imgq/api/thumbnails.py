"""Small renderings of stored images made in the API process (previews, the AI Upscaler's
thumbnails), with bounded memory.

libvips shrinks JPEG, WebP, non-interlaced PNG and TIFF while it loads them, in a few
megabytes. Interlaced PNG, progressive JPEG, GIF, HEIF and AVIF decode whole first: each render
reserves its decoded size from IMGQ_PREVIEW_MEMORY_BYTES and waits its turn (429 after
IMGQ_PREVIEW_WAIT_SECONDS), one needing more than the whole budget is refused (413), and
identical requests share one render. Renders are kept in a small LRU (blob keys never change
their bytes).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pyvips
from cachetools import LRUCache

from imgq.api.budget import MemoryBudget, SingleFlight
from imgq.errors import DecodeError, Gone, ImageTooLarge
from imgq.worker.runtime import Runtime

CACHE_ENTRIES = 256
#: What a render that shrinks while it loads may hold: a few strips and the small image.
STREAMED_COST = 16 * 1024 * 1024
_SAMPLE_BYTES = {"uchar": 1, "char": 1, "ushort": 2, "short": 2, "uint": 4, "int": 4,
                 "float": 4, "double": 8, "complex": 8, "dpcomplex": 16}
Key = tuple[str, int, str]


class _Cache:
    """A small LRU of rendered previews; blob keys never change their bytes, so no expiry."""

    def __init__(self, size: int) -> None:
        self._data: LRUCache[Key, bytes] = LRUCache(size)
        self._lock = threading.Lock()

    def get(self, key: Key) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: Key, value: bytes) -> None:
        with self._lock:
            self._data[key] = value



_cache = _Cache(CACHE_ENTRIES)
_flight: SingleFlight[bytes] = SingleFlight()
_budgets: dict[int, MemoryBudget] = {}


async def thumbnail(rt: Runtime, key: str, name: str, size: int, kind: str = "webp") -> bytes:
    """The image at blob `key`, at most size×size, as WebP or JPEG (alpha on white)."""
    wanted = (key, size, kind)
    body = _cache.get(wanted)
    if body is None:
        body = await _flight.run(wanted, lambda: _make(rt, key, size, name, _RENDERERS[kind]))
        _cache.put(wanted, body)
    return body


def _budget(rt: Runtime) -> MemoryBudget:
    """One budget per app (its runtime), made on first use inside the event loop."""
    budget = _budgets.get(id(rt))
    if budget is None:
        s = rt.settings
        budget = _budgets[id(rt)] = MemoryBudget(s.preview_memory_bytes, s.preview_wait_seconds,
                                                 "IMGQ_PREVIEW_MEMORY_BYTES")
    return budget


async def _make(rt: Runtime, key: str, size: int, name: str,
                render: Callable[[pyvips.Image], bytes]) -> bytes:
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
            return await anyio.to_thread.run_sync(_render, path, size, name, render)


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


def _render(path: Path, size: int, name: str, encode: Callable[[pyvips.Image], bytes]) -> bytes:
    try:
        image = pyvips.Image.thumbnail(str(path), size, height=size, size="down")
        if image.interpretation not in ("srgb", "b-w"):
            image = image.colourspace("srgb")
        if image.format != "uchar":
            image = image.cast("uchar")
        return encode(image)
    except pyvips.Error:
        raise DecodeError(f"{name}: no preview, the image could not be decoded") from None


def _webp(image: pyvips.Image) -> bytes:
    return bytes(image.webpsave_buffer(Q=78, keep="none"))


def _jpeg(image: pyvips.Image) -> bytes:
    if image.hasalpha():
        image = image.flatten(background=[255] * (image.bands - 1))
    return bytes(image.jpegsave_buffer(Q=85, keep="none"))


_RENDERERS: dict[str, Callable[[pyvips.Image], bytes]] = {"webp": _webp, "jpeg": _jpeg}
