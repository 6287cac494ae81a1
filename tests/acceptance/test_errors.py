"""Every error is the documented JSON body with a 4xx for what a client sent, and a 503 naming
the cause (with Retry-After) when the database or storage is in trouble: never a 500 text."""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import socket
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.encoded import png_bytes
from tests.fixtures.outages import OwnPostgres, own_postgres, remount, small_filesystem
from tests.fixtures.server import Server

NESTED = "[" * 20_000
UPLOAD_ROUTES = [("/v1/jobs", "files"), ("/upload", "file"), ("/process-image/", "file"),
                 ("/process-job", "files"), ("/api/jobs/upload", "files"),
                 ("/api/v1/tasks/create/", "image")]


def error_of(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error: dict[str, str] = response.json()["error"]
    assert error["code"] and error["message"], error
    return error


def test_what_a_client_sends_is_answered_with_a_json_4xx(
    shared_serve: Callable[..., Server],
) -> None:
    server = shared_serve(workers=1)
    jobs_before = server.jobs_total()
    c = server.client
    assert c.get("/status/%C2%B2").status_code == 404  # a Unicode digit is not a task number
    assert "less than or equal" in error_of(
        c.get("/v1/jobs", params={"offset": "9" * 20}), 422)["message"]
    assert error_of(c.get("/no/such/route"), 404)["code"] == "not_found"
    assert error_of(c.put("/v1/jobs"), 405)["code"] == "method_not_allowed"
    for pipeline in (NESTED, "blur:sigma=" + NESTED, '[{"op": "blur", "sigma": ' + NESTED):
        error = error_of(server.submit([("a.png", png_bytes())], pipeline), 422)
        assert "nested too deeply" in error["message"], error
    assert server.jobs_total() == jobs_before
    job = server.submit([("a.png", png_bytes())], "grayscale").json()["id"]
    for index in ("855988754108872392704", "-1", str(2**31)):  # beyond any item, or any column
        for path in (f"/v1/jobs/{job}/items/{index}/result", f"/v1/jobs/{job}/items/{index}/preview"):
            assert "has no item" in error_of(c.get(path), 404)["message"], path
    server.wait_finished(job)  # nothing left running on the shared server


def test_nested_parameters_on_the_backend_ai_route_are_a_400(
    shared_serve: Callable[..., Server],
) -> None:
    server = shared_serve(workers=1)
    form = server.client.post("/api/v1/tasks/create/", files={"image": ("a.png", png_bytes())},
                              data={"prompt": "x", "task_type": "image_enhancement",
                                    "parameters": NESTED})
    assert form.status_code == 400, form.text
    assert "nested too deeply" in form.json()["details"]["parameters"][0]
    body = '{"prompt": "x", "task_type": "image_generation", "parameters": ' + NESTED + "}"
    as_json = server.client.post("/api/v1/tasks/create/", content=body,
                                 headers={"Content-Type": "application/json"})
    assert as_json.status_code == 400, as_json.text
    assert "nested too deeply" in as_json.json()["details"]["non_field_errors"][0]


@pytest.mark.parametrize(("route", "field"), UPLOAD_ROUTES)
def test_a_boundary_longer_than_allowed_is_a_4xx_on_every_upload_route(
    shared_serve: Callable[..., Server], route: str, field: str,
) -> None:
    server = shared_serve(workers=1)
    jobs_before = server.jobs_total()
    boundary = "b" * 300
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"a.png\"\r\n\r\n").encode() + png_bytes() + f"\r\n--{boundary}--\r\n".encode()
    response = server.client.post(route, content=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert 400 <= response.status_code < 500, response.text
    assert "boundary" in response.text
    assert server.jobs_total() == jobs_before


def test_a_result_whose_file_is_gone_is_a_410_and_never_a_broken_zip(
    shared_serve: Callable[..., Server],
) -> None:
    server = shared_serve(workers=1)
    job = server.wait_finished(server.submit_ok(
        [("a.png", png_bytes(seed=1)), ("b.png", png_bytes(seed=2))], "grayscale")["id"])
    whole = server.client.get(job["urls"]["archive"])
    assert sorted(zipfile.ZipFile(io.BytesIO(whole.content)).namelist()) == ["a.png", "b.png"]
    lost = job["items"][1]
    removed = [p for p in (server.data_dir / "blobs" / job["id"] / "results").iterdir()
               if p.name.startswith("1-")]
    assert len(removed) == 1
    removed[0].unlink()
    error = error_of(server.client.get(lost["result_url"]), 410)
    assert error["code"] == "result_missing" and "item 1" in error["message"], error
    error = error_of(server.client.get(job["urls"]["archive"]), 410)
    assert error["code"] == "result_missing" and "item 1" in error["message"], error
    kept = server.client.get(job["items"][0]["result_url"])
    assert kept.status_code == 200 and kept.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_disk_below_the_free_space_floor_refuses_uploads_and_is_not_ready(
    serve: Callable[..., Server],
) -> None:
    server = serve(workers=1, min_free_bytes=2**62)
    error = error_of(server.submit([("a.png", png_bytes())], "grayscale"), 503)
    assert error["code"] == "storage_full" and "IMGQ_MIN_FREE_BYTES" in error["message"]
    ready = server.client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["disk"].startswith("full")
    assert server.client.get("/healthz").status_code == 200


# -- real faults: a full and a read-only filesystem, a database that stops ----------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs of the test's own (needs root and mount)."""
    with small_filesystem(tmp_path / "disk", "3m") as disk:
        yield disk


def test_a_full_and_a_read_only_disk_answer_503_naming_the_cause(
    serve: Callable[..., Server], small_disk: Path,
) -> None:
    server = serve(workers=1, storage_url=small_disk.as_uri(), min_free_bytes=0)
    big = os.urandom(4 * 1024 * 1024)  # more than the disk holds; refused as it streams in
    error = error_of(server.submit([("big.png", b"\x89PNG\r\n\x1a\n" + big)], "grayscale"), 503)
    assert error["code"] == "storage_full", error
    assert list((small_disk / ".tmp").iterdir()) == [], "the cut-off upload was left staged"
    remount(small_disk, read_only=True)
    response = server.submit([("a.png", png_bytes())], "grayscale")
    assert error_of(response, 503)["code"] == "storage_read_only"
    assert int(response.headers["Retry-After"]) > 0
    assert server.client.get("/readyz").status_code == 503
    remount(small_disk, read_only=False)
    job = server.wait_finished(server.submit_ok([("a.png", png_bytes())], "grayscale")["id"])
    assert job["status"] == "succeeded"


@pytest.fixture
def own_database() -> Iterator[OwnPostgres]:
    with own_postgres() as db:
        yield db


def test_a_database_that_stops_is_a_503_not_a_500_and_work_resumes(
    serve: Callable[..., Server], own_database: OwnPostgres,
) -> None:
    stop, start = own_database.stop, own_database.start
    server = serve(workers=1, database_url=own_database.url)
    job = server.wait_finished(server.submit_ok([("a.png", png_bytes())], "grayscale")["id"])
    stop()
    for response in (server.client.get(f"/v1/jobs/{job['id']}"),
                     server.submit([("a.png", png_bytes())], "grayscale"),
                     server.client.get("/v1/jobs")):
        error = error_of(response, 503)
        assert error["code"] == "database_unavailable", error
        assert int(response.headers["Retry-After"]) > 0
    assert server.client.get("/readyz").json()["checks"]["database"] != "ok"
    start()
    assert server.job(job["id"])["status"] == "succeeded"


# -- bounded resources: output pixels, form bytes, body read time ------------------------------
def test_a_pipeline_whose_output_would_be_too_large_is_refused_at_submit(
    shared_serve: Callable[..., Server],
) -> None:
    server = shared_serve(workers=1)
    jobs_before, stored_before = server.jobs_total(), server.stored_files()
    tiny = png_bytes(1, 1)
    response = server.submit([("tiny.png", tiny)],
                             "resize:width=65535,height=65535,fit=fill,enlarge=true")
    error = error_of(response, 413)
    assert error["code"] == "output_too_large", error
    assert "step 0 (resize)" in error["message"] and "65535×65535" in error["message"], error
    error = error_of(server.submit([("a.png", png_bytes(400, 300))],
                                   "resize:width=14000,enlarge=true|rotate:angle=45"), 413)
    assert "step 1 (rotate)" in error["message"], error
    assert server.jobs_total() == jobs_before and server.stored_files() == stored_before


def _raw(server: Server, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    sock.sendall(head.encode())
    return sock


def _answer(sock: socket.socket) -> str:
    """The status line, headers and body (by Content-Length) of the server's answer."""
    data = b""
    with contextlib.suppress(OSError):
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode("latin-1")


def test_form_fields_beyond_the_limit_are_refused_while_they_stream_in(
    shared_serve: Callable[..., Server],
) -> None:
    server = shared_serve(workers=1)
    field = b"--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n" + b"x" * 60_000 + b"\r\n"
    sock = _raw(server, "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                "Content-Type: multipart/form-data; boundary=B\r\n\r\n")
    sent = 0
    with contextlib.suppress(OSError):  # the server may close while we still send
        while sent < 1_000_000_000:
            sock.sendall(b"%x\r\n%s\r\n" % (len(field), field))
            sent += len(field)
            if select.select([sock], [], [], 0)[0]:
                break
    answer = _answer(sock)
    sock.close()
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert sent < 20_000_000, f"{sent:,} bytes of fields were read before the refusal"
    assert server.client.get("/healthz").status_code == 200


@pytest.mark.parametrize("trickle", [False, True])
def test_a_body_that_stalls_or_trickles_is_cut_off_with_a_408(
    shared_serve: Callable[..., Server], trickle: bool,
) -> None:
    server = shared_serve(workers=1, upload_idle_timeout_seconds=1,
                          upload_min_bytes_per_second=2000)
    sock = _raw(server, "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                "Content-Type: multipart/form-data; boundary=B\r\n\r\n--B\r\n")
    if trickle:  # a byte every 0.3 s never pauses 1 s, but averages far below 2000 bytes/s
        with contextlib.suppress(OSError):
            for _ in range(60):
                if select.select([sock], [], [], 0.3)[0]:
                    break
                sock.sendall(b"x")
    answer = _answer(sock)
    sock.close()
    assert answer.startswith("HTTP/1.1 408"), answer[:300]
    expected = "IMGQ_UPLOAD_MIN_BYTES_PER_SECOND" if trickle else "IMGQ_UPLOAD_IDLE_TIMEOUT_SECONDS"
    assert expected in answer, answer
    assert server.staged_files() == []
