"""CORS: a page from an origin in IMGQ_CORS_ORIGINS may call imgq, compatibility routes
included; a page from any other origin gets no Access-Control-Allow-Origin, and with the
setting empty imgq sends no CORS headers at all."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from imgq.config import load_settings
from tests.fixtures.encoded import png_bytes
from tests.fixtures.server import Server

PAGE = "http://localhost:3000"
OTHER = "http://evil.example"


def _preflight(server: Server, path: str, origin: str, method: str = "POST",
               headers: str = "content-type") -> dict[str, str]:
    response = server.client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers})
    return {"status": str(response.status_code), **{k.lower(): v for k, v in response.headers.items()}}


def test_a_configured_origin_may_upload_to_every_api_after_its_preflight(
        serve: Callable[..., Server]) -> None:
    server = serve(cors_origins=f"{PAGE},http://127.0.0.1:5173")
    for path in ("/v1/jobs", "/api/jobs/upload", "/process-job", "/upload", "/process-image/"):
        answer = _preflight(server, path, PAGE,
                            headers="content-type,authorization,x-api-key,idempotency-key")
        assert answer["status"] == "200", (path, answer)
        assert answer["access-control-allow-origin"] == PAGE
        assert "POST" in answer["access-control-allow-methods"]
        allowed = answer["access-control-allow-headers"].lower()
        assert {"authorization", "x-api-key", "idempotency-key"} <= set(allowed.split(", "))

    response = server.client.post("/v1/jobs", headers={"Origin": PAGE},
                                  files=[("files", ("a.png", png_bytes(), "image/png"))],
                                  data={"pipeline": "resize:width=40"})
    assert response.status_code == 201, response.text
    assert response.headers["access-control-allow-origin"] == PAGE
    exposed = response.headers["access-control-expose-headers"].lower()
    assert {"location", "content-disposition", "retry-after"} <= set(exposed.split(", "))
    job = server.wait_finished(response.json()["id"])
    result = server.client.get(job["items"][0]["result_url"], headers={"Origin": PAGE})
    assert result.content.startswith(b"\x89PNG")
    assert result.headers["access-control-allow-origin"] == PAGE


def test_an_error_answer_carries_the_header_so_the_page_can_read_its_message(
        shared_serve: Callable[..., Server]) -> None:
    server = shared_serve(cors_origins=PAGE)
    response = server.client.get("/v1/jobs/not-a-job", headers={"Origin": PAGE})
    assert response.status_code == 404
    assert response.headers["access-control-allow-origin"] == PAGE
    assert response.json()["error"]["message"]


def test_another_origin_gets_no_allow_origin(shared_serve: Callable[..., Server]) -> None:
    server = shared_serve(cors_origins=PAGE)
    answer = _preflight(server, "/api/jobs/upload", OTHER)
    assert answer["status"] == "400"
    assert "access-control-allow-origin" not in answer
    response = server.client.get("/healthz", headers={"Origin": OTHER})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_a_star_allows_every_origin(serve: Callable[..., Server]) -> None:
    server = serve(cors_origins="*")
    answer = _preflight(server, "/v1/jobs", OTHER)
    assert answer["status"] == "200"
    assert answer["access-control-allow-origin"] == "*"


def test_without_the_setting_no_cors_header_is_sent(serve: Callable[..., Server]) -> None:
    server = serve()
    response = server.client.get("/healthz", headers={"Origin": PAGE})
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    answer = _preflight(server, "/v1/jobs", PAGE)
    assert "access-control-allow-origin" not in answer


@pytest.mark.parametrize(("raw", "origins"), [
    ("http://a.test, http://b.test:8080/", ["http://a.test", "http://b.test:8080"]),
    ('["http://a.test", "*"]', ["http://a.test", "*"]),
    ("", []),
])
def test_the_origins_setting_reads_a_comma_list_or_json(
        raw: str, origins: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGQ_CORS_ORIGINS", raw)
    assert load_settings().cors_origins == origins
