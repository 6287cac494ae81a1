"""What one client can make the API hold is bounded: previews that cannot shrink while they
load, live event streams on one job."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import httpx
import pyvips

from tests.fixtures.server import Server


def interlaced_16bit_png(side: int = 4000) -> bytes:
    """A 16-bit interlaced PNG: about 100 KB on disk, 96 MB decoded, and libvips cannot
    shrink it while loading (Adam7 needs every pass)."""
    image = (pyvips.Image.black(side, side, bands=3) + 1000).cast("ushort")
    image = image.copy(interpretation="rgb16")
    return bytes(image.pngsave_buffer(interlace=True, bitdepth=16, compression=9))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return int(fh.read().split("VmRSS:")[1].split()[0]) / 1024


@contextmanager
def peak_rss(pid: int) -> Iterator[list[float]]:
    peak = [rss_mb(pid)]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_mb(pid))

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def test_24_previews_of_an_image_that_cannot_shrink_on_load_keep_the_api_small(
    serve: Callable[..., Server],
) -> None:
    server = serve(workers=1, preview_memory_bytes=128 * 1024 * 1024)
    job = server.submit_ok([("big.png", interlaced_16bit_png())], "grayscale")
    assert server.process is not None
    url = f"/v1/jobs/{job['id']}/items/0/preview"
    before = rss_mb(server.process.pid)
    with peak_rss(server.process.pid) as peak, ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda i: server.client.get(url, params={"size": 64 + i % 2},
                                                            timeout=120), range(24)))
    assert {a.status_code for a in answers} <= {200, 429}, [a.text for a in answers]
    shown = [a for a in answers if a.status_code == 200]
    assert shown, "no preview was made"
    small = pyvips.Image.new_from_buffer(shown[0].content, "")
    assert max(small.width, small.height) in (64, 65) and small.avg() > 0
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.json()["error"]["code"] == "too_busy" and refused.headers["Retry-After"]
    # Unbounded, 24 decodes of 96 MB each took 3.3 GB; the budget holds one at a time.
    assert peak[0] - before < 128 + 100, f"the API grew from {before:.0f} to {peak[0]:.0f} MB"


def test_live_streams_on_one_job_are_limited_and_a_freed_place_can_be_taken(
    serve: Callable[..., Server],
) -> None:
    server = serve("--no-workers", events_max_streams_per_job=3)
    png = bytes(pyvips.Image.black(8, 8).pngsave_buffer())
    job = server.submit_ok([("a.png", png)], "grayscale")  # stays queued: no workers
    url = f"{server.url}/v1/jobs/{job['id']}/events"
    with ExitStack() as streams, httpx.Client(timeout=10) as client:
        opened = [streams.enter_context(client.stream("GET", url)) for _ in range(3)]
        assert all(s.status_code == 200 for s in opened)
        lines = [s.iter_lines() for s in opened]  # kept: a dropped iterator closes its stream
        assert all(next(each).startswith("retry:") for each in lines)
        refused = httpx.get(url, timeout=10)
        assert refused.status_code == 429, refused.text
        assert "IMGQ_EVENTS_MAX_STREAMS_PER_JOB" in refused.json()["error"]["message"]
        assert server.client.get(f"/v1/jobs/{job['id']}").status_code == 200
        opened[0].close()
        deadline = time.monotonic() + 10
        while True:
            with httpx.stream("GET", url, timeout=10) as again:
                if again.status_code == 200:
                    break
                assert again.status_code == 429
            assert time.monotonic() < deadline, "the closed stream's place was never freed"
            time.sleep(0.2)
