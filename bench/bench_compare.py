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
10 files; the Celery design: one image per request), then follow them with a GET every 50 ms,
as each system's API has its clients do: the Celery design's wait for each task in turn (its
status, plain) and download its result; imgq's follow each of their jobs in turn (its ETag in
`If-None-Match`) until it has finished, then download its results (`--imgq-clients items`:
they poll all of their unfinished jobs in one `GET /v1/jobs?ids=…` with the ETag and download
each item's result as soon as it has succeeded, the README's way for many jobs; `both`: the
two kinds of client as systems of their own, on the same services, interleaved).

Besides items/s and CPU per item, it prints how busy the cores were in each tenth of the run
(sampled every 20 ms), how many items were being worked on then, and how long a result
waited, from its item's end, for its client to download it. Targets (issue 15): small images ≥ 2× the Celery design and ≥ 70 % of raw pyvips; 2-MP
images ≥ 90 % of raw pyvips.

    .venv/bin/python bench/bench_compare.py [--rounds 3] [--processes 2] [--imgq-clients both]
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
from bench.cpu_timeline import CpuTimeline, occupancy, tenths  # noqa: E402
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
ITEMS_AS_THEY_COME = " (items as they come)"
POLL = 0.05
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    """One system's run of a workload: results, and when it started and ended (monotonic
    clock, and the wall clock for imgq's items' own timings)."""

    done: int
    start: float
    end: float
    wall_start: float
    spans: list[tuple[float, float]] = field(default_factory=list)  # each item's (wall clock)
    waits: list[float] = field(default_factory=list)  # each result's, from its end to its download

    @property
    def elapsed(self) -> float:
        return self.end - self.start


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


def _raw_one(job: tuple[str, str, str]) -> tuple[int, float, float]:
    import pyvips

    started = time.time()
    source, operation, target = job
    if operation == "thumb100":
        image = pyvips.Image.thumbnail(source, 100, height=100, crop="centre")
    else:
        image = pyvips.Image.new_from_file(source, access="sequential")
        image = image.gaussblur(2, precision="integer")
    image.jpegsave(target, Q=85, keep="none")
    return os.path.getsize(target), started, time.time()


class RawPyvips:
    name = "raw pyvips"

    def __init__(self, processes: int, folder: Path) -> None:
        self.pool = multiprocessing.get_context("spawn").Pool(processes, _raw_init)
        self.folder = folder

    def pids(self) -> list[int]:
        return [p.pid for p in self.pool._pool if p.pid]  # type: ignore[attr-defined]

    def run(self, work: Workload) -> Run:
        jobs = [(str(p), work.operation, str(self.folder / f"{n}.jpg"))
                for n, p in enumerate(work.files)]
        wall, start = time.time(), time.monotonic()
        done = self.pool.map(_raw_one, jobs, chunksize=1)
        end = time.monotonic()
        assert all(size for size, _, _ in done)
        return Run(len(done), start, end, wall, [(a, b) for _, a, b in done])

    def close(self) -> None:
        self.pool.terminate()


# -- imgq ---------------------------------------------------------------------------------------
class Imgq:
    """imgq with one of two clients: `items` (what the README's API section suggests for
    many jobs: one `GET /v1/jobs?ids=…` for all of a client's jobs, with the ETag, and each
    item's result downloaded as soon as it has succeeded) or `jobs` (each job followed in
    turn until it has finished, then its results downloaded)."""

    def __init__(self, name: str, api: str, fleet: Fleet, client: str = "jobs") -> None:
        self.name, self.api, self.fleet, self.client = name, api, fleet, client
        self.ends: list[tuple[float, float]] = []  # each item's start and end (server clock)
        self.waits: list[float] = []  # each result's, from the item's end to its download

    def pids(self) -> list[int]:
        return [p.pid for _, p, _ in self.fleet.processes]

    def run(self, work: Workload) -> Run:
        self.ends, self.waits = [], []
        follow = self._client_items if self.client == "items" else self._client_jobs
        run = _timed_clients(self.api, work.files,
                             lambda http, share: follow(http, _submit(http, share, work.pipeline)))
        assert run.done == len(work.files), f"{self.name}: {run.done} of {len(work.files)} results"
        run.spans, run.waits = self.ends, self.waits
        return run

    def _client_jobs(self, http: HTTPConnectionPool, jobs: list[str]) -> int:
        results = 0
        for job_id in jobs:
            job = _follow(http, job_id)
            for item in job["items"]:
                results += self._download(http, item)
        return results

    def _client_items(self, http: HTTPConnectionPool, jobs: list[str]) -> int:
        """All of this client's jobs in one poll; each result fetched once it is there."""
        pending, headers = jobs, dict[str, str]()
        fetched: set[str] = set()
        deadline = time.monotonic() + 300
        while True:
            response = http.request("GET", f"/v1/jobs?ids={','.join(pending)}", headers=headers)
            if response.status != 304:
                body = _json(response)
                headers = {"If-None-Match": response.headers["ETag"]}
                still = []
                for job in body["jobs"]:
                    for item in job["items"]:
                        if item["status"] in ("queued", "running"):
                            if job["id"] not in still:
                                still.append(job["id"])
                        elif item["id"] not in fetched:
                            fetched.add(item["id"])
                            self._download(http, item)
                if not still:
                    return len(fetched)
                if still != pending:  # the finished jobs are no longer asked for
                    pending, headers = still, {}
            if time.monotonic() > deadline:
                raise SystemExit(f"jobs {jobs}: not finished in 300 s")
            time.sleep(POLL)

    def _download(self, http: HTTPConnectionPool, item: dict) -> int:  # type: ignore[type-arg]
        assert item["status"] == "succeeded", item
        timings = item["timings"]
        self.ends.append((_epoch(timings["started_at"]), _epoch(timings["finished_at"])))
        self.waits.append(time.time() - self.ends[-1][1])
        return bool(_body(http.request("GET", urlsplit(item["result_url"]).path)))


