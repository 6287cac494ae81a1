"""Result downloads from local files: a small result is read on the event loop (the item on
SQLite's status connection or on the loop's own PostgreSQL connection, then one read of its
file), so it is answered while every server thread is busy; a larger one, or any while the
SQLite database is locked, is read in a thread. Each answer is the stored bytes with their
headers, through the real app."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import httpx

from imgq.api.app import create_app
from imgq.api.archive import LOOP_RESULT_BYTES
from imgq.config import load_settings
from imgq.worker.runtime import Runtime
from tests.contract.conftest import empty_tables, make_job
from tests.fixtures.locks import answered_after_unlock, exclusive_holder

T = TypeVar("T")


def _runtime_with_result(tmp_path: Path, size: int, **settings: Any
                         ) -> tuple[Runtime, str, bytes]:
    """A runtime on a new SQLite database (or `settings`' database) with a job whose one item
    succeeded with a result of `size` bytes; the job's id and the result's bytes."""
    rt = Runtime.from_settings(load_settings(data_dir=tmp_path, **settings), run_migrations=True)
    job = make_job(1)
    rt.repo.create_job(job)
    claim = rt.repo.claim(job.items[0].id, 60)
    assert claim is not None
    data = bytes(range(256)) * (size // 256)
    source = rt.blobs.staging_dir() / "result.png"
    source.write_bytes(data)
    key = f"{job.id}/results/0-a.png"
    rt.blobs.put_file(key, source)
    rt.repo.finish_succeeded(claim, key, "a.png", {"format": "png", "bytes": len(data)}, 0.1)
    return rt, job.id, data


async def _download(rt: Runtime, job_id: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(rt, None, sweeper=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.get(f"/v1/jobs/{job_id}/items/0/result")


async def _with_no_thread_free(action: Callable[[], Awaitable[T]]) -> T:
    limiter = anyio.to_thread.current_default_thread_limiter()
    holders = [object() for _ in range(int(limiter.total_tokens))]
    for holder in holders:
        await limiter.acquire_on_behalf_of(holder)
    try:  # an answer that waited for a thread would wait for ever: fail instead
        return await asyncio.wait_for(action(), 20)
    finally:
        for holder in holders:
            limiter.release_on_behalf_of(holder)


def _assert_answer(response: httpx.Response, data: bytes) -> None:
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(data))
    assert 'filename="a.png"' in response.headers["content-disposition"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_small_result_is_downloaded_while_every_server_thread_is_busy(tmp_path: Path) -> None:
    rt, job_id, data = _runtime_with_result(tmp_path, 4096)
    try:
        _assert_answer(asyncio.run(_with_no_thread_free(lambda: _download(rt, job_id))), data)
    finally:
        rt.close()


def test_a_small_result_on_postgresql_is_downloaded_while_every_server_thread_is_busy(
    tmp_path: Path, postgres_url: str,
) -> None:
    """The item is read on the event loop's own connection, as the status reads are, and
    the file on the loop: no thread to wait for; another owner's job stays a 404."""
    rt, job_id, data = _runtime_with_result(tmp_path, 4096, database_url=postgres_url)
    try:
        _assert_answer(asyncio.run(_with_no_thread_free(lambda: _download(rt, job_id))), data)
        missing = asyncio.run(_with_no_thread_free(lambda: _download(rt, str(uuid.uuid4()))))
        assert missing.status_code == 404, missing.text
    finally:
        empty_tables(rt.repo.engine)  # the schema lives for the session: leave it empty
        rt.close()


def test_a_result_larger_than_a_loop_read_is_read_in_a_thread_with_the_same_answer(
    tmp_path: Path,
) -> None:
    rt, job_id, data = _runtime_with_result(tmp_path, LOOP_RESULT_BYTES + 256)
    try:
        _assert_answer(asyncio.run(_download(rt, job_id)), data)
    finally:
        rt.close()


def test_a_result_on_a_locked_sqlite_database_waits_in_a_thread_not_on_the_event_loop(
    tmp_path: Path,
) -> None:
    rt, job_id, data = _runtime_with_result(tmp_path, 4096)
    rt.repo.engine.dispose()  # no connection open: the one below can lock everyone out
    rt.repo.status_engine.dispose()
    holder = exclusive_holder(tmp_path / "imgq.db")

    try:
        ticks, response = asyncio.run(answered_after_unlock(holder, _download(rt, job_id)))
        assert ticks == 20
        _assert_answer(response, data)
    finally:
        holder.close()
        rt.close()


def test_a_photo_sized_result_is_downloaded_while_every_server_thread_is_busy(
    tmp_path: Path,
) -> None:
    """A 2-MP photo blurred and saved as JPEG Q85 is about 110 KB: read on the event loop
    too, with no hand-off to a thread and back."""
    rt, job_id, data = _runtime_with_result(tmp_path, 150_016)
    try:
        _assert_answer(asyncio.run(_with_no_thread_free(lambda: _download(rt, job_id))), data)
    finally:
        rt.close()
