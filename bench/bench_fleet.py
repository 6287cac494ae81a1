"""Fleet benchmark: Celery workers on Redis against the embedded pool, measured in one run.

Prints, for 200 small images (64×64 PNG, one `grayscale` step, 20 jobs of 10 files):
  - items per second submit→done with 1 and with 2 `imgq worker` processes (each with
    --concurrency C), and the scaling ratio;
  - the same batch on `imgq serve` with its embedded pool of C processes, for reference;
  - the latency one item sees (queued_at → finished_at, median of N single-item jobs on an
    idle system) through Celery and through the embedded pool: the difference is what Celery
    dispatch adds.
Uses the local PostgreSQL (a fresh schema, dropped afterwards) and Redis, like the tests.

    .venv/bin/python bench/bench_fleet.py [--concurrency 4] [--singles 30]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pyvips
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.acceptance.fleet_support import (  # noqa: E402
    BROKERS,
    DEFAULT_WORKER_NICE,
    Fleet,
    forget_queues,
)

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PIPELINE = "grayscale"
BATCH, PER_JOB = 200, 10
SUBMITTERS = 8


def small_png(seed: int) -> bytes:
    image = pyvips.Image.gaussnoise(64, 64, mean=128, sigma=30, seed=seed).cast("uchar")
    return bytes(image.bandjoin([image, image]).copy(interpretation="srgb").pngsave_buffer())


@contextmanager
def fresh_schema() -> Iterator[str]:
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    schema = f"imgq_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def submit(api: str, images: list[bytes], first: int) -> str:
    files = [("files", (f"{first + i}.png", data, "image/png")) for i, data in enumerate(images)]
    response = httpx.post(f"{api}/v1/jobs", files=files, data={"pipeline": PIPELINE}, timeout=60)
    response.raise_for_status()
    return str(response.json()["id"])


def wait(api: str, job_ids: list[str], timeout: float = 300) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    pending = list(job_ids)
    items: list[dict[str, object]] = []
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit(f"jobs not finished in {timeout} s: {pending[:3]}")
        found = httpx.get(f"{api}/v1/jobs", params={"ids": ",".join(pending[:200])},
                          timeout=30).json()["jobs"]
        for job in found:
            if job["status"] not in ("queued", "running"):
                pending.remove(job["id"])
                items.extend(job["items"])
        if pending:
            time.sleep(0.05)
    return items


def _t(stamp: object) -> float:
    return datetime.fromisoformat(str(stamp)).timestamp()


def batch_rate(api: str, images: list[bytes]) -> float:
    """Items per second from the first item queued to the last one finished (DB clocks)."""
    with ThreadPoolExecutor(SUBMITTERS) as pool:  # several clients, as in real use
        job_ids = list(pool.map(lambda i: submit(api, images[i:i + PER_JOB], i),
                                range(0, len(images), PER_JOB)))
    items = wait(api, job_ids)
    assert all(i["status"] == "succeeded" for i in items), "an item failed"
    start = min(_t(i["timings"]["queued_at"]) for i in items)  # type: ignore[index]
    end = max(_t(i["timings"]["finished_at"]) for i in items)  # type: ignore[index]
    return len(items) / (end - start)


def single_latency(api: str, image: bytes, count: int) -> float:
    """Median seconds from queued to finished of one-item jobs sent one after another."""
    latencies = []
    for n in range(count):
        item = wait(api, [submit(api, [image], n)])[0]
        latencies.append(_t(item["timings"]["finished_at"])  # type: ignore[index]
                         - _t(item["timings"]["queued_at"]))  # type: ignore[index]
    return statistics.median(latencies)


def run(concurrency: int, singles: int) -> None:
    images = [small_png(i) for i in range(BATCH)]
    tag = uuid.uuid4().hex[:8]
    with fresh_schema() as db, tempfile.TemporaryDirectory() as tmp:
        common = {"database_url": db, "storage_url": Path(tmp, "blobs").as_uri(),
                  "data_dir": str(Path(tmp, "data")), "log_level": "WARNING",
                  "max_files": str(PER_JOB), **DEFAULT_WORKER_NICE}
        celery = {**common, "broker_url": BROKERS["redis"], "cpu_queue": f"cpu-{tag}",
                  "gpu_queue": f"gpu-{tag}", "sweep_queue": f"sweep-{tag}"}
        logs = Path(tmp, "logs")
        logs.mkdir()
        fleet = Fleet(celery, logs)
        try:
            api = fleet.serve()
            fleet.beat()  # as in production: it republishes anything a restart lost
            fleet.worker(concurrency)
            time.sleep(3)  # the worker connects and its processes start
            batch_rate(api, images[:20])  # warm up: imports, connections
            one = batch_rate(api, images)
            latency_celery = single_latency(api, images[0], singles)
            fleet.worker(concurrency)
            time.sleep(3)
            batch_rate(api, images[:20])
            two = batch_rate(api, images)
        finally:
            fleet.stop_all()
            forget_queues(BROKERS["redis"], [celery["cpu_queue"], celery["gpu_queue"],
                                             celery["sweep_queue"]])
        embedded = Fleet({**common, "workers": str(concurrency)}, logs)
        try:
            api = embedded.serve()
            batch_rate(api, images[:20])
            pool = batch_rate(api, images)
            latency_pool = single_latency(api, images[0], singles)
        finally:
            embedded.stop_all()
    out = io.StringIO()
    out.write(f"fleet benchmark: {BATCH} items (64x64 PNG, {PIPELINE}), {BATCH // PER_JOB} jobs "
              f"of {PER_JOB} from {SUBMITTERS} clients; Celery on Redis, PostgreSQL, local files; "
              f"--concurrency {concurrency} per worker\n")
    out.write(f"  Celery, 1 worker : {one:7.1f} items/s\n")
    out.write(f"  Celery, 2 workers: {two:7.1f} items/s   scaling ×{two / one:.2f}\n")
    out.write(f"  embedded pool    : {pool:7.1f} items/s   ({concurrency} processes)\n")
    out.write(f"  one-item latency, median of {singles}: Celery {latency_celery * 1000:.1f} ms, "
              f"embedded {latency_pool * 1000:.1f} ms, Celery adds "
              f"{(latency_celery - latency_pool) * 1000:+.1f} ms\n")
    print(out.getvalue(), end="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--singles", type=int, default=30)
    args = parser.parse_args()
    run(args.concurrency, args.singles)


if __name__ == "__main__":
    main()
