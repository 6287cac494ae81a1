"""A real `imgq serve` in a subprocess, and test images, for the e2e and integration tests."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyvips

ROOT = Path(__file__).resolve().parents[2]
IMGQ = [sys.executable, "-m", "imgq.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_server(data_dir: Path, *args: str, **env: str) -> Iterator[Server]:
    """Start `imgq serve` on a free port with its own data folder; stop it afterwards."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "serve.log"
    environ = {**os.environ, "IMGQ_DATA_DIR": str(data_dir), "IMGQ_PORT": str(port),
               "IMGQ_HOST": "127.0.0.1", "IMGQ_WORKERS": "2", **env}
    with log.open("wb") as out:
        proc = subprocess.Popen([*IMGQ, "serve", *args], env=environ, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", data_dir, log, proc)
    try:
        _wait_ready(server)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"imgq serve exited:\n{server.log_text()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"imgq serve did not get ready:\n{server.log_text()}")


def picture(width: int = 320, height: int = 240, seed: int = 0) -> pyvips.Image:
    """A colourful test picture: gradients, a disc, stripes."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / (width - 1), y / (height - 1)
    rng = np.random.default_rng(seed)
    hue = rng.uniform(0, 1, 3)
    r = 0.5 + 0.5 * np.sin(2 * np.pi * (u + hue[0]))
    g = 0.5 + 0.5 * np.sin(2 * np.pi * (v + hue[1]))
    b = 0.5 + 0.5 * np.sin(2 * np.pi * (u * v + hue[2]))
    disc = (x - width * 0.6) ** 2 + (y - height * 0.45) ** 2 < (min(width, height) * 0.25) ** 2
    rgb = np.stack([r, g, b], axis=-1)
    rgb[disc] = [0.98, 0.85, 0.2]
    rgb[(y > height * 0.8) & ((x // 12) % 2 == 0)] = [0.1, 0.1, 0.25]
    array = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    return pyvips.Image.new_from_array(array, interpretation="srgb")


def write_picture(path: Path, width: int = 320, height: int = 240, seed: int = 0) -> Path:
    picture(width, height, seed).write_to_file(str(path))
    return path


def write_broken_png(path: Path) -> Path:
    """A PNG whose header is fine (it passes the upload checks) but whose pixels are cut off:
    it fails in the worker."""
    data = bytes(picture(256, 256, seed=9).pngsave_buffer(compression=0))
    path.write_bytes(data[: len(data) // 3])
    return path


# -- two servers shared by every test module in a run (each takes seconds to start) ---------
WEBHOOK_SECRET = "test-webhook-secret"
CONFIGS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    # one worker, so that items of a batch are seen waiting; fast sweeps and retries
    "workers": ((), {"IMGQ_WORKERS": "1", "IMGQ_EVENTS_POLL_INTERVAL": "0.05",
                     "IMGQ_LEASE_SECONDS": "2", "IMGQ_WEBHOOK_SECRET": WEBHOOK_SECRET,
                     "IMGQ_WEBHOOK_ALLOW_PRIVATE": "true", "IMGQ_WEBHOOK_RETRY_BACKOFF": "0.2"}),
    # no workers: items stay queued until cancelled
    "idle": (("--no-workers",), {"IMGQ_EVENTS_HEARTBEAT": "0.3", "IMGQ_MAX_FILES": "3",
                                 "IMGQ_MAX_FILE_BYTES": "300000",
                                 "IMGQ_EVENTS_POLL_INTERVAL": "0.05"}),
}
_shared: dict[str, Server] = {}
_stack = ExitStack()


def shared_server(kind: str) -> Server:
    """The run's server of this kind, started on first use and stopped at exit."""
    if kind not in _shared:
        if not _shared:
            atexit.register(_stack.close)
        data = Path(tempfile.mkdtemp(prefix=f"imgq-{kind}-"))
        _stack.callback(shutil.rmtree, data, True)
        args, env = CONFIGS[kind]
        _shared[kind] = _stack.enter_context(running_server(data, *args, **env))
    return _shared[kind]
