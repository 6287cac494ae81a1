"""Acceptance fixtures: the real `imgq serve` command as a subprocess, driven over HTTP.

Each test gets a fresh data folder and a free port. The server's log goes to a file that is
attached to the report of a failed test. A server can be stopped (SIGTERM), killed (SIGKILL to
its whole process group, workers included) and started again on the same data folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
JOB_TIMEOUT = 60.0
POLL = 0.05
ACTIVE = frozenset({"queued", "running"})
# Set for the whole test run by tests/conftest.py: models measured only where a test means to.
TEST_WIDE_SETTINGS = frozenset({"IMGQ_AI_MEASURE_ON_START", "IMGQ_AI_COSTS_FILE"})


# -- the server -------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _imgq_command() -> list[str]:
    script = Path(sys.executable).with_name("imgq")
    if script.is_file():
        return [str(script)]
    found = shutil.which("imgq")
    return [found] if found else [sys.executable, "-m", "imgq.cli"]


class Server:
    """One data folder; at most one `imgq serve` process on it at a time."""

    def __init__(self, data_dir: Path, log_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        self.log_dir = log_dir
        self.logs: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.base_url = ""
        self.client = httpx.Client(timeout=20.0)

    @property
    def url(self) -> str:
        return self.base_url

    # lifecycle --------------------------------------------------------------------------
    def start(self, *args: str, **env: Any) -> Server:
        assert self.process is None, "the server is already running"
        # A new port each time: no stale answer from a process that has not let go yet.
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.client.close()
        self.client = httpx.Client(base_url=self.base_url, timeout=20.0)
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("IMGQ_") or k in TEST_WIDE_SETTINGS}
        full_env.update({
            "IMGQ_DATA_DIR": str(self.data_dir), "IMGQ_HOST": "127.0.0.1",
            "IMGQ_PORT": str(self.port), "PYTHONUNBUFFERED": "1",
        })
        full_env.update(self.env)
        full_env.update({f"IMGQ_{k.upper()}": str(v) for k, v in env.items()})
        log_path = self.log_dir / f"serve-{len(self.logs) + 1}.log"
        self.logs.append(log_path)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*_imgq_command(), "serve", *args], env=full_env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"imgq serve exited with {self.process.returncode} "
                                     f"while starting; see its log")
            try:
                if self.client.get("/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(POLL)
        raise AssertionError(f"imgq serve did not answer /healthz within {START_TIMEOUT:.0f} s")

    def stop(self) -> int:
        """A graceful stop (SIGTERM); returns the exit status."""
        process = self._take()
        if process is None:
            return 0
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_TIMEOUT)
        finally:
            _kill_group(process)

    def kill(self) -> None:
        """SIGKILL the server and every worker process it started, at once."""
        process = self._take()
        if process is not None:
            _kill_group(process)

    def _take(self) -> subprocess.Popen[bytes] | None:
        process, self.process = self.process, None
        return process

    def close(self) -> None:
        self.kill()
        self.client.close()

    def log_text(self) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.read_text(errors='replace')}"
                         for p in self.logs if p.exists())

    # HTTP helpers -------------------------------------------------------------------------
    def submit(self, files: list[tuple[str, bytes]], pipeline: str,
               **fields: Any) -> httpx.Response:
        parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
        data = {"pipeline": pipeline, **{k: str(v) for k, v in fields.items()}}
        return self.client.post("/v1/jobs", files=parts, data=data)

    def submit_ok(self, files: list[tuple[str, bytes]], pipeline: str, **fields: Any) -> dict[str, Any]:
        response = self.submit(files, pipeline, **fields)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def wait_job(self, job_id: str, until: Callable[[dict[str, Any]], bool],
                 timeout: float = JOB_TIMEOUT, what: str = "the condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while not until(job):
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id}: {what} not reached in {timeout:.0f} s; "
                                     f"item states {[i['status'] for i in job['items']]}")
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"imgq serve exited with {self.process.returncode}")
            time.sleep(POLL)
            job = self.job(job_id)
        return job

    def wait_finished(self, job_id: str, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        return self.wait_job(job_id, lambda j: not {i["status"] for i in j["items"]} & ACTIVE,
                             timeout, "every item finished")

    def jobs_total(self) -> int:
        response = self.client.get("/v1/jobs")
        assert response.status_code == 200, response.text
        return int(response.json()["total"])

    def operations(self) -> set[str]:
        response = self.client.get("/v1/operations")
        assert response.status_code == 200, response.text
        return {op["name"] for op in response.json() if op["available"]}

    def stored_files(self) -> list[Path]:
        """Every file under the blob folder except its staging area."""
        root = self.data_dir / "blobs"
        if not root.exists():
            return []
        return sorted(p for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts)

    def staged_files(self) -> list[Path]:
        staging = self.data_dir / "blobs" / ".tmp"
        return sorted(staging.iterdir()) if staging.exists() else []


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def serve(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Server]]:
    """serve(*args, **settings) starts `imgq serve` on a fresh data folder and returns it.

    Settings are given without the prefix (workers=1 sets IMGQ_WORKERS=1); the returned
    Server can stop(), kill() and start() again on the same data folder.
    """
    servers: list[Server] = []

    def start(*args: str, **settings: Any) -> Server:
        index = len(servers) + 1
        server = Server(tmp_path / f"data-{index}", tmp_path / f"logs-{index}", {})
        server.log_dir.mkdir()
        servers.append(server)
        request.node.imgq_servers = servers
        return server.start(*args, **{"workers": 2, **settings})

    yield start
    for server in servers:
        server.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None],
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the server logs to the report of a failed test."""
    report = yield
    if report.failed:
        for server in getattr(item, "imgq_servers", []):
            report.sections.append((f"imgq serve log ({server.data_dir.name})",
                                    server.log_text()))
    return report


