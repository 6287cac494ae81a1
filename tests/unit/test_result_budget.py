"""Whole results held in memory: a budget for the whole process, given back once each result
was sent or its client left; beyond it results stream, with the same bytes."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import pytest

from imgq.api import archive
from imgq.api.archive import WholeResult, open_result, read_result
from imgq.blobs.local import LocalBlobStore
from imgq.domain.models import Item
from imgq.domain.status import Status


def _stored(tmp_path: Path, size: int) -> tuple[LocalBlobStore, Item, bytes]:
    blobs = LocalBlobStore(tmp_path / "blobs")
    data = bytes(range(256)) * (size // 256)
    source = tmp_path / "result.bin"
    source.write_bytes(data)
    blobs.put_file("job/results/0.png", source)
    item = Item("item", "job", 0, Status.succeeded, "a.png", "job/in/0", {},
                datetime.now(timezone.utc), result_key="job/results/0.png")
    return blobs, item, data


def _send_to(sent: list[bytes], leave: bool = False):  # type: ignore[no-untyped-def]
    async def send(message: dict) -> None:  # type: ignore[type-arg]
        if leave and message["type"] == "http.response.body":
            raise OSError("the client is gone")
        sent.append(message.get("body", b""))
    return send


async def _receive() -> dict:  # type: ignore[type-arg]
    return {"type": "http.disconnect"}


def test_a_whole_result_is_held_until_sent_or_its_client_left(tmp_path: Path) -> None:
    blobs, item, data = _stored(tmp_path, 64 * 1024)
    before = archive.held.bytes
    size, whole, _ = read_result(blobs, item)
    assert whole == data and size == len(data)
    assert archive.held.bytes == before + len(data)
    sent: list[bytes] = []
    asyncio.run(WholeResult(whole)({"type": "http"}, _receive, _send_to(sent)))
    assert b"".join(sent) == data and archive.held.bytes == before

    _, whole, _ = read_result(blobs, item)
    with pytest.raises(OSError):
        asyncio.run(WholeResult(whole)({"type": "http"}, _receive, _send_to([], leave=True)))
    assert archive.held.bytes == before


def test_past_the_budget_results_stream_with_the_same_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs, item, data = _stored(tmp_path, 64 * 1024)
    monkeypatch.setattr(archive, "WHOLE_RESULTS_HELD_BYTES", archive.held.bytes + len(data))
    _, first, _ = read_result(blobs, item)  # takes the whole budget
    size, second, chunks = read_result(blobs, item)
    assert first == data and second is None and size == len(data)
    assert b"".join(chunks) == data  # streamed: nothing more held
    archive.held.give_back(len(first))  # what its WholeResult gives back once sent


def test_a_one_chunk_stream_gives_its_budget_back_sent_or_dropped(tmp_path: Path) -> None:
    blobs, item, data = _stored(tmp_path, 64 * 1024)
    before = archive.held.bytes

    async def read_all() -> bytes:
        _, stream = await open_result(blobs, item)
        return b"".join([chunk async for chunk in stream])  # type: ignore[union-attr]

    assert asyncio.run(read_all()) == data and archive.held.bytes == before

    async def dropped() -> None:
        _, stream = await open_result(blobs, item)
        assert archive.held.bytes == before + len(data)
        del stream  # its client left before the body started

    asyncio.run(dropped())
    assert archive.held.bytes == before