def _submit(http: HTTPConnectionPool, files: list[Path], pipeline: str) -> list[str]:
    """The files as jobs of PER_JOB, uploaded one after another; their ids."""
    jobs = []
    for i in range(0, len(files), PER_JOB):
        parts = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in files[i:i + PER_JOB]]
        jobs.append(_json(http.request("POST", "/v1/jobs",
                                       fields=[("pipeline", pipeline), *parts]))["id"])
    return jobs


def _epoch(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


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
                   client: Callable[[HTTPConnectionPool, list[Path]], int]) -> Run:
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
            wall, start = time.time(), time.monotonic()
            done = sum(pool.map(client, https, shares))
            end = time.monotonic()
    finally:
        for http in https:
            http.close()
    return Run(done, start, end, wall)


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
        self.ends: list[tuple[float, float]] = []  # each task's start and end
        self.waits: list[float] = []  # each result's, from the task's end to its download

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def run(self, work: Workload) -> Run:
        self.ends, self.waits = [], []
        run = _timed_clients(self.api, work.files,
                             lambda http, share: self._client(http, share, work.operation))
        assert run.done == len(work.files)
        run.spans, run.waits = self.ends, self.waits
        return run

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
            self.ends.append((body["result"]["started"], body["result"]["finished"]))
            self.waits.append(time.time() - body["result"]["finished"])
            results += bool(_body(http.request("GET", f"/result/{task}")))
        return results


# -- the services -------------------------------------------------------------------------------
@contextmanager
def services(tmp: Path, processes: int, clients: str = "jobs") -> Iterator[list[object]]:
    """The four systems, each imgq with the client `clients` names, or with both (`both`: the
    clients that download items as they come as systems of their own, on the same services)."""
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
        embedded_api = embedded.serve()

        fleet = redis_postgres_fleet(stack, tmp, logs, tag)
        fleet_api = fleet.serve()
        fleet.worker(processes)
        fleet.beat()
        imgq: list[object] = []
        for name, api, processes_of in (("imgq embedded", embedded_api, embedded),
                                        ("imgq fleet", fleet_api, fleet)):
            if clients in ("jobs", "both"):
                imgq.append(Imgq(name, api, processes_of, "jobs"))
            if clients in ("items", "both"):
                imgq.append(Imgq(name + ITEMS_AS_THEY_COME if clients == "both" else name, api,
                                 processes_of, "items"))

        celery = stack.enter_context(celery_design(tmp / "celery", processes, logs))
        yield [raw, *imgq, celery]


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
        deadline = time.monotonic() + 120  # its imports take a minute on a loaded machine
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


def run(rounds: int, processes: int, only: str | None = None, clients: str = "jobs") -> None:
    works = workloads()
    if only:
        works = works[:1] if only == "small" else works[1:]
    print(f"bench_compare · {machine_note()} · {processes} processes per system, "
          f"{rounds} interleaved rounds (median) · imgq's clients: {clients}")
    results = Results(cores=processes)
    timeline = CpuTimeline()
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            with services(tmp, processes, clients) as systems:
                time.sleep(3)  # workers connect
                for work in works:  # warm up: imports, connections, first-use costs
                    for system in systems:
                        system.run(work)  # type: ignore[attr-defined]
                for r in range(rounds):
                    order = systems[r % len(systems):] + systems[:r % len(systems)]
                    for work in works:
                        for system in order:
                            results.add(work, system, processes, timeline)
    finally:
        timeline.close()
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    report(works, results)


