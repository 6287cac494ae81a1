"""A ZIP of results streamed as it is written (no temporary file, no whole archive in memory)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from datetime import datetime

from imgq.blobs.base import BlobStore


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
