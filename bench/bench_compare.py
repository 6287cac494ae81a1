"""imgq against what it replaces and against libvips itself, end to end, in one run.

Two workloads: 200 small JPEGs (400×300) resized and cropped to 100×100, and 50 2-MP JPEGs
blurred (radius 2), each written as JPEG Q85. Four systems, all running side by side and
measured in turns (interleaved rounds, median of the rounds):

- raw pyvips: a loop over the files in a pool of the same number of processes, one libvips
  thread each (what imgq's pool gives on 2 cores); files read from and written to disk;
- imgq embedded: `imgq serve` with its worker pool, SQLite, local files, default settings;
- imgq fleet: `imgq serve` (API only), `imgq worker`, `imgq beat`, Celery on Redis, PostgreSQL;
- the FastAPI + Celery + Redis + Pillow design (`bench/celery_design.py`): one request and
  one Celery task per image, status through AsyncResult.

Each service run is timed from the first upload to the last result downloaded, by 8 client
threads (urllib3, one keep-alive connection each) that each upload their share (imgq: jobs of
10 files; the Celery design: one image per request), then wait for each of their jobs or tasks
in turn (a GET every 50 ms, as each system's API has its pollers do: imgq's with the ETag in
`If-None-Match`, the Celery design's plain) and download its results. Targets (issue 15): small images ≥ 2× the Celery design and ≥ 70 % of raw pyvips;
2-MP images ≥ 90 % of raw pyvips.

    .venv/bin/python bench/bench_compare.py [--rounds 3] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from urllib3 import BaseHTTPResponse, HTTPConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import (  # noqa: E402
    CACHE,
    _photo_like,
    machine_note,
    photos,
    process_tree_cpu,
)
from bench.bench_fleet import fresh_schema  # noqa: E402
from tests.acceptance.fleet_support import (  # noqa: E402
    BROKERS,
    DEFAULT_WORKER_NICE,
    Fleet,
    forget_queues,
    free_port,
)

CLIENTS = 8
#: No AI steps run here: the AI lane's one-off measuring of the models at start-up (seconds
#: of CPU when this machine's figures are missing) would otherwise run during the first rounds.
NO_AI_START = {"ai_measure_on_start": "false"}
PER_JOB = 10
POLL = 0.05
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Workload:
    name: str
    files: list[Path]
    pipeline: str  # imgq
    operation: str  # the Celery design and the raw loop


def small_jpegs(count: int = 200) -> list[Path]:
    folder = CACHE / "small-jpeg-400x300"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"small-{i:03d}.jpg"
        if not path.exists():
            _photo_like(400, 300, seed=2000 + i).jpegsave(str(path), Q=90, keep="none")
        paths.append(path)
    return paths


def workloads() -> list[Workload]:
    return [
        Workload("200 small JPEGs → 100×100", small_jpegs(),
                 "resize:width=100,height=100,fit=cover|encode:format=jpeg,quality=85",
                 "thumb100"),
        Workload("50 2-MP JPEGs, blur → JPEG", photos(),
                 "blur:radius=2|encode:format=jpeg,quality=85", "blur"),
    ]


# -- raw pyvips ---------------------------------------------------------------------------------
def _raw_init() -> None:
    import pyvips

    pyvips.concurrency_set(1)
    pyvips.cache_set_max(0)


def _raw_one(job: tuple[str, str, str]) -> int:
    import pyvips

    source, operation, target = job
    if operation == "thumb100":
        image = pyvips.Image.thumbnail(source, 100, height=100, crop="centre")
    else:
        image = pyvips.Image.new_from_file(source, access="sequential")
        image = image.gaussblur(2, precision="integer")
    image.jpegsave(target, Q=85, keep="none")
    return os.path.getsize(target)


class RawPyvips:
    name = "raw pyvips"

    def __init__(self, processes: int, folder: Path) -> None:
        self.pool = multiprocessing.get_context("spawn").Pool(processes, _raw_init)
        self.folder = folder

    def pids(self) -> list[int]:
        return [p.pid for p in self.pool._pool if p.pid]  # type: ignore[attr-defined]

    def run(self, work: Workload) -> float:
        jobs = [(str(p), work.operation, str(self.folder / f"{n}.jpg"))
                for n, p in enumerate(work.files)]
        start = time.perf_counter()
        sizes = self.pool.map(_raw_one, jobs, chunksize=1)
        elapsed = time.perf_counter() - start
        assert all(sizes)
        return elapsed

    def close(self) -> None:
        self.pool.terminate()


# -- imgq ---------------------------------------------------------------------------------------
class Imgq:
    def __init__(self, name: str, api: str, fleet: Fleet) -> None:
        self.name, self.api, self.fleet = name, api, fleet

    def pids(self) -> list[int]:
        return [p.pid for _, p, _ in self.fleet.processes]

    def run(self, work: Workload) -> float:
        done, elapsed = _timed_clients(self.api, work.files,
                                       lambda http, share: self._client(http, share, work.pipeline))
        assert done == len(work.files), f"{self.name}: {done} of {len(work.files)} results"
        return elapsed

    def _client(self, http: HTTPConnectionPool, files: list[Path], pipeline: str) -> int:
        jobs = []
        for i in range(0, len(files), PER_JOB):
            parts = [("files", (p.name, p.read_bytes(), "image/jpeg"))
                     for p in files[i:i + PER_JOB]]
            jobs.append(_json(http.request("POST", "/v1/jobs",
                                           fields=[("pipeline", pipeline), *parts]))["id"])
        results = 0
        for job_id in jobs:
            job = _follow(http, job_id)
            for item in job["items"]:
                assert item["status"] == "succeeded", item
                results += bool(_body(http.request("GET", urlsplit(item["result_url"]).path)))
        return results


def _follow(http: HTTPConnectionPool, job_id: str) -> dict:  # type: ignore[type-arg]
    """The finished job, polled every POLL seconds as imgq's API documents for pollers: the
    ETag of the last answer goes back in `If-None-Match`, and an unchanged job is a 304."""
    deadline = time.monotonic() + 300
    headers: dict[str, str] = {}
    while True:
        response = http.request("GET", f"/v1/jobs/{job_id}", headers=headers)
        if response.status != 304:
            body = _json(response)
            if body["status"] not in ("queued", "running"):
                return body
            headers = {"If-None-Match": response.headers["ETag"]}
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id}: not finished in 300 s")
        time.sleep(POLL)


def _body(response: BaseHTTPResponse) -> bytes:
    if response.status >= 400:
        raise SystemExit(f"{response.status}: {response.data[:300]!r}")
    return response.data


def _json(response: BaseHTTPResponse) -> dict:  # type: ignore[type-arg]
    return json.loads(_body(response))  # type: ignore[no-any-return]


def _timed_clients(api: str, files: list[Path],
                   client: Callable[[HTTPConnectionPool, list[Path]], int]) -> tuple[int, float]:
    """Run `client` in CLIENTS threads, each on its share of the files; the results counted
    and the seconds from the first upload to the last download. Each thread keeps one
    keep-alive connection (urllib3: its CPU per request is about half of httpx's, and the
    clients share the 2 cores with the services but not with the raw loop)."""
    shares = [files[i::CLIENTS] for i in range(CLIENTS)]
    url = urlsplit(api)
    https = [HTTPConnectionPool(url.hostname or "127.0.0.1", url.port, maxsize=1, timeout=120, retries=False)
             for _ in shares]
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            start = time.perf_counter()
            done = sum(pool.map(client, https, shares))
            elapsed = time.perf_counter() - start
    finally:
        for http in https:
            http.close()
    return done, elapsed


def _wait(http: HTTPConnectionPool, path: str, finished: Callable[[dict], bool]) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 300
    while True:
        body = _json(http.request("GET", path))
        if finished(body):
            return body
        if time.monotonic() > deadline:
            raise SystemExit(f"{path}: not finished in 300 s")
        time.sleep(POLL)


# -- the FastAPI + Celery + Pillow design -----------------------------------------------------
class CeleryDesign:
    name = "FastAPI + Celery + Pillow"

    def __init__(self, api: str, processes: list[subprocess.Popen[bytes]]) -> None:
        self.api, self.processes = api, processes

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def run(self, work: Workload) -> float:
        done, elapsed = _timed_clients(self.api, work.files,
                                       lambda http, share: self._client(http, share, work.operation))
        assert done == len(work.files)
        return elapsed

    def _client(self, http: HTTPConnectionPool, files: list[Path], operation: str) -> int:
        tasks = []
        for path in files:
            image = (path.name, path.read_bytes(), "image/jpeg")
            fields: list[tuple[str, str | tuple[str, bytes, str]]] = [
                ("operation", operation), ("file", image)]
            tasks.append(_json(http.request("POST", "/process-image/", fields=fields))["task_id"])
        results = 0
        for task in tasks:
            body = _wait(http, f"/task-status/{task}",
                         lambda b: b["status"] in ("SUCCESS", "FAILURE"))
            assert body["status"] == "SUCCESS", body
            results += bool(_body(http.request("GET", f"/result/{task}")))
        return results


# -- the services -------------------------------------------------------------------------------
@contextmanager
def services(tmp: Path, processes: int) -> Iterator[list[object]]:
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        logs = tmp / "logs"
        logs.mkdir()
        raw = RawPyvips(processes, tmp / "raw")
        (tmp / "raw").mkdir()
        stack.callback(raw.close)

        embedded = Fleet({"data_dir": str(tmp / "embedded"), "workers": str(processes),
                          **NO_AI_START}, logs)
        stack.callback(embedded.stop_all)
        imgq_embedded = Imgq("imgq embedded", embedded.serve(), embedded)

        fleet = redis_postgres_fleet(stack, tmp, logs, tag)
        imgq_fleet = Imgq("imgq fleet", fleet.serve(), fleet)
        fleet.worker(processes)
        fleet.beat()

        celery = stack.enter_context(celery_design(tmp / "celery", processes, logs))
        yield [raw, imgq_embedded, imgq_fleet, celery]


@contextmanager
def celery_design(folder: Path, processes: int, logs: Path) -> Iterator[CeleryDesign]:
    queue = f"celery-design-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "BENCH_CELERY_DIR": str(folder), "BENCH_CELERY_QUEUE": queue,
           "BENCH_CELERY_REDIS": BROKERS["redis"], "PYTHONPATH": str(ROOT)}
    port = free_port()
    started = []
    try:
        for name, args in (
            ("celery-api", ["-m", "uvicorn", "bench.celery_design:app", "--port", str(port),
                            "--log-level", "warning"]),
            ("celery-worker", ["-m", "celery", "-A", "bench.celery_design:celery_app", "worker",
                               "--concurrency", str(processes), "--loglevel", "WARNING",
                               "-Q", queue, "--without-gossip", "--without-mingle"]),
        ):
            out = (logs / f"{name}.log").open("wb")
            started.append(subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env,
                                            stdout=out, stderr=subprocess.STDOUT))
        api = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{api}/docs", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the Celery design's API did not start") from None
                time.sleep(0.2)
        yield CeleryDesign(api, started)
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait(20)
        forget_queues(BROKERS["redis"], [queue])


def run(rounds: int, processes: int, only: str | None = None) -> None:
    works = workloads()
    if only:
        works = works[:1] if only == "small" else works[1:]
    print(f"bench_compare · {machine_note()} · {processes} processes per system, "
          f"{rounds} interleaved rounds (median)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with services(tmp, processes) as systems:
            time.sleep(3)  # workers connect
            for work in works:  # warm up: imports, connections, first-use costs
                for system in systems:
                    system.run(work)  # type: ignore[attr-defined]
            times: dict[tuple[str, str], list[float]] = {}
            cpu: dict[tuple[str, str], list[float]] = {}
            clients: dict[tuple[str, str], list[float]] = {}
            for r in range(rounds):
                order = systems[r % len(systems):] + systems[:r % len(systems)]
                for work in works:
                    for system in order:
                        key = (work.name, system.name)  # type: ignore[attr-defined]
                        before = process_tree_cpu(system.pids())  # type: ignore[attr-defined]
                        mine = time.process_time()  # this process: the HTTP clients
                        times.setdefault(key, []).append(system.run(work))  # type: ignore[attr-defined]
                        used = process_tree_cpu(system.pids()) - before  # type: ignore[attr-defined]
                        cpu.setdefault(key, []).append(used / len(work.files))
                        clients.setdefault(key, []).append(
                            (time.process_time() - mine) / len(work.files))
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    report(works, times, cpu, clients)


def report(works: list[Workload], times: dict[tuple[str, str], list[float]],
           cpu: dict[tuple[str, str], list[float]],
           clients: dict[tuple[str, str], list[float]]) -> None:
    """Items per second (median of the rounds) and CPU per item: every process of the system
    (API, workers, beat; not the clients, Redis or PostgreSQL), and apart from it the HTTP
    clients' (this process), which share the cores with the services but not with the raw
    loop. The CPU ratio to raw pyvips moves far less with the machine's load than wall time."""
    for work in works:
        rate = {s: len(work.files) / statistics.median(t) for (w, s), t in times.items()
                if w == work.name}
        print(f"\n{work.name}")
        for system, per_second in rate.items():
            spread = times[(work.name, system)]
            per_item = statistics.median(cpu[(work.name, system)]) * 1000
            client = statistics.median(clients[(work.name, system)]) * 1000
            print(f"  {system:26s} {per_second:7.1f} items/s   CPU {per_item:6.1f} ms/item "
                  f"(+ clients {client:4.1f})   (runs: {', '.join(f'{s:.2f}' for s in spread)} s)")
        raw, celery = rate["raw pyvips"], rate["FastAPI + Celery + Pillow"]
        raw_cpu = statistics.median(cpu[(work.name, "raw pyvips")])
        for system in ("imgq embedded", "imgq fleet"):
            print(f"  {system}: {rate[system] / celery:.2f}× the Celery design, "
                  f"{rate[system] / raw:.0%} of raw pyvips "
                  f"(CPU per item: raw pyvips's is "
                  f"{raw_cpu / statistics.median(cpu[(work.name, system)]):.0%} of it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--only", choices=["small", "2mp"], help="run one workload")
    args = parser.parse_args()
    run(args.rounds, args.processes, args.only)


def redis_postgres_fleet(stack: ExitStack, tmp: Path, logs: Path, tag: str) -> Fleet:
    """imgq's fleet on Redis and a fresh PostgreSQL schema, with its own queue names; all of
    it stopped and removed when `stack` closes."""
    db = stack.enter_context(fresh_schema())
    queues = {"cpu_queue": f"cpu-{tag}", "gpu_queue": f"gpu-{tag}", "sweep_queue": f"sweep-{tag}"}
    fleet = Fleet({"data_dir": str(tmp / "fleet"), "database_url": db, **NO_AI_START,
                   **DEFAULT_WORKER_NICE,
                   "storage_url": (tmp / "fleet-blobs").as_uri(),
                   "broker_url": BROKERS["redis"], **queues}, logs)
    stack.callback(forget_queues, BROKERS["redis"], list(queues.values()))
    stack.callback(fleet.stop_all)
    return fleet


if __name__ == "__main__":
    main()
