"""The API process's own CPU per request, by kind, against `GET /healthz` in the same run.

`imgq serve` (embedded: SQLite, local files, 2 workers; `--fleet`: the API of the fleet that
bench_compare.py runs, Celery on Redis and PostgreSQL) is given one job of 10 small JPEGs
(bench_compare's 400×300, cover-cropped to 100×100 JPEG Q85) and waits until it is done; then
4 client threads (urllib3, one keep-alive connection each) send each kind of request in
turn, N times:

- `GET /healthz`: the floor every request pays (the server, the middleware), the reference;
- `GET /v1/jobs/{id}` answered 200 and answered 304 (`If-None-Match`), and `?ids=` with 304;
- `GET .../items/{i}/result`: one small result downloaded;
- `POST /v1/jobs` of the 10 JPEGs, one for every 20 GETs (its figure is per file, the share
  of one item; embedded, it also holds what the dispatcher's threads in the API process do for
  those items while this kind runs).

CPU is user + system time of the API process alone (all its threads; workers are processes
of their own, not counted), read from /proc before and after each kind: on a shared machine it
moves far less than wall time. Rounds alternate the kinds; the median round is printed, in
ms per request and as × the healthz floor.

    .venv/bin/python bench/bench_api.py [--rounds 3] [--requests 1000] [--fleet]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from urllib3 import HTTPConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_compare import (  # noqa: E402
    NO_AI_START,
    PER_JOB,
    redis_postgres_fleet,
    small_jpegs,
)
from bench.common import machine_note  # noqa: E402
from tests.acceptance.fleet_support import Fleet  # noqa: E402

CLIENTS = 4
PIPELINE = "resize:width=100,height=100,fit=cover|encode:format=jpeg,quality=85"
TICK = os.sysconf("SC_CLK_TCK")


def own_cpu(pid: int) -> float:
    """CPU seconds of the process `pid` itself (its threads, not its children)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1000, help="of each GET kind per round")
    parser.add_argument("--fleet", action="store_true", help="the fleet's API (Redis, PostgreSQL)")
    args = parser.parse_args()
    print(machine_note())
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imgq-bench-api-")))
        logs = tmp / "logs"
        logs.mkdir()
        if args.fleet:
            fleet = redis_postgres_fleet(stack, tmp, logs, uuid.uuid4().hex[:8])
            api = fleet.serve()
            fleet.worker(2)
        else:
            fleet = Fleet({"data_dir": str(tmp / "data"), "workers": "2", **NO_AI_START}, logs)
            stack.callback(fleet.stop_all)
            api = fleet.serve()
        pid = fleet.processes[0][1].pid
        url = urlsplit(api)
        https = [HTTPConnectionPool(url.hostname or "127.0.0.1", url.port, maxsize=1,
                                    timeout=120, retries=False) for _ in range(CLIENTS)]
        for http in https:
            stack.callback(http.close)
        kinds = request_kinds(https[0], args.requests)
        rounds: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(args.rounds + 1):  # the first is a warm-up
            for name, (count, send) in kinds.items():
                before = own_cpu(pid)
                with ThreadPoolExecutor(CLIENTS) as pool:
                    list(pool.map(send, [https[k % CLIENTS] for k in range(count)], range(count)))
                rounds[name].append((own_cpu(pid) - before) * 1000 / count)
        report({name: statistics.median(values[1:]) for name, values in rounds.items()},
               "fleet" if args.fleet else "embedded", args.rounds)


def request_kinds(http: HTTPConnectionPool, requests: int
                  ) -> dict[str, tuple[int, Callable[[HTTPConnectionPool, int], None]]]:
    """Each kind: how many to send per round, and how to send the k-th (it checks the answer)."""
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in small_jpegs(PER_JOB)]
    job = json.loads(http.request("POST", "/v1/jobs", fields=[("pipeline", PIPELINE), *files]).data)
    deadline = time.monotonic() + 120
    while job["status"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job['id']}: not finished in 120 s")
        time.sleep(0.1)
        job = json.loads(http.request("GET", f"/v1/jobs/{job['id']}").data)
    path = f"/v1/jobs/{job['id']}"
    etag = http.request("GET", path).headers["ETag"]
    listed = http.request("GET", f"/v1/jobs?ids={job['id']}").headers["ETag"]
    results = [urlsplit(i["result_url"]).path for i in job["items"]]

    def get(target: str, status: int, headers: dict[str, str] | None = None
            ) -> Callable[[HTTPConnectionPool, int], None]:
        def send(client: HTTPConnectionPool, k: int) -> None:
            answer = client.request("GET", target.format(k=k % len(results)), headers=headers)
            if answer.status != status:
                raise SystemExit(f"GET {target}: {answer.status} {answer.data[:200]!r}")
        return send

    def submit(client: HTTPConnectionPool, k: int) -> None:
        answer = client.request("POST", "/v1/jobs", fields=[("pipeline", PIPELINE), *files])
        if answer.status != 201:
            raise SystemExit(f"POST /v1/jobs: {answer.status} {answer.data[:200]!r}")

    results_path = results[0].rsplit("/items/", 1)[0] + "/items/{k}/result"
    return {
        "GET /healthz": (requests, get("/healthz", 200)),
        "GET /v1/jobs/{id} 200": (requests, get(path, 200)),
        "GET /v1/jobs/{id} 304": (requests, get(path, 304, {"If-None-Match": etag})),
        "GET /v1/jobs?ids= 304": (requests, get(f"/v1/jobs?ids={job['id']}", 304,
                                                {"If-None-Match": listed})),
        "GET result (small)": (requests, get(results_path, 200)),
        "POST /v1/jobs, per file": (max(requests // 20, 8), submit),
    }


def report(ms: dict[str, float], system: str, rounds: int) -> None:
    floor = ms["GET /healthz"]
    print(f"\nimgq {system}: the API process's CPU per request (median of {rounds} rounds)")
    print(f"{'request':28s} {'ms':>7s} {'× healthz':>10s}")
    for name, value in ms.items():
        per = value / PER_JOB if name.startswith("POST") else value
        print(f"{name:28s} {per:7.3f} {per / floor:10.2f}")


if __name__ == "__main__":
    main()
