"""Where a small item's CPU goes in imgq's fleet, process by process, and two code trees A/B.

The fleet of `bench_compare.py` (`imgq serve` API only, `imgq worker --concurrency 2`, `imgq
beat`, Celery on Redis, a fresh PostgreSQL schema, local files) runs its 200 small JPEGs →
100×100 (jobs of 10, 8 client threads that poll with `If-None-Match` and download every result)
in rounds. Each round reads user + system CPU from /proc, around the round, of: the API, the
Celery parent, its prefork children, the beat, a Redis server of the fleet's own (started here on
a free port, so its CPU and its `INFO commandstats` count this fleet alone), and a PostgreSQL
server of the fleet's own (initdb'd here, on a free port): all of its processes, the backends
that exited during the round (the API's connections past its pool, closed after a burst) and
the WAL writer's flushes included. It prints the median per item of each, in ms, and Redis
commands per item.

`--against PATH` runs a second fleet side by side from another copy of the code (e.g. `git
archive main | tar -x -C /tmp/main`), each process with `PYTHONPATH` on its tree, and alternates
the two fleets' rounds (A B, B A, ...): a change is measured against what it changes on the same
machine at the same time.

    .venv/bin/python bench/bench_fleet_cpu.py [--rounds 5] [--against /tmp/main]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_compare import NO_AI_START, Imgq, Workload, small_jpegs  # noqa: E402
from bench.common import machine_note  # noqa: E402
from tests.acceptance.fleet_support import DEFAULT_WORKER_NICE, Fleet, free_port  # noqa: E402
from tests.fixtures.outages import OwnPostgres  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PIPELINE = "resize:width=100,height=100,fit=cover|encode:format=jpeg,quality=85"
REDIS_COMMANDS = "Redis commands"


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu(pid: int) -> float:
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / TICK


def reaped(pid: int) -> float:
    """The CPU of `pid`'s children that have exited and been waited for."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[13]) + int(fields[14])) / TICK


def descendants(pid: int) -> list[int]:
    parents = {int(e): fields[1] for e in os.listdir("/proc") if e.isdigit()
               and (fields := _stat(int(e))) is not None}
    found, todo = [], [pid]
    while todo:
        parent = str(todo.pop())
        children = [p for p, pp in parents.items() if pp == parent]
        found += children
        todo += children
    return found


class CodeFleet(Fleet):
    """A Fleet whose processes import imgq from `code` (PYTHONPATH)."""

    code: str = str(ROOT)

    def env(self, **extra: Any) -> dict[str, str]:
        return {**super().env(**extra), "PYTHONPATH": self.code}


@dataclass
class System:
    name: str
    fleet: CodeFleet
    client: Imgq
    redis_pid: int
    redis: redis.Redis
    postmaster: int

    def sample(self) -> dict[str, float]:
        """CPU seconds so far of each part, and Redis commands so far."""
        found: dict[str, float] = {}
        for role, process, _ in self.fleet.processes:
            if role == "worker":
                found["Celery parent"] = cpu(process.pid)
                found["Celery children"] = sum(cpu(p) for p in descendants(process.pid))
            else:
                found[{"serve": "API"}.get(role, role)] = (
                    cpu(process.pid) + sum(cpu(p) for p in descendants(process.pid)))
        found["Redis"] = cpu(self.redis_pid)
        found["PostgreSQL"] = (cpu(self.postmaster) + reaped(self.postmaster)
                               + sum(cpu(p) for p in descendants(self.postmaster)))
        found[REDIS_COMMANDS] = sum(s["calls"] for s in self.redis.info("commandstats").values())
        return found


def start(stack: ExitStack, name: str, code: str, tmp: Path) -> System:
    port = free_port()
    folder = tmp / name
    folder.mkdir()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(folder)],
                              stdout=subprocess.DEVNULL)
    stack.callback(server.wait)
    stack.callback(server.terminate)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    postgres = OwnPostgres()
    stack.callback(postgres.remove)
    postgres.start()
    postmaster = int((postgres.folder / "data" / "postmaster.pid").read_text().split()[0])
    database = f"{postgres.url}?application_name=imgq-bench-{uuid.uuid4().hex[:8]}"
    (folder / "logs").mkdir()
    fleet = CodeFleet({"data_dir": str(folder / "data"), "database_url": database,
                       "storage_url": (folder / "blobs").as_uri(), "broker_url": url,
                       **NO_AI_START, **DEFAULT_WORKER_NICE}, folder / "logs")
    fleet.code = code
    stack.callback(fleet.stop_all)
    api = fleet.serve()
    fleet.worker(2)
    fleet.beat()
    return System(name, fleet, Imgq(name, api, fleet), server.pid, client, postmaster)


def rounds_of(systems: list[System], rounds: int) -> Iterator[list[System]]:
    for r in range(rounds):
        yield systems if r % 2 == 0 else systems[::-1]


def run(rounds: int, against: str | None) -> None:
    work = Workload("200 small JPEGs → 100×100", small_jpegs(), PIPELINE, "thumb100")
    trees = {**({"against": against} if against else {}), "this tree": str(ROOT)}
    print(f"bench_fleet_cpu · {machine_note()} · {rounds} rounds"
          + (" (alternating the two trees)" if against else ""))
    per_item: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        systems = [start(stack, name, code, Path(tmp_name)) for name, code in trees.items()]
        time.sleep(3)  # workers connect
        for system in systems:  # warm up: imports, connections, first-use costs
            system.client.run(work)
        for order in rounds_of(systems, rounds):
            for system in order:
                before = system.sample()
                system.client.run(work)
                time.sleep(0.3)  # the last acks and writes
                after = system.sample()
                for part, value in after.items():
                    per_item[system.name].setdefault(part, []).append(
                        (value - before.get(part, 0.0)) / len(work.files))
    report(per_item)


def report(per_item: dict[str, dict[str, list[float]]]) -> None:
    names = list(per_item)
    print(f"\nCPU ms per item, median of the rounds{'' if len(names) == 1 else '; this tree ÷ against'}")
    print(f"{'':18s}" + "".join(f"{n:>12s}" for n in names))
    parts = [p for p in per_item[names[0]] if p != REDIS_COMMANDS]
    totals = {n: [sum(r) * 1000 for r in zip(*(per_item[n][p] for p in parts))] for n in names}
    for part in [*parts, REDIS_COMMANDS, "all"]:
        scale = 1 if part == REDIS_COMMANDS else 1000
        values = [statistics.median(totals[n]) if part == "all"
                  else statistics.median(per_item[n][part]) * scale for n in names]
        ratio = (f"{values[1] / values[0]:8.2f}×" if len(values) == 2 and values[0] else "")
        print(f"{part:18s}" + "".join(f"{v:12.2f}" for v in values) + ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", help="another copy of the code to run beside this one")
    args = parser.parse_args()
    run(args.rounds, args.against)


if __name__ == "__main__":
    main()
