"""Hostile input against a real `imgq serve`: bombs in every accepted format, truncations,
polyglots, extreme shapes, huge and nested fields, odd multipart boundaries, Unicode digits and
control characters in ids and names, on every route. Nothing gets a 5xx, the server stays
alive, its memory stays bounded, and what it accepts fails (if at all) blaming the input."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.test_limits import rss_mb
from tests.fixtures.encoded import png_bytes
from tests.fixtures.hostile import bombs, extreme_shapes, heic_bytes, polyglots, truncations
from tests.fixtures.server import Server

FORMATS = ["png", "jpeg", "webp", "gif", "tiff", "avif"]
WEIRD_IDS = ["%C2%B2", "%D9%A3", "%00", "%E2%80%AE", "..%2F..%2Fetc", "9" * 40, "x" * 5000,
             "%F0%9F%92%A5", "1e999", "-1", "%FF%FE"]
MAX_RSS_MB = 600


class Watched:
    """The server, and every answer it gave: none may be a 5xx."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.answers: list[tuple[str, int]] = []
        self.peak = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        assert self.server.process is not None
        while not self._done.wait(0.05):
            try:
                self.peak = max(self.peak, rss_mb(self.server.process.pid))
            except FileNotFoundError:
                return

    def record(self, what: str, response: httpx.Response) -> httpx.Response:
        self.answers.append((what, response.status_code))
        return response

    def submit(self, files: list[tuple[str, bytes]], pipeline: str = "grayscale",
               **fields: Any) -> httpx.Response:
        return self.record(f"POST /v1/jobs {[n for n, _ in files]}",
                           self.server.submit(files, pipeline, **fields))

    def get(self, path: str) -> httpx.Response:
        return self.record(f"GET {path[:80]}", self.server.client.get(path))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    root = tmp_path_factory.mktemp("hostile")
    server = Server(Path(root) / "data", Path(root) / "logs", {})
    server.log_dir.mkdir()
    server.start(workers=1)
    w = Watched(server)
    yield w
    w.stop()
    server.close()


def _no_server_errors(w: Watched) -> None:
    bad = [(what, status) for what, status in w.answers if status >= 500]
    assert not bad, bad
    assert w.server.client.get("/healthz").status_code == 200
    assert w.server.process is not None and w.server.process.poll() is None
    assert w.peak < MAX_RSS_MB, f"imgq serve reached {w.peak:.0f} MB"


def test_decompression_bombs_in_every_format_are_refused_from_their_header(
    watched: Watched,
) -> None:
    for name, data in bombs().items():
        response = watched.submit([(name, data)])
        assert response.status_code in (413, 415), (name, response.text)
        assert name in response.json()["error"]["message"], response.text
    _no_server_errors(watched)


def test_a_heic_this_server_cannot_decode_is_a_415_at_upload(watched: Watched) -> None:
    response = watched.submit([("photo.heic", heic_bytes())])
    assert response.status_code == 415, response.text
    assert "cannot decode HEIC" in response.json()["error"]["message"]
    _no_server_errors(watched)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncations_are_refused_or_fail_blaming_the_input(watched: Watched, fmt: str) -> None:
    accepted = []
    for name, data in truncations(fmt):
        response = watched.submit([(name, data)], "resize:width=50|encode:format=png")
        assert response.status_code in (201, 415, 422), (name, response.text)
        if response.status_code == 201:
            accepted.append(response.json()["id"])
    for job_id in accepted:
        job = watched.server.wait_finished(job_id, timeout=120)
        for item in job["items"]:
            if item["status"] == "failed":
                assert item["error"]["code"] == "decode_error", item["error"]
                assert "write" not in item["error"]["message"], item["error"]
    _no_server_errors(watched)


def test_polyglots_and_extreme_shapes_never_break_the_server(watched: Watched) -> None:
    for name, data in polyglots().items():
        response = watched.submit([(name, data)])
        assert response.status_code in (201, 400, 415), (name, response.text)
    for name, data in extreme_shapes().items():
        for pipeline in ("thumbnail:size=64", "rotate:angle=33", "resize:height=5000,enlarge=true",
                         "blur:sigma=50"):
            response = watched.submit([(name, data)], pipeline)
            assert response.status_code in (201, 413, 422), (name, pipeline, response.text)
    _no_server_errors(watched)


def test_huge_nested_and_odd_fields_are_4xx(watched: Watched) -> None:
    png = [("a.png", png_bytes(8, 8))]
    for pipeline in ("[" * 50_000, "{" * 1000, "blur:sigma=" + "[" * 50_000, "x" * 70_000,
                     "|" * 5000, "resize:width=²", "resize:width=1e999", "\x00\u202e"):
        assert watched.submit(png, pipeline).status_code in (400, 413, 422), pipeline[:20]
    for ttl in ("²", "1e999", "-1", "9" * 5000, "\u0663"):
        assert watched.submit(png, ttl_seconds=ttl).status_code in (201, 400, 422), ttl
    big_field = {f"f{i}": "v" * 60_000 for i in range(30)}
    assert watched.submit(png, **big_field).status_code == 413
    _no_server_errors(watched)


def test_odd_boundaries_are_4xx_on_the_upload_routes(watched: Watched) -> None:
    client = watched.server.client
    for route in ("/v1/jobs", "/upload", "/process-image/", "/process-job", "/api/jobs/upload",
                  "/api/v1/tasks/create/"):
        for boundary, body in (("b" * 300, b"--" + b"b" * 300 + b"\r\n"),
                               ('"quoted"', b'--"quoted"\r\n'), ("x", b"no boundary here"),
                               ("x", b"--x\r\nContent-Disposition: form-data\r\n\r\n"),
                               ("\u00e9", b"--\xc3\xa9\r\n"), ("", b"")):
            response = watched.record(f"POST {route} boundary={boundary[:10]}", client.post(
                route, content=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"
                         .encode("utf-8")}))
            assert response.status_code < 500, (route, boundary, response.text)
    _no_server_errors(watched)


def test_unicode_digits_and_control_characters_in_ids_and_names(watched: Watched) -> None:
    spec = watched.server.client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for weird in WEIRD_IDS:
            concrete = path
            for part in ("{job_id}", "{task_id}", "{index}", "{filename}", "{name}", "{id}",
                         "{key_id}"):
                concrete = concrete.replace(part, weird)
            for method in operations:
                if method not in ("get", "post", "delete"):
                    continue
                response = watched.record(
                    f"{method.upper()} {concrete[:60]}",
                    watched.server.client.request(method.upper(), concrete))
                assert response.status_code < 500, (method, concrete[:80], response.text[:200])
    names = ["\u202egpj.exe", "a\x00b.png", "../../etc/passwd", "\u0663\u00b2.png",
             "x" * 3000 + ".png", "\r\nSet-Cookie: a=b.png", "con.png", "\ud800.png"]
    files = [(n.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), png_bytes(8, 8, seed=i))
             for i, n in enumerate(names)]
    job = watched.submit(files, "grayscale").json()
    finished = watched.server.wait_finished(job["id"])
    for item in finished["items"]:
        assert "\u202e" not in item["name"] and "/" not in item["name"], item["name"]
        assert len(item["name"].encode()) <= 255, item["name"]
        download = watched.server.client.get(item["result_url"])
        assert download.status_code == 200
        header = download.headers["content-disposition"]
        assert "\r" not in header and "\n" not in header and "%E2%80%AE" not in header
    _no_server_errors(watched)
