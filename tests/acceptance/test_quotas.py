"""Quotas per key (429 with Retry-After, a message naming the quota and its value, nothing
stored) and revocation that counts at once on every API server of a fleet, on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.encoded import png_bytes
from tests.fixtures.keys import auth, create_key, imgq_keys
from tests.fixtures.server import Server


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def _submit(server: Server, key: str, files: int = 1, size: int = 40) -> httpx.Response:
    parts = [("files", (f"f{i}.png", png_bytes(size, size, seed=i))) for i in range(files)]
    return server.client.post("/v1/jobs", headers=auth(key), files=parts,
                              data={"pipeline": "grayscale"})


def _refused(response: httpx.Response, quota: str, value: int) -> str:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"] == {"quota": quota, "limit": value}
    assert str(value) in error["message"]
    return str(error["message"])


def test_each_quota_refuses_with_429_and_stores_nothing(
        serve: Callable[..., Server], database_url: str, tmp_path: Path) -> None:
    server = serve("--no-workers", auth="keys", database_url=database_url,
                   storage_url=(tmp_path / "blobs").as_uri(), quota_active_items=50)
    daily = create_key(server, "daily", "--max-items-per-day", "3", database_url=database_url)
    active = create_key(server, "active", "--max-active-items", "2", database_url=database_url)
    small = create_key(server, "small", "--max-stored-bytes", "20000",
                       database_url=database_url)
    files_before = _files(tmp_path)

    assert _submit(server, daily, files=2).status_code == 201
    message = _refused(_submit(server, daily, files=2), "items_per_day", 3)
    assert "per UTC day" in message and "1 are left" in message
    assert _submit(server, daily, files=1).status_code == 201  # the last one still fits

    assert _submit(server, active, files=2).status_code == 201
    _refused(_submit(server, active), "active_items", 2)
    cancelled = server.client.get("/v1/jobs", headers=auth(active)).json()["jobs"][0]["id"]
    server.client.post(f"/v1/jobs/{cancelled}/cancel", headers=auth(active))
    assert _submit(server, active).status_code == 201  # room again once items finished

    first = _submit(server, small, size=60)
    assert first.status_code == 201, first.text
    assert 10000 < first.json()["items"][0]["input"]["bytes"] < 20000
    message = _refused(_submit(server, small, size=60), "stored_bytes", 20000)
    assert "delete jobs or wait" in message

    # only the accepted inputs are stored: daily 2 + 1, active 2 + 1, small 1
    assert len(_files(tmp_path)) == len(files_before) + 7
    totals = {k: server.client.get("/v1/jobs", headers=auth(k)).json()["total"]
              for k in (daily, active, small)}
    assert list(totals.values()) == [2, 2, 1]


def _files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "blobs"
    return [p for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts] if root.exists() else []


def test_a_key_revoked_on_one_server_is_refused_at_once_by_another(
        serve: Callable[..., Server], database_url: str, tmp_path: Path) -> None:
    shared = {"auth": "keys", "database_url": database_url,
              "storage_url": (tmp_path / "blobs").as_uri()}
    first = serve("--no-workers", **shared)
    second = serve("--no-workers", **shared)
    key = create_key(first, "leaving", database_url=database_url)
    job = _submit(first, key).json()["id"]
    assert second.client.get(f"/v1/jobs/{job}", headers=auth(key)).json()["id"] == job

    assert "revoked key 'leaving'" in imgq_keys(first, "revoke", "leaving",
                                               database_url=database_url)
    for server in (second, first):
        refused = server.client.get(f"/v1/jobs/{job}", headers=auth(key))
        assert refused.status_code == 401
        assert "revoked" in refused.json()["error"]["message"]
    listed = imgq_keys(first, "list", "--revoked", database_url=database_url)
    assert "leaving" in listed and "revoked" in listed
