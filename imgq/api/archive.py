"""A ZIP of results streamed as it is written (no temporary file, no whole archive in memory)."""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime

import anyio

from imgq.blobs.base import BlobStore
from imgq.domain.models import Item
from imgq.errors import ResultMissing


#: Results up to this size are read at once, in the same hand-off to a thread that finds them;
#: larger ones stream chunk by chunk.
WHOLE_RESULT_BYTES = 1 << 20


async def open_result(
    blobs: BlobStore, item: Item
) -> tuple[int, Iterator[bytes] | AsyncIterator[bytes]]:
    """The size and bytes of an item's result; 410 result_missing when its file is gone."""
    size, whole, chunks = await anyio.to_thread.run_sync(read_result, blobs, item)
    return size, (_once(whole) if whole is not None else chunks)


def read_result(blobs: BlobStore, item: Item) -> tuple[int, bytes | None, Iterator[bytes]]:
    """`open_result` in the calling thread: the size, and the bytes whole when at most
    WHOLE_RESULT_BYTES (else None and the chunks)."""
    try:
        return _open(blobs, item.result_key or "")
    except KeyError:
        raise _missing([item]) from None


def _open(blobs: BlobStore, key: str) -> tuple[int, bytes | None, Iterator[bytes]]:
    size = blobs.size(key)
    chunks = blobs.iter_bytes(key)
    if size <= WHOLE_RESULT_BYTES:
        return size, b"".join(chunks), iter(())
    return size, None, chunks


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


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
