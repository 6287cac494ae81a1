"""Models served by Replicate, through `imgq serve`.

Replicate is a hosted service that cannot run here (no network): `StandIn` below stands in for
it, an HTTP server written for this test that follows Replicate's documented predictions API —
POST /v1/predictions ({"version", "input"}) or /v1/models/{owner}/{name}/predictions
({"input"}) with `Authorization: Bearer <token>`, answering a prediction with `id`, `status`
(starting → processing → succeeded | failed | canceled), `logs`, `output`, `error` and
`urls.get` / `urls.cancel`; POST /v1/files for inputs too large for a data URI; problem-details
errors ({"title", "detail", "status"}). Its outputs are files on a second server (as Replicate
serves them from its delivery host), which records whether anything sent it the token. Its
"models" do real work: `nearest` upscales the image it was sent, by the `scale` it was sent,
so the test checks the pixels that come back.
"""

from __future__ import annotations

import base64
import email.parser
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips

from tests.fixtures.encoded import png_bytes
from tests.fixtures.server import Server

TOKEN = "r8_standin_0123456789"
INLINE_BYTES = 4096


class StandIn:
    """Replicate's predictions API and its file delivery host, on two local ports."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.predictions: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.outputs: dict[str, bytes] = {}
        self.creates: list[dict[str, Any]] = []  # {"path", "body"}
        self.cancels: list[str] = []
        self.delivery_auth: list[str | None] = []
        self.unauthorized = 0
        self.fail_creates = 0
        self.fail_looks = False  # every look at a prediction answers 503
        self.release = threading.Event()
        self.gate = threading.Event()  # what the "gate" model waits for
        self.ids = itertools.count(1)
        self.api = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self._api))
        self.delivery = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self._deliver))
        self.url = f"http://127.0.0.1:{self.api.server_address[1]}/v1"
        self.delivery_url = f"http://127.0.0.1:{self.delivery.server_address[1]}"
        for server in (self.api, self.delivery):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in (self.api, self.delivery):
            server.shutdown()
            server.server_close()

    @staticmethod
    def _handler(route: Any) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's names
                route(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                route(self, "POST")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    # -- answering ------------------------------------------------------------------------
    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: Any,
              kind: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _problem(self, handler: BaseHTTPRequestHandler, status: int, title: str,
                 detail: str) -> None:
        self._send(handler, status, {"title": title, "detail": detail, "status": status},
                   "application/problem+json")

    def _deliver(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        with self.lock:
            self.delivery_auth.append(handler.headers.get("Authorization"))
            data = self.outputs.get(handler.path.rsplit("/", 1)[-1])
        if data is None:
            self._send(handler, 404, b"not found", "text/plain")
        else:
            self._send(handler, 200, data, "image/png")

    def _api(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            with self.lock:
                self.unauthorized += 1
            self._problem(handler, 401, "Unauthenticated",
                          "You did not pass a valid authentication token")
            return
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path
        if method == "POST" and path == "/v1/files":
            self._upload(handler, body)
        elif method == "POST" and (path == "/v1/predictions" or re.fullmatch(
                r"/v1/models/[\w.-]+/[\w.-]+/predictions", path)):
            self._create(handler, path, json.loads(body))
        elif match := re.fullmatch(r"/v1/predictions/(\w+)(/cancel)?", path):
            self._prediction(handler, method, match.group(1), bool(match.group(2)))
        else:
            self._problem(handler, 404, "Not found", f"no route {method} {path}")

    def _upload(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        head = f"Content-Type: {handler.headers['Content-Type']}\r\n\r\n".encode()
        message = email.parser.BytesParser().parsebytes(head + body)
        part = next(p for p in message.get_payload()  # type: ignore[union-attr]
                    if p.get_param("name", header="content-disposition") == "content")
        ident = f"file{next(self.ids)}"
        with self.lock:
            self.files[ident] = part.get_payload(decode=True)
        self._send(handler, 201, {"id": ident, "urls": {"get": f"{self.url}/files/{ident}"}})

    def _create(self, handler: BaseHTTPRequestHandler, path: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.creates.append({"path": path, "body": body})
            if self.fail_creates:
                self.fail_creates -= 1
                self._problem(handler, 503, "Service Unavailable", "try again shortly")
                return
        model = body.get("version") or path.split("/")[4]
        if "input" not in body:
            self._problem(handler, 422, "Input validation failed", "input is required")
            return
        if model == "nearest" and not isinstance(body["input"].get("scale"), int):
            self._problem(handler, 422, "Input validation failed", "scale: must be an integer")
            return
        ident = f"p{next(self.ids)}"
        prediction = {"id": ident, "model": model, "status": "starting", "input": body["input"],
                      "logs": "", "output": None, "error": None,
                      "urls": {"get": f"{self.url}/predictions/{ident}",
                               "cancel": f"{self.url}/predictions/{ident}/cancel"}}
        with self.lock:
            self.predictions[ident] = prediction
        self._send(handler, 201, prediction)

    def _prediction(self, handler: BaseHTTPRequestHandler, method: str, ident: str,
                    cancel: bool) -> None:
        with self.lock:
            prediction = self.predictions.get(ident)
            if prediction is None:
                self._problem(handler, 404, "Not found", "no such prediction")
                return
            if cancel and method == "POST":
                self.cancels.append(ident)
                if prediction["status"] in ("starting", "processing"):
                    prediction["status"] = "canceled"
            elif method == "GET":
                if self.fail_looks:
                    self._problem(handler, 503, "Service Unavailable", "try again shortly")
                    return
                self._advance(prediction)
            self._send(handler, 200, prediction)

    def _advance(self, prediction: dict[str, Any]) -> None:
        """One step of the prediction's life per look, as a hosted model would go."""
        if prediction["status"] == "starting":
            prediction["status"] = "processing"
            return
        if prediction["status"] != "processing":
            return
        model = prediction["model"]
        if model == "fails":
            prediction.update(status="failed", logs="Traceback ...",
                              error="The input image has no alpha channel to fill")
        elif model in ("holds", "forever", "gate") and not (
                (model == "holds" and self.release.is_set())
                or (model == "gate" and self.gate.is_set())):
            prediction["logs"] = "loading\n  0%|          | 0/50\n 42%|████▏     | 21/50"
        else:
            data = self._run(model, prediction["input"])
            self.outputs[f"{prediction['id']}.png"] = data
            url = f"{self.delivery_url}/pbxt/{prediction['id']}.png"
            prediction.update(status="succeeded", logs="100%|██████████| 50/50",
                              output=[url] if model == "tiny-sd" else url)

    def _run(self, model: str, given: dict[str, Any]) -> bytes:
        if "prompt" in given:  # text-to-image: a canvas coloured by the seed
            seed = int(given.get("seed", 0))
            canvas = pyvips.Image.black(int(given["width"]), int(given["height"]), bands=3)
            return bytes((canvas + [seed % 256, 128, 64]).cast("uchar").pngsave_buffer())
        image = pyvips.Image.new_from_buffer(self._file(given["image"]), "")
        scale = int(given.get("scale", 1))
        return bytes(image.resize(scale, kernel="nearest").pngsave_buffer())

    def _file(self, value: str) -> bytes:
        if value.startswith("data:"):
            return base64.b64decode(value.partition(",")[2])
        return self.files[value.rsplit("/", 1)[-1]]


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    stand_in = StandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture(scope="module")
def server(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("replicate")
    (root / "logs").mkdir()

    def endpoint(**spec: Any) -> dict[str, Any]:
        return {"kind": "replicate", "url": standin.url, "token": "replicate", **spec}

    endpoints = {
        "rep-x2": endpoint(operation="upscale", version="nearest", scale=2),
        "rep-holds": endpoint(operation="upscale", version="holds", scale=2),
        "rep-fails": endpoint(operation="upscale", version="fails", scale=2),
        "rep-forever": endpoint(operation="upscale", version="forever", scale=2),
        "rep-large": endpoint(operation="upscale", model="acme/nearest", scale=2),
        "rep-sd": endpoint(operation="generate", model="acme/tiny-sd"),
        "rep-revoked": endpoint(operation="upscale", version="nearest", scale=2, token="old"),
        "rep-badinput": endpoint(operation="upscale", version="nearest", scale=2,
                                 input={"image": "{image}", "scale": "x{scale}"}),
    }
    served = Server(root / "data", root / "logs", {})
    served.start(workers=2, ai_remote_endpoints=json.dumps(endpoints),
                 ai_remote_tokens=json.dumps({"replicate": TOKEN, "old": "r8_revoked"}),
                 ai_remote_poll_seconds="0.2", ai_remote_inline_bytes=str(INLINE_BYTES),
                 retry_backoff_seconds="0.3", cancel_poll_seconds="0.2")
    yield served
    served.close()


@pytest.fixture(autouse=True)
def _log_on_failure(server: Server, request: pytest.FixtureRequest) -> None:
    request.node.imgq_servers = [server]


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(pyvips.Image.new_from_buffer(data, "").numpy())


def _nearest(data: bytes, scale: int) -> np.ndarray:
    image = pyvips.Image.new_from_buffer(data, "")
    return np.asarray(image.resize(scale, kernel="nearest").numpy())


def _result(server: Server, job: dict[str, Any]) -> bytes:
    response = server.client.get(job["items"][0]["result_url"])
    assert response.status_code == 200, response.text
    return response.content


def test_a_prediction_is_followed_with_its_progress_and_its_output_comes_back(
        server: Server, standin: StandIn) -> None:
    image = png_bytes(24, 16, alpha=True, seed=3)
    assert len(image) < INLINE_BYTES
    job = server.submit_ok([("icon.png", image)], "upscale:model=rep-holds,scale=2")
    seen = server.wait_job(job["id"], lambda j: j["items"][0]["progress"] >= 40,
                           what="the model's own progress relayed")["items"][0]
    assert seen["status"] == "running"
    assert "rep-holds on Replicate at http://127.0.0.1" in seen["stage"]
    assert seen["stage"].endswith(": processing")
    standin.release.set()
    done = server.wait_finished(job["id"])
    item = done["items"][0]
    assert item["status"] == "succeeded", item
    assert (item["output"]["width"], item["output"]["height"]) == (48, 32)
    assert np.array_equal(_pixels(_result(server, done)), _nearest(image, 2))

    create = next(c for c in standin.creates if c["body"].get("version") == "holds")
    assert create["path"] == "/v1/predictions"
    assert create["body"]["input"]["scale"] == 2
    assert create["body"]["input"]["image"].startswith("data:image/png;base64,")
    assert standin.delivery_auth and not any(standin.delivery_auth)  # no token off the API


def test_a_large_image_goes_through_the_files_api_to_a_model_by_name(
        server: Server, standin: StandIn) -> None:
    image = png_bytes(64, 48, seed=5)
    assert len(image) > INLINE_BYTES
    job = server.submit_ok([("photo.png", image)], "upscale:model=rep-large,scale=2")
    done = server.wait_finished(job["id"])
    assert done["items"][0]["status"] == "succeeded", done["items"][0]
    assert np.array_equal(_pixels(_result(server, done)), _nearest(image, 2))
    create = next(c for c in standin.creates if c["path"].startswith("/v1/models/"))
    assert create["path"] == "/v1/models/acme/nearest/predictions"
    assert create["body"]["input"]["image"].startswith(f"{standin.url}/files/")


def test_a_failed_prediction_fails_the_item_with_replicates_message(server: Server) -> None:
    job = server.submit_ok([("a.png", png_bytes(16, 16))], "upscale:model=rep-fails,scale=2")
    item = server.wait_finished(job["id"])["items"][0]
    assert item["status"] == "failed", item
    assert item["error"]["code"] == "remote_failed"
    assert "The input image has no alpha channel to fill" in item["error"]["message"]


def test_cancelling_the_item_cancels_the_prediction(server: Server, standin: StandIn) -> None:
    job = server.submit_ok([("a.png", png_bytes(16, 16))], "upscale:model=rep-forever,scale=2")
    server.wait_job(job["id"], lambda j: j["items"][0]["progress"] >= 40,
                    what="the prediction running")
    forever = next(p for p in standin.predictions.values() if p["model"] == "forever")
    assert server.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    item = server.wait_finished(job["id"])["items"][0]
    assert item["status"] == "cancelled", item
    deadline = time.monotonic() + 10
    while forever["id"] not in standin.cancels:
        assert time.monotonic() < deadline, "the prediction was not canceled"
        time.sleep(0.05)
    assert forever["status"] == "canceled"


def test_a_503_from_replicate_is_retried_without_blaming_the_image(
        server: Server, standin: StandIn) -> None:
    before = len(standin.creates)
    standin.fail_creates = 1
    image = png_bytes(20, 12, seed=9)
    job = server.submit_ok([("b.png", image)], "upscale:model=rep-x2,scale=2")
    done = server.wait_finished(job["id"])
    item = done["items"][0]
    assert item["status"] == "succeeded", item
    assert len(standin.creates) - before == 2
    assert item["attempts"] >= 2
    assert np.array_equal(_pixels(_result(server, done)), _nearest(image, 2))


def test_generate_sends_the_refined_prompt_and_keeps_its_details(
        server: Server, standin: StandIn) -> None:
    response = server.client.post("/v1/jobs", files={"_": (None, b"")}, data={
        "pipeline": "generate:model=rep-sd,prompt=a lighthouse at dusk,width=96,height=64,"
                    "steps=4,seed=7"})
    assert response.status_code == 201, response.text
    done = server.wait_finished(response.json()["id"])
    item = done["items"][0]
    assert item["status"] == "succeeded", item
    sent = next(c for c in standin.creates if c["path"] == "/v1/models/acme/tiny-sd/predictions")
    given = sent["body"]["input"]
    assert given["prompt"].startswith("a lighthouse at dusk, ") and "8k" in given["prompt"]
    assert (given["width"], given["height"], given["num_inference_steps"], given["seed"]) == (
        96, 64, 4, 7)
    assert "blurry" in given["negative_prompt"]
    pixels = _pixels(_result(server, done))
    assert pixels.shape == (64, 96, 3) and tuple(pixels[0, 0]) == (7, 128, 64)
    details = item["details"]
    assert details["prompt_used"] == given["prompt"] and details["seed"] == 7
    assert details["model"] == "rep-sd"


def test_a_refused_token_is_the_servers_trouble_not_the_images(
        server: Server, standin: StandIn) -> None:
    before = standin.unauthorized
    job = server.submit_ok([("c.png", png_bytes(16, 16))], "upscale:model=rep-revoked,scale=2")
    waiting = server.wait_job(job["id"], lambda j: j["items"][0]["error"] is not None,
                              what="the refusal recorded")["items"][0]
    assert waiting["status"] in ("queued", "running"), waiting  # retried, not failed
    assert waiting["error"]["code"] == "remote_unavailable"
    assert "refused the token (401: You did not pass a valid authentication token)" in (
        waiting["error"]["message"])
    assert "IMGQ_AI_REMOTE_TOKENS" in waiting["error"]["message"]
    assert "r8_revoked" not in json.dumps(waiting)
    assert standin.unauthorized > before
    assert server.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert server.wait_finished(job["id"])["items"][0]["status"] == "cancelled"


def test_an_input_replicate_refuses_fails_the_item_with_its_message(
        server: Server, standin: StandIn) -> None:
    job = server.submit_ok([("d.png", png_bytes(16, 16))], "upscale:model=rep-badinput,scale=2")
    item = server.wait_finished(job["id"])["items"][0]
    assert item["status"] == "failed", item
    assert item["error"]["code"] == "remote_failed"
    assert "refused it: scale: must be an integer" in item["error"]["message"]
    sent = [c for c in standin.creates if c["body"]["input"].get("scale") == "x2"]
    assert len(sent) == 1  # not retried: it is about this input


def test_the_time_limit_cancels_the_prediction(standin: StandIn, tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    endpoints = {"rep-forever": {"operation": "upscale", "kind": "replicate",
                                 "url": standin.url, "token": "replicate",
                                 "version": "forever", "scale": 2}}
    limited = Server(tmp_path / "data", tmp_path / "logs", {})
    before = set(standin.cancels)
    try:
        limited.start(workers=1, ai_remote_endpoints=json.dumps(endpoints),
                      ai_remote_tokens=json.dumps({"replicate": TOKEN}),
                      ai_remote_poll_seconds="0.2", item_time_limit_seconds="3")
        job = limited.submit_ok([("e.png", png_bytes(16, 16))], "upscale:model=rep-forever")
        item = limited.wait_finished(job["id"])["items"][0]
    finally:
        limited.close()
    assert item["status"] == "failed", item
    assert item["error"]["code"] == "time_limit"
    assert "time limit" in item["error"]["message"]
    cancelled = set(standin.cancels) - before
    assert len(cancelled) == 1
    assert standin.predictions[cancelled.pop()]["status"] == "canceled"


def test_a_cancel_while_replicate_is_failing_still_cancels_the_item(
        server: Server, standin: StandIn) -> None:
    job = server.submit_ok([("f.png", png_bytes(16, 16))], "upscale:model=rep-forever,scale=2")
    server.wait_job(job["id"], lambda j: j["items"][0]["progress"] >= 40,
                    what="the prediction running")
    standin.fail_looks = True
    try:
        assert server.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        item = server.wait_finished(job["id"], timeout=30)["items"][0]
    finally:
        standin.fail_looks = False
    assert item["status"] == "cancelled", item


def test_remote_generate_items_in_flight_wait_side_by_side(standin: StandIn,
                                                           tmp_path: Path) -> None:
    """No checkpoint here: every generate step only waits on the endpoint, so two items in
    flight in one AI worker are at the endpoint at once (a local pipeline runs one at a time)."""
    (tmp_path / "logs").mkdir()
    endpoints = {"rep-gated": {"operation": "generate", "kind": "replicate", "url": standin.url,
                               "token": "replicate", "version": "gate"}}
    two = Server(tmp_path / "data", tmp_path / "logs", {})
    try:
        two.start(workers=2, ai_items_in_flight="2", ai_remote_endpoints=json.dumps(endpoints),
                  ai_remote_tokens=json.dumps({"replicate": TOKEN}), ai_remote_poll_seconds="0.2")
        jobs = []
        for seed in (1, 2):
            sent = two.client.post("/v1/jobs", files={"_": (None, b"")}, data={
                "pipeline": f"generate:prompt=a kite,width=64,height=64,steps=2,seed={seed}"})
            assert sent.status_code == 201, sent.text
            jobs.append(sent.json()["id"])
        deadline = time.monotonic() + 30
        while sum(p["model"] == "gate" and p["status"] == "processing" and "42%" in p["logs"]
                  for p in list(standin.predictions.values())) < 2:
            assert time.monotonic() < deadline, "the two items did not run side by side"
            time.sleep(0.1)
        standin.gate.set()
        done = [two.wait_finished(job)["items"][0] for job in jobs]
    finally:
        two.close()
    assert [item["status"] for item in done] == ["succeeded", "succeeded"]
    assert sorted(item["details"]["seed"] for item in done) == [1, 2]
