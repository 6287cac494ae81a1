"""Safe to expose: with IMGQ_AUTH=keys every route needs a key, a job is its key's alone (404
to any other key on every route of every API, as if it did not exist), admins see all; on
SQLite and PostgreSQL, through `imgq serve` over HTTP."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.fixtures.encoded import png_bytes
from tests.fixtures.keys import (
    Made,
    anonymised,
    auth,
    create_key,
    imgq_keys,
    make_jobs,
    routes,
    unknown,
)
from tests.fixtures.server import Server


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    yield "" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def _call(server: Server, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    return server.client.request(method, path, headers=headers)


def test_another_key_finds_nothing_on_any_route_of_any_api_and_no_key_gets_401(
        serve: Callable[..., Server], database_url: str) -> None:
    server = serve("--no-workers", auth="keys", database_url=database_url)
    alice = create_key(server, "alice", database_url=database_url)
    bob = create_key(server, "bob", database_url=database_url)
    admin = create_key(server, "ops", "--admin", database_url=database_url)
    made = make_jobs(server, auth(alice))

    # a status Alice just read is kept in memory for pollers; it is still hers alone
    seen = server.client.get(f"/v1/jobs/{made.v1}", headers=auth(alice))
    assert seen.status_code == 200 and seen.headers["etag"]
    for headers in (auth(bob), {**auth(bob), "If-None-Match": seen.headers["etag"]}):
        assert server.client.get(f"/v1/jobs/{made.v1}", headers=headers).status_code == 404
        listed = server.client.get(f"/v1/jobs?ids={made.v1}", headers=headers)
        assert listed.status_code == 200 and listed.json()["jobs"] == []

    for method, path in routes(made):
        nobody = _call(server, method, path, {})
        assert nobody.status_code == 401, (method, path, nobody.text)
        assert "Authorization: Bearer" in nobody.json()["error"]["message"]
        wrong = _call(server, method, path, auth(bob))
        missing = _call(server, *unknown(method, path, made), auth(bob))
        # exactly what a job that does not exist gets: nothing tells Bob the job is there
        assert (wrong.status_code, anonymised(wrong.text, made)) == (
            missing.status_code, anonymised(missing.text, made)), (method, path, wrong.text)
        if path.startswith("/v1/"):
            assert wrong.status_code == 404
        else:
            # each older API's own answer for an unknown job (image-api's is a 200 saying so)
            assert wrong.status_code in (400, 404) or "not found" in wrong.text, (path, wrong.text)

    _alice_still_has_everything(server, made, alice)
    _lists_show_only_the_callers_jobs(server, made, alice, bob, admin)


def _alice_still_has_everything(server: Server, made: Made, alice: str) -> None:
    job = server.client.get(f"/v1/jobs/{made.v1}", headers=auth(alice)).json()
    assert job["id"] == made.v1 and not job["cancel_requested"]  # Bob's cancel did nothing
    preview = server.client.get(f"/v1/jobs/{made.v1}/items/0/preview", headers=auth(alice))
    assert preview.status_code == 200 and preview.content[8:12] == b"WEBP"
    task = server.client.get(f"/task-status/{made.celery}", headers=auth(alice))
    assert task.json() == {"task_id": made.celery, "status": "PENDING"}
    page = server.client.get(f"/result/{made.queue_file}", headers=auth(alice))
    assert page.status_code == 200 and made.queue_file in page.text


def _lists_show_only_the_callers_jobs(server: Server, made: Made, alice: str, bob: str,
                                      admin: str) -> None:
    c = server.client
    mine = {j["id"] for j in c.get("/v1/jobs", headers=auth(alice)).json()["jobs"]}
    assert made.v1 in mine and made.celery in mine and len(mine) == 6
    assert c.get("/v1/jobs", headers=auth(bob)).json()["total"] == 0
    assert c.get(f"/v1/jobs?ids={made.v1},{made.celery}", headers=auth(bob)).json()["jobs"] == []
    assert c.get("/api/jobs", headers=auth(bob)).json() == []
    assert c.get(f"/api/jobs?ids={made.upscaler}", headers=auth(bob)).json() == []
    assert [j["id"] for j in c.get("/api/jobs", headers=auth(alice)).json()] == [made.upscaler]
    every = c.get("/v1/jobs?limit=200", headers=auth(admin)).json()
    assert mine <= {j["id"] for j in every["jobs"]}  # (PostgreSQL keeps other tests' jobs)
    metrics = c.get("/metrics", headers=auth(admin))
    assert metrics.status_code == 200 and "imgq_" in metrics.text
    refused = c.get("/metrics", headers=auth(alice))
    assert refused.status_code == 403 and "admin" in refused.json()["error"]["message"]
    assert c.delete(f"/v1/jobs/{made.v1}", headers=auth(admin)).status_code == 204
    assert c.get(f"/v1/jobs/{made.v1}", headers=auth(alice)).status_code == 404


def test_health_checks_and_the_page_need_no_key_but_the_docs_do(
        serve: Callable[..., Server]) -> None:
    server = serve("--no-workers", auth="keys")
    assert "no API key yet" in server.log_text()
    for path in ("/healthz", "/readyz", "/", "/jobs", "/static/app.css"):
        assert server.client.get(path).status_code == 200, path
    for path in ("/openapi.json", "/v1/operations", "/metrics", "/upload"):
        answer = server.client.get(path)
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"].startswith("Bearer")
    unknown_key = server.client.get("/v1/jobs", headers={"X-API-Key": "imgq_nope"})
    assert unknown_key.status_code == 401
    assert "unknown or was revoked" in unknown_key.json()["error"]["message"]
    image = png_bytes(30, 20)
    for path, field in (("/v1/jobs", "files"), ("/api/jobs/upload", "files"),
                        ("/process-job", "files"), ("/upload", "file"),
                        ("/api/v1/tasks/create/", "image"), ("/process-image/", "file")):
        refused = server.client.post(path, files={field: ("a.png", image, "image/png")},
                                     data={"pipeline": "grayscale", "operation": "grayscale"})
        assert refused.status_code == 401, (path, refused.text)
    assert server.stored_files() == [] and server.staged_files() == []
    key = create_key(server, "reader")
    schema = server.client.get("/openapi.json", headers=auth(key)).json()
    assert set(schema["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}


def test_a_key_in_x_api_key_works_like_a_bearer_key_and_downloads_its_result(
        serve: Callable[..., Server]) -> None:
    server = serve(auth="keys", workers=1)
    key = create_key(server, "carol")
    made = server.client.post("/v1/jobs", headers={"X-API-Key": key},
                              files=[("files", ("a.png", png_bytes(60, 40)))],
                              data={"pipeline": "resize:width=30"})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    deadline = time.monotonic() + 60
    while server.client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": key}
                            ).json()["status"] != "succeeded":
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.1)
    result = server.client.get(f"/v1/jobs/{job_id}/items/0/result", headers=auth(key))
    assert result.content.startswith(b"\x89PNG")
    assert result.headers["x-content-type-options"] == "nosniff"
    assert result.headers["content-disposition"].startswith('attachment; filename="a.png"')
    archive = server.client.get(f"/v1/jobs/{job_id}/archive", headers=auth(key))
    assert zipfile.ZipFile(io.BytesIO(archive.content)).namelist() == ["a.png"]
    listed = imgq_keys(server, "list")
    assert "carol" in listed and key not in listed
