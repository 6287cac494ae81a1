"""imgq.client against a running `imgq serve`: submit, wait, download, typed errors."""

from __future__ import annotations

import asyncio
import zipfile
from pathlib import Path

import pytest

from imgq import client as imgq_client
from imgq.client import AsyncClient, Client, Event
from tests.e2e.server import Server, shared_server, write_broken_png, write_picture


@pytest.fixture(scope="module")
def server() -> Server:
    return shared_server("workers")


def test_submit_wait_and_download_with_a_bad_file_among_good_ones(server: Server,
                                                                  tmp_path: Path) -> None:
    good = write_picture(tmp_path / "good.png", 200, 150)
    bad = write_broken_png(tmp_path / "bad.png")
    seen: list[Event] = []
    with Client(server.url) as imgq:
        job = imgq.submit([good, ("second.jpg", (tmp_path / "good.png").read_bytes()), bad],
                          [{"op": "grayscale"}, {"op": "encode", "format": "webp"}], ttl_seconds=600)
        assert [i.status for i in job.items] == ["queued"] * 3
        done = imgq.wait(job.id, timeout=60, on_event=seen.append)
        assert done.status == "partial"
        assert [i.status for i in done.items] == ["succeeded", "succeeded", "failed"]
        assert done.items[2].error_message
        assert seen[-1].event == "done" and any(e.event == "item" for e in seen)

        paths = imgq.download_all(job.id, tmp_path / "out")
        assert sorted(p.name for p in paths) == ["good.webp", "second.webp"]
        assert paths[0].read_bytes()[8:12] == b"WEBP"
        one = imgq.download(job.id, 0, tmp_path / "single.webp")
        assert one.read_bytes() == paths[0].read_bytes()
        archive = imgq.download_archive(job.id, tmp_path / "zips/")
        assert sorted(zipfile.ZipFile(archive).namelist()) == ["good.webp", "second.webp"]
        assert [j.id for j in imgq.get_many([job.id, "nope"])] == [job.id]


def test_refusals_raise_typed_errors_with_the_server_message(server: Server,
                                                             tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    good = write_picture(tmp_path / "good.png", 40, 30)
    with Client(server.url) as imgq:
        with pytest.raises(imgq_client.NotFound) as not_found:
            imgq.get("no-such-job")
        assert not_found.value.status == 404 and not_found.value.code == "not_found"
        with pytest.raises(imgq_client.UnsupportedMediaType, match="notes.png"):
            imgq.submit([text], "grayscale")
        with pytest.raises(imgq_client.InvalidPipeline) as invalid:
            imgq.submit([good], "blur:radius=-3")
        assert invalid.value.code == "invalid_parameters" and "radius" in invalid.value.message
        with pytest.raises(imgq_client.ImgqHTTPError):
            imgq.download_archive("no-such-job", tmp_path)


def test_wait_falls_back_to_polling_when_the_stream_fails(server: Server, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Client, job_id: str, last_event_id: str | None = None) -> None:
        raise imgq_client.ServerError(503, "unavailable", "no streams today")

    monkeypatch.setattr(Client, "events", broken)
    monkeypatch.setattr(imgq_client, "POLL_INTERVAL", 0.1)
    with Client(server.url) as imgq:
        job = imgq.submit([write_picture(tmp_path / "a.png", 50, 50)], "grayscale")
        assert imgq.wait(job.id, timeout=60).status == "succeeded"


def test_async_client_does_the_same(server: Server, tmp_path: Path) -> None:
    async def run() -> None:
        async with AsyncClient(server.url) as imgq:
            ops = {op["name"] for op in await imgq.operations()}
            assert "grayscale" in ops
            job = await imgq.submit([write_picture(tmp_path / "a.png", 80, 60)], "grayscale")
            done = await imgq.wait(job.id, timeout=60)
            assert done.status == "succeeded"
            paths = await imgq.download_all(job.id, tmp_path / "out")
            assert [p.name for p in paths] == ["a.png"]
            with pytest.raises(imgq_client.NotFound, match="no item 7"):
                await imgq.download(job.id, 7, tmp_path)
            with pytest.raises(imgq_client.NotFound):
                await imgq.cancel("no-such-job")

    asyncio.run(run())


def test_attachments_and_a_job_with_no_files_are_sent_as_the_api_reads_them(
        server: Server, tmp_path: Path) -> None:
    photo = write_picture(tmp_path / "photo.png", 64, 48)
    style = write_picture(tmp_path / "style.png", 40, 40)
    with Client(server.url) as imgq:
        job = imgq.submit([photo], "style_transfer:style_image=style.png,working_size=64",
                          attachments=[style])
        done = imgq.wait(job.id, timeout=120)
        assert [i.status for i in done.items] == ["succeeded"], done.items[0].error
        # No files at all: the form is still multipart, so the server reads the pipeline
        # and answers about it (here: no text-to-image model installed).
        with pytest.raises(imgq_client.InvalidPipeline, match="text-to-image"):
            imgq.submit([], "generate:prompt=a fox", makes_image=True)
        with pytest.raises(ValueError, match="at least one file"):
            imgq.submit([], "grayscale")