@dataclass
class Results:
    """Per (workload, system): each round's run, CPU per item of the system's processes and of
    the clients (this process), and the utilisation of the cores in each tenth of the run."""

    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    clients: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    busy: dict[tuple[str, str], list[list[tuple[float, float]]]] = field(default_factory=dict)
    cores: int = 2

    def add(self, work: Workload, system: object, cores: int, timeline: CpuTimeline) -> None:
        key = (work.name, system.name)  # type: ignore[attr-defined]
        pids = system.pids()  # type: ignore[attr-defined]
        before = process_tree_cpu(pids)
        mine = time.process_time()  # this process: the HTTP clients
        timeline.start(pids, os.getpid())
        run = system.run(work)  # type: ignore[attr-defined]
        samples = timeline.stop()
        used = process_tree_cpu(pids) - before
        self.runs.setdefault(key, []).append(run)
        self.cpu.setdefault(key, []).append(used / len(work.files))
        self.clients.setdefault(key, []).append((time.process_time() - mine) / len(work.files))
        self.busy.setdefault(key, []).append(tenths(samples, run.start, run.end, cores))


def report(works: list[Workload], results: Results) -> None:
    """Items per second (median of the rounds) and CPU per item: every process of the system
    (API, workers, beat; not the clients, Redis or PostgreSQL), and apart from it the HTTP
    clients' (this process), which share the cores with the services but not with the raw
    loop. The CPU ratio to raw pyvips moves far less with the machine's load than wall time.
    Then how busy the cores were in each tenth of the run (median of the rounds): the system's
    processes and the clients together, and the whole machine (other work on it included);
    and how many items were being worked on in each tenth, from each item's own start and end
    (which the machine's other work does not lower), with the time before the first item
    started (uploads) and after the last one ended (the last polls and downloads)."""
    for work in works:
        keys = [k for k in results.runs if k[0] == work.name]
        rate = {s: len(work.files) / statistics.median(r.elapsed for r in results.runs[(w, s)])
                for w, s in keys}
        print(f"\n{work.name}")
        for system, per_second in rate.items():
            key = (work.name, system)
            spread = [r.elapsed for r in results.runs[key]]
            per_item = statistics.median(results.cpu[key]) * 1000
            client = statistics.median(results.clients[key]) * 1000
            print(f"  {system:38s} {per_second:7.1f} items/s   CPU {per_item:6.1f} ms/item "
                  f"(+ clients {client:4.1f})   (runs: {', '.join(f'{s:.2f}' for s in spread)} s)")
        raw, celery = rate["raw pyvips"], rate["FastAPI + Celery + Pillow"]
        raw_cpu = statistics.median(results.cpu[(work.name, "raw pyvips")])
        for system in (s for s in rate if s.startswith("imgq")):
            print(f"  {system}: {rate[system] / celery:.2f}× the Celery design, "
                  f"{rate[system] / raw:.0%} of raw pyvips "
                  f"(CPU per item: raw pyvips's is "
                  f"{raw_cpu / statistics.median(results.cpu[(work.name, system)]):.0%} of it)")
        print("  cores busy in each tenth of the run, system + clients (whole machine):")
        for system in rate:
            busy = results.busy[(work.name, system)]
            parts = [(statistics.median(b[n][0] for b in busy),
                      statistics.median(b[n][1] for b in busy)) for n in range(len(busy[0]))]
            print(f"    {system:38s} " + " ".join(f"{a:3.0%}({m:3.0%})" for a, m in parts))
        print("  items being worked on, on average, in each tenth of the run (of "
              f"{results.cores} processes); ms before the first item started and after the "
              "last one ended; a result's mean wait from its item's end to its download:")
        for system in rate:
            runs = results.runs[(work.name, system)]
            held = [occupancy(r.spans, r.wall_start, r.wall_start + r.elapsed) for r in runs]
            head = statistics.median(min(s for s, _ in r.spans) - r.wall_start for r in runs)
            tail = statistics.median(r.wall_start + r.elapsed - max(e for _, e in r.spans)
                                     for r in runs)
            wait = statistics.median(statistics.fmean(r.waits) if r.waits else 0.0 for r in runs)
            print(f"    {system:38s} " + " ".join(
                f"{statistics.median(h[n] for h in held):4.2f}" for n in range(len(held[0])))
                + f"   {head * 1000:4.0f} / {tail * 1000:4.0f} ms   wait {wait * 1000:4.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--only", choices=["small", "2mp"], help="run one workload")
    parser.add_argument("--imgq-clients", choices=["items", "jobs", "both"], default="jobs",
                        help="jobs: follow each job in turn, then download its results "
                        "(default); items: poll all of a client's jobs together and download "
                        "each result once it is there; both: each as a system of its own")
    args = parser.parse_args()
    run(args.rounds, args.processes, args.only, args.imgq_clients)


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
