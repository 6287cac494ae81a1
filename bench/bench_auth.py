"""What API keys cost per request: GET /v1/jobs/{id} on two `imgq serve`, one keyless
(IMGQ_AUTH=none) and one with keys (IMGQ_AUTH=keys, the key sent as a bearer token), in one run.

With keys, each request is checked against the database (a SHA-256 of the key, then one
indexed SELECT in a worker thread), never a cache, so a revoke counts at once on every server.
The figure is the added latency at p50 and p99 (target: under 1 ms at p50).

Method: both servers run at once on SQLite (the default), each with one finished job; one
client on a keep-alive connection sends requests one at a time, in blocks that alternate
between the two servers so that drift in the machine's load falls on both alike; 300 warm-up
requests each, then `--requests` measured (default 3000) each.

    python bench/bench_auth.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_serve import serve  # noqa: E402

BLOCK = 100
WARMUP = 300


def create_key(data_dir: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGQ_")}
    env["IMGQ_DATA_DIR"] = str(data_dir)
    imgq = Path(sys.executable).with_name("imgq")
    cmd = [str(imgq)] if imgq.exists() else [sys.executable, "-m", "imgq.cli"]
    done = subprocess.run([*cmd, "keys", "create", "bench"], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def one_finished_job(client: httpx.Client) -> str:
    png = common.small_pngs(1)[0]
    answer = client.post("/v1/jobs", files=[("files", (png.name, png.read_bytes()))],
                         data={"pipeline": "grayscale"})
    answer.raise_for_status()
    job_id = str(answer.json()["id"])
    while client.get(f"/v1/jobs/{job_id}").json()["status"] != "succeeded":
        time.sleep(0.05)
    return job_id


def timed_gets(client: httpx.Client, path: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise SystemExit(f"{path}: {response.status_code} {response.text}")
    return times


def lookup_times(data_dir: Path, key: str, count: int) -> list[float]:
    from imgq.domain.access import hash_secret
    from imgq.store.db import make_engine
    from imgq.store.repository import Repository

    repo = Repository(make_engine(f"sqlite:///{data_dir / 'imgq.db'}"))
    times = []
    for _ in range(count):
        start = time.perf_counter()
        assert repo.key_by_hash(hash_secret(key)) is not None
        times.append(time.perf_counter() - start)
    repo.engine.dispose()
    return times


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    print(common.machine_note())
    with serve({"IMGQ_WORKERS": "1"}) as plain, serve({"IMGQ_WORKERS": "1",
                                                       "IMGQ_AUTH": "keys"}) as keyed:
        key = create_key(keyed.data_dir)
        clients = {
            "no keys": httpx.Client(base_url=plain.url, timeout=30),
            "keys": httpx.Client(base_url=keyed.url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}),
        }
        paths = {name: f"/v1/jobs/{one_finished_job(c)}" for name, c in clients.items()}
        for name, client in clients.items():
            timed_gets(client, paths[name], WARMUP)
        times: dict[str, list[float]] = {name: [] for name in clients}
        for block in range(args.requests // BLOCK):
            order = list(clients) if block % 2 == 0 else list(reversed(clients))
            for name in order:
                times[name] += timed_gets(clients[name], paths[name], BLOCK)
        for client in clients.values():
            client.close()
        lookup = lookup_times(keyed.data_dir, key, args.requests)
    report(times)
    print(f"of which the key's lookup itself (SHA-256 and the SELECT, called directly): "
          f"p50 {percentile(lookup, 50) * 1e6:.0f} µs, p99 {percentile(lookup, 99) * 1e6:.0f} µs")


def report(times: dict[str, list[float]]) -> None:
    rows = []
    for name, values in times.items():
        rows.append([name, f"{percentile(values, 50) * 1000:.3f}",
                     f"{percentile(values, 99) * 1000:.3f}", str(len(values))])
    print(common.table(rows, ["GET /v1/jobs/{id}", "p50 ms", "p99 ms", "requests"]))
    for q in (50, 99):
        base, keyed = percentile(times["no keys"], q), percentile(times["keys"], q)
        print(f"p{q}: keys add {(keyed - base) * 1000:+.3f} ms ({keyed / base:.2f}× the "
              f"keyless time)")


if __name__ == "__main__":
    main()
