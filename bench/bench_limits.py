"""What one client can make the API hold, with the limits of issue 12 in place.

(a) Previews: 24 requests at once for the preview of a 16-bit interlaced 4000×4000 PNG
    (~100 KB on disk, 96 MB decoded; libvips cannot shrink an interlaced PNG while loading).
    Peak RSS of the `imgq serve` process, for 24 identical requests and for 24 different sizes.
    Reference, same run: 24 thumbnails of that file at once in a bare Python process with
    libvips and no budget (what the API did before), its own peak RSS. Target: ≤ 300 MB.
(b) Live streams: GET /v1/jobs/{id} latency (p50, p99 of 300 sequential requests) with 1,000
    SSE streams open on that job, against the same GET with none open, same server, same run.
    Target: p99 ≤ 50 ms.

    .venv/bin/python bench/bench_limits.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import CACHE, machine_note, python, run_child  # noqa: E402
from tests.fixtures.server import Server  # noqa: E402

PREVIEWS = 24
STREAMS = 1000
GETS = 300


def interlaced_png() -> Path:
    path = CACHE / "interlaced-16bit-4000.png"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        image = (pyvips.Image.black(4000, 4000, bands=3) + 1000).cast("ushort")
        image.copy(interpretation="rgb16").pngsave(str(path), interlace=True, bitdepth=16,
                                                   compression=9)
    return path


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return int(fh.read().split("VmRSS:")[1].split()[0]) / 1024


def peak_while(pid: int, work: threading.Thread) -> float:
    peak = rss_mb(pid)
    work.start()
    while work.is_alive():
        peak = max(peak, rss_mb(pid))
        time.sleep(0.01)
    return peak


def previews(server: Server, png: Path) -> dict[str, float]:
    job = server.submit_ok([("big.png", png.read_bytes())], "grayscale")
    url = f"/v1/jobs/{job['id']}/items/0/preview"
    assert server.process is not None
    pid = server.process.pid
    figures = {"idle_mb": rss_mb(pid)}
    for label, size_of in (("same", lambda i: 480), ("distinct", lambda i: 100 + i)):
        codes: list[int] = []

        def burst() -> None:
            with ThreadPoolExecutor(PREVIEWS) as pool:
                codes.extend(pool.map(lambda i: server.client.get(
                    url, params={"size": size_of(i)}, timeout=120).status_code, range(PREVIEWS)))

        figures[f"{label}_mb"] = peak_while(pid, threading.Thread(target=burst))
        figures[f"{label}_ok"] = codes.count(200)
        figures[f"{label}_429"] = codes.count(429)
    return figures


NAIVE = """
import sys, threading, pyvips
pyvips.cache_set_max(0)
def one(i):
    pyvips.Image.thumbnail(sys.argv[1], 100 + i, height=100 + i, size="down").webpsave_buffer()
threads = [threading.Thread(target=one, args=(i,)) for i in range(int(sys.argv[2]))]
[t.start() for t in threads]; [t.join() for t in threads]
"""


async def _open_streams(host: str, port: int, path: str, n: int
                        ) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0], head[:100]
        return reader, writer

    opened = []
    for start in range(0, n, 100):
        opened += await asyncio.gather(*(one() for _ in range(min(100, n - start))))
    return opened


def _latencies(server: Server, path: str) -> list[float]:
    times = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(GETS):
            t = time.perf_counter()
            assert client.get(path).status_code == 200
            times.append((time.perf_counter() - t) * 1000)
    return sorted(times)


def _p(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def streams(server: Server, png: Path) -> dict[str, float]:
    job = server.submit_ok([("a.png", png.read_bytes())], "grayscale")  # stays queued
    path = f"/v1/jobs/{job['id']}"
    quiet = _latencies(server, path)
    loop = asyncio.new_event_loop()
    opened = loop.run_until_complete(_open_streams("127.0.0.1", server.port,
                                                   path + "/events", STREAMS))
    time.sleep(2)  # every stream past its first answer, polling shared
    busy = _latencies(server, path)
    for _, writer in opened:
        writer.close()
    loop.close()
    return {"quiet_p50": statistics.median(quiet), "quiet_p99": _p(quiet, 0.99),
            "busy_p50": statistics.median(busy), "busy_p99": _p(busy, 0.99)}


def main() -> None:
    png = interlaced_png()
    small = CACHE / "small.png"
    pyvips.Image.black(16, 16).pngsave(str(small))
    print(machine_note())
    naive = run_child([python(), "-c", NAIVE, str(png), str(PREVIEWS)])
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data", Path(tmp) / "logs", {})
        server.log_dir.mkdir()
        server.start(workers=1)
        try:
            p = previews(server, png)
        finally:
            server.close()
        idle = Server(Path(tmp) / "data2", Path(tmp) / "logs2", {})
        idle.log_dir.mkdir()
        idle.start("--no-workers")
        try:
            s = streams(idle, small)
        finally:
            idle.close()
    print(f"(a) {PREVIEWS} previews at once of a 16-bit interlaced 4000×4000 PNG")
    print(f"    imgq serve idle:            {p['idle_mb']:7.0f} MB")
    print(f"    24 identical requests:      {p['same_mb']:7.0f} MB peak  "
          f"({p['same_ok']:.0f} answered 200, {p['same_429']:.0f} 429)")
    print(f"    24 different sizes:         {p['distinct_mb']:7.0f} MB peak  "
          f"({p['distinct_ok']:.0f} answered 200, {p['distinct_429']:.0f} 429)")
    print(f"    reference, no budget:       {naive.max_rss_mb:7.0f} MB peak (bare libvips process)")
    print(f"    ratio imgq / reference:     {p['distinct_mb'] / naive.max_rss_mb:7.2f} "
          f"(target: imgq ≤ 300 MB)")
    print(f"(b) GET /v1/jobs/{{id}}, {GETS} sequential requests")
    print(f"    no stream open:             p50 {s['quiet_p50']:6.1f} ms   p99 {s['quiet_p99']:6.1f} ms")
    print(f"    {STREAMS} SSE streams open:    p50 {s['busy_p50']:6.1f} ms   p99 {s['busy_p99']:6.1f} ms")
    print(f"    ratio p99 busy / quiet:     {s['busy_p99'] / s['quiet_p99']:7.2f} "
          "(target: p99 ≤ 50 ms)")


if __name__ == "__main__":
    main()
