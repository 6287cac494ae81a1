"""A model served by a remote endpoint of kind imgq: a second, real `imgq serve` (the GPU
machine of a deployment) behind an API key, and the imgq that users talk to sending its model
steps there (IMGQ_AI_REMOTE_ENDPOINTS).

The local server is told a model name it has no weights for ("gpu-*"); the remote runs the
shipped model it maps to. Small images and the cheapest shipped models keep it fast."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

from tests.acceptance.fleet_support import S3Server
from tests.fixtures.encoded import png_bytes
from tests.fixtures.keys import create_key
from tests.fixtures.server import Server, free_port, imgq_command


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(pyvips.Image.new_from_buffer(data, "").numpy())


def _remote_settings(remote: Server, key: str, **endpoints: dict[str, Any]) -> dict[str, Any]:
    table = {name: {"operation": "upscale", "kind": "imgq", "url": remote.url, "token": "gpu",
                    **spec} for name, spec in endpoints.items()}
    return {"ai_remote_endpoints": json.dumps(table),
            "ai_remote_tokens": json.dumps({"gpu": key}),
            "ai_remote_poll_seconds": "0.2", "retry_backoff_seconds": "0.3"}


def _result(server: Server, job: dict[str, Any]) -> bytes:
    response = server.client.get(job["items"][0]["result_url"])
    assert response.status_code == 200, response.text
    return response.content


def _direct(remote: Server, key: str, image: bytes, pipeline: str,
            attachments: tuple[tuple[str, bytes], ...] = (), redirected: bool = False) -> bytes:
    """The same work sent straight to the remote server, as the reference."""
    headers = {"Authorization": f"Bearer {key}"}
    sent = remote.client.post("/v1/jobs", data={"pipeline": pipeline}, headers=headers,
                              files=[("files", ("a.png", image, "image/png")),
                                     *[("attachments", (name, data, "image/png"))
                                       for name, data in attachments]])
    assert sent.status_code == 201, sent.text
    job_id = sent.json()["id"]
    deadline = time.monotonic() + 60
    while (job := remote.client.get(f"/v1/jobs/{job_id}", headers=headers).json()
           )["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["items"][0]["status"] == "succeeded", job
    result = remote.client.get(job["items"][0]["result_url"], headers=headers)
    if redirected:
        assert result.is_redirect, result.status_code
        result = remote.client.get(result.headers["location"])
    assert result.status_code == 200
    return result.content


def test_an_item_goes_through_the_remote_imgq_and_comes_back_with_its_pixels(
        serve: Callable[..., Server]) -> None:
    remote = serve(auth="keys", workers=1)
    key = create_key(remote, "front")
    local = serve(workers=1, **_remote_settings(
        remote, key, **{"gpu-anime": {"model": "realesr-animevideov3", "scale": 4},
                        "gpu-style": {"operation": "style_transfer"}}))

    operations = local.client.get("/v1/operations").json()
    upscale = next(op for op in operations if op["name"] == "upscale")
    assert upscale["remote"] == {
        "gpu-anime": f"imgq at {remote.url} (realesr-animevideov3)"}
    assert "gpu-anime" in upscale["params"]["properties"]["model"]["enum"]
    models = local.client.get("/v1/models").json()["remote"]
    assert models[0] == {"name": "gpu-anime", "operation": "upscale", "kind": "imgq",
                         "where": f"imgq at {remote.url} (realesr-animevideov3)",
                         "available": True}
    assert key not in json.dumps(operations) + json.dumps(models)

    image = png_bytes(40, 30)
    job = local.submit_ok([("small.png", image)], "upscale:model=gpu-anime,scale=4")
    done = local.wait_finished(job["id"])
    item = done["items"][0]
    assert item["status"] == "succeeded", item
    assert (item["output"]["width"], item["output"]["height"]) == (160, 120)
    expected = _direct(remote, key, image, "upscale:model=realesr-animevideov3,scale=4")
    assert np.array_equal(_pixels(_result(local, done)), _pixels(expected))

    # An operation served whole, with the attachment its step names sent along.
    styled = next(op for op in operations if op["name"] == "style_transfer")
    assert styled["remote"] == {"gpu-style": f"imgq at {remote.url}"}
    photo, painting = png_bytes(64, 48, seed=4), png_bytes(48, 48, seed=11)
    pipeline = "style_transfer:style_image=paint.png,working_size=64"
    sent = local.client.post("/v1/jobs", data={"pipeline": pipeline}, files=[
        ("files", ("photo.png", photo, "image/png")),
        ("attachments", ("paint.png", painting, "image/png"))])
    assert sent.status_code == 201, sent.text
    done = local.wait_finished(sent.json()["id"])
    assert done["items"][0]["status"] == "succeeded", done["items"][0]
    expected = _direct(remote, key, photo, pipeline, (("paint.png", painting),))
    assert np.array_equal(_pixels(_result(local, done)), _pixels(expected))


def test_the_remote_server_killed_mid_item_is_retried_and_the_item_finishes(
        serve: Callable[..., Server]) -> None:
    remote = serve(auth="keys", workers=1)
    key = create_key(remote, "front")
    local = serve(workers=1, **_remote_settings(
        remote, key, **{"gpu-esrgan": {"model": "realesrgan-x4plus"}}))
    image = png_bytes(160, 120)  # a few seconds of x4plus on the remote: seen running there
    job = local.submit_ok([("photo.png", image)], "upscale:model=gpu-esrgan,scale=4")

    # The remote's own stage, relayed: its worker has the item.
    local.wait_job(job["id"], lambda j: "upscale ×4" in (j["items"][0]["stage"] or ""),
                   what="the remote's progress relayed")
    remote.kill()
    waiting = local.wait_job(job["id"], lambda j: j["items"][0]["status"] == "queued"
                             and j["items"][0]["error"] is not None,
                             what="a retry after the remote went away")["items"][0]
    assert waiting["error"]["code"] == "remote_unavailable", waiting
    assert "could not be reached" in waiting["error"]["message"]
    time.sleep(1.0)  # it stays down a while: the item waits, it is not failed
    assert local.job(job["id"])["items"][0]["status"] in ("queued", "running")

    remote.start(same_port=True, auth="keys", workers=1)
    done = local.wait_finished(job["id"], timeout=90)
    item = done["items"][0]
    assert item["status"] == "succeeded", item
    assert item["attempts"] >= 2
    expected = _direct(remote, key, image, "upscale:model=realesrgan-x4plus,scale=4")
    assert np.array_equal(_pixels(_result(local, done)), _pixels(expected))


def test_a_remote_refusal_of_the_image_fails_the_item_with_the_remotes_message(
        serve: Callable[..., Server]) -> None:
    remote = serve(auth="keys", workers=1, max_pixels="1000")
    key = create_key(remote, "front")
    local = serve(workers=1, **_remote_settings(
        remote, key, **{"gpu-anime": {"model": "realesr-animevideov3"}}))
    job = local.submit_ok([("big.png", png_bytes(64, 48))], "upscale:model=gpu-anime")
    item = local.wait_finished(job["id"])["items"][0]
    assert item["status"] == "failed", item
    assert item["error"]["code"] == "remote_failed"
    assert "1,000" in item["error"]["message"] or "1000" in item["error"]["message"]
    assert remote.url.split("//")[1] in item["error"]["message"]


def test_serve_refuses_to_start_with_an_endpoint_whose_token_is_not_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGQ_")}
    env.update({"IMGQ_DATA_DIR": str(tmp_path), "IMGQ_PORT": str(free_port()),
                "IMGQ_SETTINGS_FILE": str(tmp_path / "absent.toml"),
                "IMGQ_AI_REMOTE_ENDPOINTS": json.dumps({"gpu-x4": {
                    "operation": "upscale", "kind": "imgq", "url": "http://gpu.internal:8000",
                    "token": "gpu"}})})
    done = subprocess.run([*imgq_command(), "serve"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert ("IMGQ_AI_REMOTE_ENDPOINTS: gpu-x4 names token 'gpu', which IMGQ_AI_REMOTE_TOKENS "
            "does not have") in done.stderr


def test_cancelling_the_item_cancels_the_job_on_the_remote_imgq(
        serve: Callable[..., Server]) -> None:
    remote = serve(auth="keys", workers=1)
    key = create_key(remote, "front")
    local = serve(workers=1, cancel_poll_seconds="0.2", **_remote_settings(
        remote, key, **{"gpu-esrgan": {"model": "realesrgan-x4plus"}}))
    # ~20 s of work on this CPU: still running long after the cancel, unless cancelled.
    job = local.submit_ok([("photo.png", png_bytes(160, 120))], "upscale:model=gpu-esrgan")
    local.wait_job(job["id"], lambda j: "upscale ×4" in (j["items"][0]["stage"] or ""),
                   what="the remote's progress relayed")
    headers = {"Authorization": f"Bearer {key}"}

    def remote_active() -> list[dict[str, Any]]:
        listed = remote.client.get("/v1/jobs", headers=headers).json()["jobs"]
        return [j for j in listed if j["status"] in ("queued", "running")]

    assert len(remote_active()) == 1
    assert local.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert local.wait_finished(job["id"])["items"][0]["status"] == "cancelled"
    deadline = time.monotonic() + 8
    while remote_active():
        assert time.monotonic() < deadline, "the remote job kept running"
        time.sleep(0.1)


def test_a_remote_that_redirects_to_presigned_storage_gives_its_result(
        serve: Callable[..., Server], s3_server: S3Server) -> None:
    remote = serve(auth="keys", workers=1, storage_url=f"s3://{s3_server.new_bucket()}/gpu",
                   s3_presigned_downloads="true", **s3_server.settings())
    key = create_key(remote, "front")
    local = serve(workers=1, **_remote_settings(
        remote, key, **{"gpu-anime": {"model": "realesr-animevideov3"}}))
    image = png_bytes(40, 30, seed=2)
    job = local.submit_ok([("small.png", image)], "upscale:model=gpu-anime")
    done = local.wait_finished(job["id"])
    assert done["items"][0]["status"] == "succeeded", done["items"][0]
    expected = _direct(remote, key, image, "upscale:model=realesr-animevideov3,scale=4",
                       redirected=True)
    assert np.array_equal(_pixels(_result(local, done)), _pixels(expected))
