"""Idempotency-Key on submits: a retry after a lost answer gets the first job, never a second."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips

from imgq.api.app import SUBMIT_PATHS, create_app
from imgq.api.idempotency import BodyDigest
from imgq.compose import open_runtime
from imgq.config import load_settings

PNG = bytes(pyvips.Image.black(24, 16, bands=3).write_to_buffer(".png"))
Client = httpx.AsyncClient


def run_with(settings: dict[str, Any],
             body: Callable[[Callable[[str], Client]], Coroutine[Any, Any, None]]) -> None:
    """Run `body` with a factory of clients (by client address) of one in-process app."""
    app = create_app(open_runtime(load_settings(**settings), run_migrations=True), sweeper=False)

    def client(address: str) -> Client:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")

    try:
        asyncio.run(body(client))
    finally:
        app.state.runtime.close()


async def submit(client: Client, key: str, pipeline: str = "grayscale") -> httpx.Response:
    return await client.post("/v1/jobs", files={"files": ("a.png", PNG)},
                             data={"pipeline": pipeline}, headers={"Idempotency-Key": key})


async def total(client: Client) -> int:
    return int((await client.get("/v1/jobs")).json()["total"])


def test_a_retry_with_the_same_key_answers_the_first_job_again(tmp_path: Path) -> None:
    async def body(client: Callable[[str], Client]) -> None:
        async with client("10.1.1.1") as c:
            first = await submit(c, "order-17")
            again = await submit(c, "order-17")  # httpx draws a new multipart boundary
            assert first.status_code == again.status_code == 201
            assert again.content == first.content
            assert again.headers["location"] == first.headers["location"]
            assert again.headers["idempotent-replayed"] == "true"
            assert "idempotent-replayed" not in first.headers
            assert await total(c) == 1

            other = await submit(c, "order-17", "resize:width=8")
            assert other.status_code == 422
            assert "different request" in other.json()["error"]["message"]
            assert (await submit(c, "order-18")).json()["id"] != first.json()["id"]
            assert await total(c) == 2

    run_with({"data_dir": tmp_path}, body)


def test_keys_belong_to_their_client(tmp_path: Path) -> None:
    async def body(client: Callable[[str], Client]) -> None:
        async with client("10.1.1.1") as one, client("10.2.2.2") as two:
            first, second = await submit(one, "k"), await submit(two, "k")
            assert first.status_code == second.status_code == 201
            assert first.json()["id"] != second.json()["id"]

    run_with({"data_dir": tmp_path}, body)


def test_a_refused_request_keeps_nothing_under_its_key(tmp_path: Path) -> None:
    async def body(client: Callable[[str], Client]) -> None:
        async with client("10.1.1.1") as c:
            bad = await submit(c, "fix-me", "no_such_op")
            assert bad.status_code == 422
            good = await submit(c, "fix-me", "grayscale")
            assert good.status_code == 201
            assert await total(c) == 1
            bad_key = await submit(c, "with space")
            assert bad_key.status_code == 400 and "Idempotency-Key" in bad_key.text

    run_with({"data_dir": tmp_path}, body)


def test_the_older_apis_submits_take_the_key_too(tmp_path: Path) -> None:
    async def body(client: Callable[[str], Client]) -> None:
        async with client("10.1.1.1") as c:
            answers = [await c.post("/process-image/", files={"file": ("a.png", PNG)},
                                    data={"operation": "grayscale"},
                                    headers={"Idempotency-Key": "celery-1"}) for _ in range(2)]
            assert [a.status_code for a in answers] == [200, 200]
            assert answers[0].json()["task_id"] == answers[1].json()["task_id"]
            assert await total(c) == 1
            documented = (await c.get("/openapi.json")).json()["paths"]
            assert all("post" in documented.get(path, {}) for path in SUBMIT_PATHS)

    run_with({"data_dir": tmp_path}, body)


@pytest.mark.postgres
def test_the_key_holds_across_api_servers_sharing_a_database(
    tmp_path: Path, postgres_url: str
) -> None:
    answers: list[httpx.Response] = []

    async def body(client: Callable[[str], Client]) -> None:
        async with client("10.1.1.1") as c:
            answers.append(await submit(c, "fleet-key"))

    for server in ("a", "b"):  # two API servers, one database
        run_with({"data_dir": tmp_path / server, "database_url": postgres_url}, body)
    assert answers[0].status_code == answers[1].status_code == 201
    assert answers[0].content == answers[1].content


def test_the_digest_ignores_the_boundary_wherever_the_chunks_cut() -> None:
    boundary = b"abcdefghij0123456789"
    body = b"--" + boundary + b"\r\nx\r\n--" + boundary + b"--\r\n"
    other = body.replace(boundary, b"ZYXWVUTSRQ9876543210")
    digests = set()
    for content, cut_by in ((body, boundary), (other, b"ZYXWVUTSRQ9876543210")):
        for size in (1, 3, 7, len(content)):
            digest = BodyDigest("POST", "/v1/jobs", b"multipart/form-data; boundary=" + cut_by)
            for start in range(0, len(content), size):
                digest.update(content[start:start + size])
            digests.add(digest.hexdigest())
    assert len(digests) == 1
    plain = BodyDigest("POST", "/v1/jobs", b"application/json")
    plain.update(b"{}")
    assert plain.hexdigest() == hashlib.sha256(b"POST /v1/jobs\n{}").hexdigest()
