"""A real `imgq serve` in a subprocess, and test images, for the e2e and integration tests."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pyvips

from tests.fixtures.server import Server

ROOT = Path(__file__).resolve().parents[2]
IMGQ = [sys.executable, "-m", "imgq.cli"]


@contextmanager
def running_server(data_dir: Path, *args: str, **env: str) -> Iterator[Server]:
    """Start `imgq serve` (2 workers unless told) on a free port with its own data folder;
    stop it afterwards. The server is the acceptance tests' `Server`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = Server(data_dir, data_dir, {"IMGQ_WORKERS": "2", **env})
    try:
        yield server.start(*args)
    finally:
        server.stop()
        server.close()


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
    "workers": ((), {"IMGQ_WORKERS": "1", "IMGQ_EVENTS_POLL_INTERVAL_SECONDS": "0.05",
                     "IMGQ_LEASE_SECONDS": "2", "IMGQ_WEBHOOK_SECRET": WEBHOOK_SECRET,
                     "IMGQ_WEBHOOK_ALLOW_PRIVATE": "true", "IMGQ_WEBHOOK_RETRY_BACKOFF_SECONDS": "0.2"}),
    # no workers: items stay queued until cancelled
    "idle": (("--no-workers",), {"IMGQ_EVENTS_HEARTBEAT_SECONDS": "0.3", "IMGQ_MAX_FILES": "3",
                                 "IMGQ_MAX_FILE_BYTES": "300000",
                                 "IMGQ_EVENTS_POLL_INTERVAL_SECONDS": "0.05"}),
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
