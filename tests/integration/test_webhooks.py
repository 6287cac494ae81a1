"""Webhooks: signatures, address checks, and delivery from the outbox with retries."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from imgq.api.app import create_app
from imgq.compose import open_runtime
from imgq.config import load_settings
from imgq.worker.webhooks import (
    WebhookRefused,
    check_callback_url,
    resolve_public,
    sign,
    verify_signature,
)
from tests.e2e.server import (
    WEBHOOK_SECRET,
    Server,
    running_server,
    shared_server,
    write_picture,
)
from tests.fixtures.keys import create_key


def test_signature_covers_timestamp_and_body() -> None:
    body = b'{"id":"x"}'
    header = sign("secret", body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify_signature("secret", body, header, now=1_700_000_010)
    assert not verify_signature("secret", body + b" ", header, now=1_700_000_010)
    assert not verify_signature("other", body, header, now=1_700_000_010)
    assert not verify_signature("secret", body, header, now=1_700_001_000), "too old"
    assert not verify_signature("secret", body, "v1=abc", now=1_700_000_010)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://10.1.2.3/hook", "http://[::1]:8080/x",
    "http://169.254.169.254/latest", "http://localhost:9000/", "http://192.168.0.5/",
    "http://[::ffff:127.0.0.1]/",
])
def test_local_and_private_addresses_are_refused(url: str) -> None:
    with pytest.raises(WebhookRefused, match="IMGQ_WEBHOOK_ALLOW_PRIVATE"):
        check_callback_url(url, allow_private=False)
    assert check_callback_url(url, allow_private=True) == url


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/hook", "http://u:p@example.com/"])
def test_callback_url_must_be_plain_http(url: str) -> None:
    with pytest.raises(WebhookRefused):
        check_callback_url(url, allow_private=False)


def test_names_are_checked_after_resolving() -> None:
    with pytest.raises(WebhookRefused, match="resolves to 127.0.0.1"):
        resolve_public("localhost", 80, allow_private=False)
    assert resolve_public("localhost", 80, allow_private=True) in ("127.0.0.1", "::1")


def test_submit_refuses_a_private_callback_and_a_server_without_secret(tmp_path: Path) -> None:
    image = write_picture(tmp_path / "a.png", 32, 32).read_bytes()
    form = {"pipeline": "grayscale", "callback_url": "http://10.0.0.7/hook"}

    async def post(secret: str, data_dir: Path) -> tuple[httpx.Response, int]:
        settings = load_settings(data_dir=data_dir, webhook_secret=secret)
        app = create_app(open_runtime(settings, run_migrations=True), sweeper=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.post("/v1/jobs", files={"files": ("a.png", image)},
                                         data=form)
            total = (await client.get("/v1/jobs")).json()["total"]
        app.state.runtime.close()
        return response, total

    for secret, status, words in (("s3cret", 422, "private or local address"),
                                  ("", 400, "IMGQ_WEBHOOK_SECRET")):
        response, total = asyncio.run(post(secret, tmp_path / f"d{status}"))
        assert response.status_code == status
        assert words in response.json()["error"]["message"]
        assert total == 0, "nothing stored"


class Receiver:
    """A local webhook receiver that answers 500 to the first delivery, then 200."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.got_two = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.deliveries.append((dict(self.headers), body))
                self.send_response(500 if len(outer.deliveries) == 1 else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if len(outer.deliveries) >= 2:
                    outer.got_two.set()

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hooks/imgq?x=1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def server() -> Server:
    return shared_server("workers")


def test_finished_job_is_delivered_signed_and_retried_after_a_500(
        server: Server, receiver: Receiver, tmp_path: Path) -> None:
    image = write_picture(tmp_path / "a.png", 64, 48).read_bytes()
    response = httpx.post(f"{server.url}/v1/jobs", files={"files": ("a.png", image)},
                          data={"pipeline": "grayscale", "callback_url": receiver.url})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]

    assert receiver.got_two.wait(30), f"deliveries: {len(receiver.deliveries)}"
    time.sleep(0.5)
    assert len(receiver.deliveries) == 2, "no more deliveries once one succeeded"
    (first_headers, first_body), (headers, body) = receiver.deliveries
    assert first_headers["Imgq-Delivery"] == headers["Imgq-Delivery"]
    assert (first_headers["Imgq-Attempt"], headers["Imgq-Attempt"]) == ("1", "2")
    assert headers["Imgq-Event"] == "job.finished"
    assert headers["Content-Type"] == "application/json"
    assert verify_signature(WEBHOOK_SECRET, body, headers["Imgq-Signature"])
    assert not verify_signature("wrong", body, headers["Imgq-Signature"])
    job = json.loads(body)
    assert job == httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["items"][0]["result_url"]


def test_a_job_submitted_with_a_key_is_signed_with_that_keys_secret(
        receiver: Receiver, tmp_path: Path) -> None:
    image = write_picture(tmp_path / "a.png", 64, 48).read_bytes()
    with running_server(tmp_path / "keyed", IMGQ_AUTH="keys", IMGQ_WEBHOOK_ALLOW_PRIVATE="true",
                        IMGQ_WEBHOOK_RETRY_BACKOFF_SECONDS="0.2", IMGQ_LEASE_SECONDS="2",
                        IMGQ_WEBHOOK_SECRET=WEBHOOK_SECRET) as keyed:
        key = create_key(keyed, "hooks")
        response = httpx.post(f"{keyed.url}/v1/jobs", files={"files": ("a.png", image)},
                              headers={"X-API-Key": key},
                              data={"pipeline": "grayscale", "callback_url": receiver.url})
        assert response.status_code == 201, response.text
        assert receiver.got_two.wait(30), f"deliveries: {len(receiver.deliveries)}"
    headers, body = receiver.deliveries[-1]
    signing_key = hashlib.sha256(key.encode()).hexdigest()
    assert verify_signature(signing_key, body, headers["Imgq-Signature"])
    assert not verify_signature(WEBHOOK_SECRET, body, headers["Imgq-Signature"])
    assert json.loads(body)["id"] == response.json()["id"]
