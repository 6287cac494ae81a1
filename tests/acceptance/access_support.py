"""Helpers of the access tests: API keys made with the real `imgq keys` command, and one
request to each route of every API, by job id."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any

import httpx

from tests.acceptance.conftest import Server, _imgq_command, jpeg_bytes, png_bytes


def imgq_keys(server: Server, *args: str, database_url: str = "") -> str:
    """Run `imgq keys ...` on the server's database; return what it printed on stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGQ_")}
    env.update({"IMGQ_DATA_DIR": str(server.data_dir), "IMGQ_DATABASE_URL": database_url})
    done = subprocess.run([*_imgq_command(), "keys", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def create_key(server: Server, name: str, *options: str, database_url: str = "") -> str:
    secret = imgq_keys(server, "create", name, *options, database_url=database_url)
    assert secret.startswith("imgq_") and len(secret) > 40, secret
    return secret


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class Made:
    """One job made through each API, with the ids each API names it by."""

    v1: str
    upscaler: str
    image_api: str
    queue_task: int
    queue_file: str
    backend_ai: str
    celery: str


def make_jobs(server: Server, headers: dict[str, str]) -> Made:
    c = server.client

    def ok(response: httpx.Response) -> Any:
        assert response.status_code in (200, 201), response.text
        return response.json()

    jpeg = jpeg_bytes(40, 30)
    v1 = ok(c.post("/v1/jobs", headers=headers, files=[("files", ("a.png", png_bytes(40, 30)))],
                   data={"pipeline": "grayscale"}))["id"]
    upscaler = ok(c.post("/api/jobs/upload", headers=headers,
                         files=[("files", ("u.png", png_bytes(16, 16)))],
                         data={"scale": "2", "method": "real_esrgan"}))["job_ids"][0]
    image_api = ok(c.post("/process-job", headers=headers, params={"filter": "blur"},
                          files=[("files", ("i.jpg", jpeg, "image/jpeg"))]))["job_id"]
    queue = ok(c.post("/upload", headers=headers,
                      files={"file": ("q-secret-name.jpg", jpeg, "image/jpeg")}))
    backend = ok(c.post("/api/v1/tasks/create/", headers=headers,
                        data={"task_type": "background_removal", "prompt": "cut it out"},
                        files={"image": ("b.png", png_bytes(16, 16), "image/png")}))["task_id"]
    celery = ok(c.post("/process-image/", headers=headers,
                       files={"file": ("c.jpg", jpeg, "image/jpeg")},
                       data={"operation": "grayscale"}))["task_id"]
    return Made(v1, upscaler, image_api, queue["task_id"], queue["filename"], backend, celery)


def routes(m: Made) -> list[tuple[str, str]]:
    """(method, path) of every route that names a job, in each API."""
    return [
        ("GET", f"/v1/jobs/{m.v1}"),
        ("GET", f"/v1/jobs/{m.v1}/items/0/result"),
        ("GET", f"/v1/jobs/{m.v1}/items/0/preview"),
        ("GET", f"/v1/jobs/{m.v1}/archive"),
        ("GET", f"/v1/jobs/{m.v1}/events"),
        ("POST", f"/v1/jobs/{m.v1}/cancel"),
        ("DELETE", f"/v1/jobs/{m.v1}"),
        ("GET", f"/api/jobs/{m.upscaler}/download"),
        ("POST", f"/api/jobs/{m.upscaler}/cancel"),
        ("GET", f"/status-job/{m.image_api}"),
        ("GET", f"/download/{m.image_api}"),
        ("GET", f"/images/{m.image_api}/i_processed.jpg"),
        ("GET", f"/status/{m.queue_task}"),
        ("GET", f"/result/{m.queue_file}"),
        ("GET", f"/api/v1/tasks/{m.backend_ai}/status/"),
        ("GET", f"/api/v1/tasks/{m.backend_ai}/result/"),
        ("POST", f"/api/v1/tasks/{m.backend_ai}/cancel/"),
        ("GET", f"/task-status/{m.celery}"),
        ("GET", f"/task-result/{m.celery}"),
        ("GET", f"/processed/{m.celery}_c.png"),
    ]


UNKNOWN_JOB = "0b7d2c4e-0000-4000-8000-000000000000"
UNKNOWN_TASK = 4503599627370001


def unknown(method: str, path: str, m: Made) -> tuple[str, str]:
    """The same route naming a job that does not exist."""
    for real in (m.v1, m.upscaler, m.image_api, m.backend_ai, m.celery):
        path = path.replace(real, UNKNOWN_JOB)
    return method, path.replace(str(m.queue_task), str(UNKNOWN_TASK)).replace(
        m.queue_file, "nobody-uploaded-this.jpg")


def anonymised(text: str, m: Made) -> str:
    """An answer with every job id, task id and file name of either kind replaced."""
    for name in (m.v1, m.upscaler, m.image_api, m.backend_ai, m.celery, UNKNOWN_JOB):
        text = text.replace(name, "<id>")
    for name in (str(m.queue_task), str(UNKNOWN_TASK)):
        text = text.replace(name, "<task>")
    return text.replace(m.queue_file, "<file>").replace("nobody-uploaded-this.jpg", "<file>")