# -- images made in code ----------------------------------------------------------------------
def pattern(width: int, height: int, bands: int = 3, seed: int | None = 0) -> pyvips.Image:
    """Gradients with a little noise (none when seed is None, so that big images stay small
    on disk): something for every operation to act on."""
    xyz = pyvips.Image.xyz(width, height)
    x, y = xyz[0], xyz[1]
    planes = [x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1),
              (x + y) * 255 / max(width + height - 2, 1)]
    if seed is not None:
        noise = pyvips.Image.gaussnoise(width, height, sigma=6, mean=0, seed=seed)
        planes = [p + noise for p in planes]
    colour = planes[0].bandjoin(planes[1:3]) if bands >= 3 else planes[0]
    if bands == 4:
        colour = colour.bandjoin(x * 255 / max(width - 1, 1))  # alpha fading in left to right
    interpretation = "b-w" if bands < 3 else "srgb"
    return colour.cast("uchar").copy(interpretation=interpretation)


def jpeg_bytes(width: int = 120, height: int = 80, seed: int = 0) -> bytes:
    return bytes(pattern(width, height, 3, seed).jpegsave_buffer(Q=90))


def png_bytes(width: int = 120, height: int = 80, alpha: bool = False, seed: int = 0) -> bytes:
    return bytes(pattern(width, height, 4 if alpha else 3, seed).pngsave_buffer())


def big_png(width: int, height: int) -> bytes:
    """A large image that is small on disk (smooth gradients), for slow pipelines."""
    return bytes(pattern(width, height, 3, seed=None).pngsave_buffer())


def truncated_jpeg(width: int = 300, height: int = 200) -> bytes:
    """A JPEG whose header is whole but whose scan data stops halfway."""
    data = jpeg_bytes(width, height)
    return data[: len(data) // 2]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A tiny PNG whose header declares width × height pixels (8-bit grey); the data is a
    few zero rows, compressed, so it is a few hundred bytes on disk."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows)
            + _png_chunk(b"IEND", b""))


def image_info(data: bytes) -> tuple[str, int, int, int]:
    """(loader format, width, height, bands) of encoded image bytes, fully decoded."""
    image = pyvips.Image.new_from_buffer(data, "", fail_on="error")
    image.avg()  # decode every pixel: a broken file fails here
    loader = str(image.get("vips-loader"))
    return loader.removesuffix("_buffer").removesuffix("load"), image.width, image.height, image.bands
