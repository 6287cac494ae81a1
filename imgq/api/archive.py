"""A ZIP of results streamed as it is written (no temporary file, no whole archive in memory)."""

from __future__ import annotations

import threading
import zipfile
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from imgq.blobs.base import BlobStore
from imgq.domain.models import Item
from imgq.errors import ResultMissing


#: Results up to this size are read at once, in the same hand-off to a thread that finds them;
#: larger ones stream chunk by chunk.
WHOLE_RESULT_BYTES = 1 << 20
#: ... while the whole results this process is sending hold less than this together: slow
#: readers of many small results at once get them streamed, never more memory.
WHOLE_RESULTS_HELD_BYTES = 64 << 20
#: Results up to this size, in a store that reads them without a network round trip (local
#: files), are read on the event loop's thread: one open and one read cost less than the
#: hand-off to a thread and back. A 2-MP photo's JPEG result (~110 KB) is one: reading it
#: on the loop takes tens of microseconds, and its download's CPU fell from 1.0 to 0.6 ms.
LOOP_RESULT_BYTES = 256 << 10


class _Held:
    """Bytes of whole results read and not yet sent (or abandoned by their client)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self._lock:
            if size > WHOLE_RESULT_BYTES or self.bytes + size > WHOLE_RESULTS_HELD_BYTES:
                return False
            self.bytes += size
            return True

    def give_back(self, size: int) -> None:
        with self._lock:
            self.bytes -= size


held = _Held()


async def open_result(
    blobs: BlobStore, item: Item
) -> tuple[int, Iterator[bytes] | AsyncIterator[bytes]]:
    """The size and bytes of an item's result; 410 result_missing when its file is gone."""
    size, whole, chunks = await anyio.to_thread.run_sync(read_result, blobs, item)
    return size, (_Once(whole) if whole is not None else chunks)


class WholeResult(Response):
    """A result read whole: its bytes count against WHOLE_RESULTS_HELD_BYTES until they are
    sent or the client is gone."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            held.give_back(len(self.body))


def read_result(blobs: BlobStore, item: Item) -> tuple[int, bytes | None, Iterator[bytes]]:
    """`open_result` in the calling thread: the size, and the bytes whole when at most
    WHOLE_RESULT_BYTES and the held budget allows (else None and the chunks). Whole bytes are
    sent by a `WholeResult` or `open_result`, which give their budget back."""
    try:
        return _open(blobs, item.result_key or "")
    except KeyError:
        raise _missing([item]) from None


def result_at_once(blobs: BlobStore, item: Item) -> bytes | None:
    """A small result's bytes read on the caller's thread (the event loop's), held as
    `read_result` holds them (sent by a `WholeResult`); None when it is larger than
    LOOP_RESULT_BYTES, the store cannot read it at once, or the held budget is spent: read it
    with `read_result` in a thread then. 410 result_missing when its file is gone."""
    recorded = (item.result_meta or {}).get("bytes")
    if isinstance(recorded, int) and recorded > LOOP_RESULT_BYTES:
        return None  # not even opened: its size was recorded when it was stored
    try:
        whole = blobs.read_at_once(item.result_key or "", LOOP_RESULT_BYTES)
    except KeyError:
        raise _missing([item]) from None
    if whole is None or not held.take(len(whole)):
        return None
    return whole


def _open(blobs: BlobStore, key: str) -> tuple[int, bytes | None, Iterator[bytes]]:
    size = blobs.size(key)
    if not held.take(size):
        return size, None, blobs.iter_bytes(key)
    try:
        whole = blobs.read_bytes(key)
    except BaseException:
        held.give_back(size)
        raise
    if len(whole) != size:  # rewritten meanwhile: what is held is what was read
        held.give_back(size - len(whole))
    return len(whole), whole, iter(())


class _Once:
    """Whole bytes as a one-chunk stream; their budget is given back once they were sent, or
    when the stream is dropped unsent (its client gone before the body started)."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data
        self._owed = len(data)

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:  # asked again: the chunk was sent
            self._settle()
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data

    def _settle(self) -> None:
        owed, self._owed = self._owed, 0
        if owed:
            held.give_back(owed)

    def __del__(self) -> None:
        self._settle()


async def require_results(blobs: BlobStore, items: list[Item]) -> None:
    """Refuse (410 result_missing) before a ZIP starts when any result's file is gone, so an
    archive is never broken halfway or silently short of an entry."""
    present = await anyio.to_thread.run_sync(
        lambda: [blobs.exists(i.result_key or "") for i in items])
    missing = [i for i, ok in zip(items, present) if not ok]
    if missing:
        raise _missing(missing)


def _missing(items: list[Item]) -> ResultMissing:
    which = ", ".join(str(i.idx) for i in items)
    word = "file of item" if len(items) == 1 else "files of items"
    return ResultMissing(f"the result {word} {which} is no longer in storage; submit "
                         "the image again", items=[i.idx for i in items])


class _Sink:
    """A write-only, unseekable stream whose bytes are taken out as they come."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._offset = 0

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    @property
    def pending(self) -> bool:
        return bool(self._chunks)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def stream_zip(blobs: BlobStore, entries: Iterable[tuple[str, str, datetime]]) -> Iterator[bytes]:
    """entries: (archive name, blob key, modification time). Images are already compressed,
    so they are stored, not deflated."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, key, when in entries:
            info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
            with archive.open(info, "w", force_zip64=True) as member:
                for chunk in blobs.iter_bytes(key):
                    member.write(chunk)
                    if sink.pending:
                        yield sink.take()
            yield sink.take()
    yield sink.take()
