"""The one mapping from exceptions to answers: causes named, bugs hidden and logged."""

from __future__ import annotations

import errno
import logging

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from imgq.api import failures


def _app(exc: BaseException) -> TestClient:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    failures.install(app)
    app.add_middleware(failures.CatchAll)
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(("exc", "status", "code"), [
    (OSError(errno.ENOSPC, "No space left on device", "/srv/secret/path"), 503, "storage_full"),
    (OSError(errno.EROFS, "Read-only file system"), 503, "storage_read_only"),
    (OSError(errno.EIO, "Input/output error"), 503, "storage_unavailable"),
    (OperationalError("SELECT 1", {}, Exception("connection refused")), 503,
     "database_unavailable"),
    (RecursionError("maximum recursion depth exceeded"), 400, "invalid_request"),
    (httpx.ConnectError("[Errno 111] Connection refused"), 503, "unavailable"),
    (httpx.ReadTimeout("timed out"), 503, "unavailable"),
])
def test_infrastructure_failures_are_named_by_cause(exc: BaseException, status: int,
                                                    code: str) -> None:
    response = _app(exc).get("/boom")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert "/srv/secret" not in response.text
    if status == 503:
        assert int(response.headers["Retry-After"]) > 0


def test_a_bug_is_a_json_500_with_a_safe_message_and_a_logged_traceback(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another test may have run a logging.config that disabled the loggers existing then.
    monkeypatch.setattr(logging.getLogger("imgq.api.failures"), "disabled", False)
    response = _app(ValueError("password=hunter2 in a bug")).get("/boom")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "internal_error" and "hunter2" not in response.text
    logged = [r for r in caplog.records if r.name == "imgq.api.failures"]
    assert logged and logged[0].exc_info is not None and "GET /boom" in logged[0].getMessage()
