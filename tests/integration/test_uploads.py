"""Uploads are parsed and written off the event loop: while one client's files are being
written, other clients' requests are answered."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
import pyvips

from imgq.api.app import create_app
from imgq.api.uploads import SMALL_FILE_BYTES
from imgq.compose import open_runtime
from imgq.config import load_settings

JPEG = bytes(pyvips.Image.black(64, 48, bands=3).write_to_buffer(".jpg"))


class StagingGate:
    """Holds the thread that opens a staged upload file until another request was answered,
    or until `patience` seconds have passed (then that request was not answered meanwhile).
    Python's "open" audit event is raised by the real open, in the thread that opens."""

    def __init__(self, staging: Path, patience: float = 20.0) -> None:
        self.staging, self.patience = str(staging), patience
        self.opened = threading.Event()
        self.answered = threading.Event()
        self.answered_while_held: bool | None = None

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or not isinstance(args[0], str | Path):
            return
        if not str(args[0]).startswith(self.staging) or self.opened.is_set():
            return
        self.opened.set()
        self.answered_while_held = self.answered.wait(self.patience)


_gates: list[StagingGate] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    for gate in _gates:
        gate.audit(event, args)


sys.addaudithook(_audit)  # audit hooks cannot be removed: it does nothing once the test ends


def test_a_read_is_answered_while_an_upload_is_being_written(tmp_path: Path) -> None:
    runtime = open_runtime(load_settings(data_dir=tmp_path), run_migrations=True)
    app = create_app(runtime, sweeper=False)
    staging = runtime.blobs.staging_dir()
    assert staging is not None
    gate = StagingGate(staging)

    async def upload(client: httpx.AsyncClient) -> httpx.Response:
        files = [("files", (f"{n}.jpg", JPEG)) for n in range(3)]
        return await client.post("/v1/jobs", files=files, data={"pipeline": "grayscale"})

    async def read_meanwhile(client: httpx.AsyncClient) -> httpx.Response:
        while not gate.opened.is_set():
            await asyncio.sleep(0.01)
        answer = await client.get("/v1/jobs")
        gate.answered.set()
        return answer

    async def both() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            submitted, read = await asyncio.gather(upload(c), read_meanwhile(c))
        return submitted, read

    _gates.append(gate)
    try:
        submitted, read = asyncio.run(both())
    finally:
        _gates.remove(gate)
        runtime.close()
    assert read.status_code == 200, read.text
    assert gate.answered_while_held is True  # the read did not wait for the upload
    assert submitted.status_code == 201, submitted.text
    assert len(submitted.json()["items"]) == 3


class StagingOpens:
    """Counts the opens of staged upload files, by path (Python's "open" audit event)."""

    def __init__(self, staging: Path) -> None:
        self.staging, self.opens = str(staging), dict[str, int]()

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str | Path) \
                and str(args[0]).startswith(self.staging):
            self.opens[str(args[0])] = self.opens.get(str(args[0]), 0) + 1


_counters: list[StagingOpens] = []


def _count(event: str, args: tuple[Any, ...]) -> None:
    for counter in _counters:
        counter.audit(event, args)


sys.addaudithook(_count)


def _post(app: Any, content: bytes, boundary: str) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return await c.post("/v1/jobs", content=content, headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}"})
    return asyncio.run(send())


def _body(boundary: str, files: list[tuple[str, bytes]], close: bool = True) -> bytes:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="pipeline"\r\n\r\n'
             'grayscale\r\n'.encode()]
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                     f'filename="{name}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
                     + data + b"\r\n")
    return b"".join(parts) + (f"--{boundary}--\r\n".encode() if close else b"")


def test_small_files_are_staged_once_and_checked_without_opening_them_again(
        tmp_path: Path) -> None:
    """A small file's header is read from its bytes in memory: its staged file is opened
    once, to write it. A large one is written as it arrives and its header read from the
    file; a large file that is no image is still refused, by name."""
    runtime = open_runtime(load_settings(data_dir=tmp_path), run_migrations=True)
    app = create_app(runtime, sweeper=False)
    staging = runtime.blobs.staging_dir()
    assert staging is not None
    large = bytes(pyvips.Image.gaussnoise(600, 400).cast("uchar").bandjoin([128, 64])
                  .write_to_buffer(".png"))
    assert len(large) > SMALL_FILE_BYTES
    counter = StagingOpens(staging)
    _counters.append(counter)
    try:
        accepted = _post(app, _body("b0", [("a.jpg", JPEG), ("b.jpg", JPEG),
                                           ("large.png", large)]), "b0")
        small_opens = {p: n for p, n in counter.opens.items() if not p.endswith("2")}
        refused = _post(app, _body("b1", [("a.jpg", JPEG), ("noise.jpg", b"\x00" * len(large))]),
                        "b1")
    finally:
        _counters.remove(counter)
        runtime.close()
    assert accepted.status_code == 201, accepted.text
    items = accepted.json()["items"]
    assert [i["input"]["bytes"] for i in items] == [len(JPEG), len(JPEG), len(large)]
    assert [i["input"]["format"] for i in items] == ["jpeg", "jpeg", "png"]
    assert len(small_opens) == 2 and set(small_opens.values()) == {1}, counter.opens
    assert refused.status_code == 415, refused.text
    assert "noise.jpg" in refused.json()["error"]["message"]
    assert not list(staging.iterdir())  # nothing staged is left, accepted or refused


def test_a_body_that_ends_inside_a_file_is_a_400_naming_it(tmp_path: Path) -> None:
    """A body without its closing boundary ends inside its last file: refused as malformed,
    naming the file (rather than a job made of what came, or a file left unwritten)."""
    runtime = open_runtime(load_settings(data_dir=tmp_path), run_migrations=True)
    app = create_app(runtime, sweeper=False)
    staging = runtime.blobs.staging_dir()
    assert staging is not None
    try:
        answer = _post(app, _body("b2", [("a.jpg", JPEG)], close=False), "b2")
    finally:
        runtime.close()
    assert answer.status_code == 400, answer.text
    assert "a.jpg" in answer.json()["error"]["message"], answer.text
    assert "boundary" in answer.json()["error"]["message"], answer.text
    assert not list(staging.iterdir())


def test_a_small_upload_is_parsed_checked_and_stored_in_one_hand_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each hand-off to a thread and back costs the API about as much as parsing a small
    file: a small upload makes one (its body parsed and staged, its files checked, its rows
    stored). The real hand-off runs; the test only counts them."""
    runtime = open_runtime(load_settings(data_dir=tmp_path), run_migrations=True)
    app = create_app(runtime, sweeper=False)
    real = anyio.to_thread.run_sync
    hand_offs: list[str] = []

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        hand_offs.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    try:
        answer = _post(app, _body("b3", [(f"{n}.jpg", JPEG) for n in range(3)]), "b3")
    finally:
        runtime.close()
    assert answer.status_code == 201, answer.text
    assert len(answer.json()["items"]) == 3
    assert len(hand_offs) == 1, hand_offs
