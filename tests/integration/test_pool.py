"""The worker pool: a step that ignores a cancel or the time limit is killed with its process,
a process that dies takes only its own item with it, and processes are recycled.

The slow steps come from a real plug-in package (an `imgq.operations` entry point written to a
temporary folder on sys.path), so the worker processes find them as users' plug-ins are
found.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips

from imgq.config import load_settings
from imgq.dispatch.pool import WorkerPool
from imgq.domain.access import SYSTEM
from imgq.domain.models import Item, Job
from imgq.domain.status import Status
from imgq.store.repository import utcnow
from imgq.worker.runtime import Runtime

PLUGIN = '''
import os
import time
from imgq.ops.base import Operation


class Stubborn(Operation):
    """Sleeps for minutes and never asks whether to stop (a long native call)."""
    name = "stubborn"
    summary = "test"

    def apply(self, image, params, ctx):
        time.sleep(600)
        return image


class Pid(Operation):
    """Writes down which process ran it."""
    name = "pid"
    summary = "test"

    def apply(self, image, params, ctx):
        with open(os.environ["IMGQ_TEST_PID_FILE"], "a") as fh:
            fh.write(f"{os.getpid()} ")
        return image


class Nap(Operation):
    """Takes two seconds, asking whether to stop."""
    name = "nap"
    summary = "test"

    def apply(self, image, params, ctx):
        for _ in range(20):
            ctx.check()
            time.sleep(0.1)
        return image
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    root = tmp_path_factory.mktemp("plugins")
    (root / "imgq_test_slow_ops.py").write_text(PLUGIN)
    info = root / "imgq_test_slow_ops-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: imgq-test-slow-ops\nVersion: 0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [imgq.operations]
        stubborn = imgq_test_slow_ops:Stubborn
        nap = imgq_test_slow_ops:Nap
        pid = imgq_test_slow_ops:Pid
        """))
    sys.path.insert(0, str(root))  # workers start with the parent's sys.path
    yield
    sys.path.remove(str(root))


@pytest.fixture
def make_pool(tmp_path: Path, plugin_path: None) -> Iterator[Any]:
    made: list[tuple[WorkerPool, Runtime]] = []

    def make(processes: int = 1, **settings: Any) -> tuple[WorkerPool, Runtime]:
        options = {"data_dir": tmp_path, "lease_seconds": 30, "kill_grace_seconds": 1.0,
                   "cancel_poll_seconds": 0.2, "retry_backoff_seconds": 0.05, "log_level": "WARNING",
                   **settings}
        s = load_settings(**options)
        rt = Runtime.from_settings(s, run_migrations=True)
        pool = WorkerPool(s, processes)
        made.append((pool, rt))
        return pool, rt

    yield make
    for pool, rt in made:
        pool.stop(wait=0)
        rt.close()


def submit(rt: Runtime, pipeline: list[dict[str, Any]]) -> Item:
    job_id = str(uuid.uuid4())
    src = rt.settings.data_dir / f"in-{job_id}.png"
    pyvips.Image.black(40, 30, bands=3).write_to_file(str(src))
    key = f"{job_id}/inputs/0.png"
    rt.blobs.put_file(key, src)
    now = utcnow()
    item = Item(id=str(uuid.uuid4()), job_id=job_id, idx=0, status=Status.queued,
                input_name="in.png", input_key=key, queued_at=now,
                input_meta={"format": "png", "width": 40, "height": 30, "bytes": 1})
    rt.repo.create_job(Job(id=job_id, created_at=now, expires_at=now, pipeline=pipeline,
                           resource="cpu", item_count=1, items=[item]))
    return item


def wait_running(rt: Runtime, item_id: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while rt.repo.get_item(item_id).status != Status.running:
        assert time.monotonic() < end, "the item never started"
        time.sleep(0.05)


def drain_all(pool: WorkerPool, rt: Runtime, item_ids: list[str], tries: int = 20) -> None:
    """Drain the queue until every item has ended (a process that leaves drains nothing)."""
    for _ in range(tries):
        if all(rt.repo.get_item(i).status in (Status.succeeded, Status.failed)
               for i in item_ids):
            return
        pool.drain("cpu").result(timeout=60)
    raise AssertionError("items still not done")


def worker_pids() -> set[int]:
    """This process's worker processes: the children of its fork server (not its resource
    tracker, nor a test server another fixture started)."""
    servers = [pid for pid in _children(os.getpid()) if b"forkserver" in _cmdline(pid)]
    return {int(pid) for server in servers for pid in _children(server)}


def _children(pid: int | str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []  # gone already


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone already


def test_a_cancel_ends_a_step_that_never_looks_and_the_pool_goes_on(make_pool: Any) -> None:
    pool, rt = make_pool(1)
    stuck = submit(rt, [{"op": "stubborn"}])
    running = pool.drain("cpu")
    wait_running(rt, stuck.id)
    before = worker_pids()
    rt.repo.cancel_job(stuck.job_id, scope=SYSTEM)
    assert running.result(timeout=60).items == 0  # the step sleeps for 600 s: its process ended
    item = rt.repo.get_item(stuck.id)
    assert item.status == Status.cancelled and item.attempts == 1

    after = submit(rt, [{"op": "grayscale"}])
    assert pool.drain("cpu").result(timeout=60).items == 1
    assert worker_pids().isdisjoint(before), "the ended process was replaced"
    done = rt.repo.get_item(after.id)
    assert done.status == Status.succeeded
    assert pyvips.Image.new_from_file(str(rt.settings.data_dir / "blobs" /
                                          (done.result_key or ""))).bands == 1


def test_the_time_limit_ends_a_step_that_never_looks(make_pool: Any) -> None:
    pool, rt = make_pool(1, item_time_limit_seconds=1.0)
    stuck = submit(rt, [{"op": "stubborn"}])
    assert pool.drain("cpu").result(timeout=60).items == 0
    item = rt.repo.get_item(stuck.id)
    assert item.status == Status.failed and item.error_code == "time_limit"
    assert item.error_message == "the item took longer than its time limit of 1 s"


def test_a_killed_worker_process_costs_only_its_own_item(make_pool: Any) -> None:
    pool, rt = make_pool(2, lease_seconds=2)
    first, second = submit(rt, [{"op": "nap"}]), submit(rt, [{"op": "nap"}])
    drains = [pool.drain("cpu"), pool.drain("cpu")]
    wait_running(rt, first.id)
    wait_running(rt, second.id)
    victim = min(worker_pids())
    os.kill(victim, signal.SIGKILL)
    assert sorted(d.result(timeout=60).items for d in drains) == [0, 1]
    statuses = {rt.repo.get_item(i).status for i in (first.id, second.id)}
    assert statuses == {Status.running, Status.succeeded}, "the other item finished"
    killed = next(i for i in (first.id, second.id)
                  if rt.repo.get_item(i).status == Status.running)
    time.sleep(2.5)  # its lease runs out
    assert rt.repo.requeue_lost(max_losses=5) == ([killed], [])
    drain_all(pool, rt, [killed])
    item = rt.repo.get_item(killed)
    assert item.status == Status.succeeded
    assert (item.attempts, item.failures, item.lease_losses) == (2, 0, 1)
    assert victim not in worker_pids()


def pids_of_items(pool: WorkerPool, rt: Runtime, count: int, at_once: bool) -> list[int]:
    """Run `count` items (all queued at once, or one after another): the pid that ran each."""
    if at_once:
        drain_all(pool, rt, [submit(rt, [{"op": "pid"}]).id for _ in range(count)])
    else:
        for _ in range(count):
            drain_all(pool, rt, [submit(rt, [{"op": "pid"}]).id])
    return [int(pid) for pid in Path(os.environ["IMGQ_TEST_PID_FILE"]).read_text().split()]


def test_workers_are_recycled_after_a_number_of_items(
    make_pool: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGQ_TEST_PID_FILE", str(tmp_path / "pids"))
    pool, rt = make_pool(1, worker_max_items=2)
    pids = pids_of_items(pool, rt, 6, at_once=True)
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5], pids


def test_a_worker_over_its_memory_ceiling_leaves_before_its_next_item(
    make_pool: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGQ_TEST_PID_FILE", str(tmp_path / "pids"))
    pool, rt = make_pool(1, worker_max_memory_mb=1)  # every process is over 1 MB
    pids = pids_of_items(pool, rt, 3, at_once=False)
    assert len(set(pids)) == 3, f"one item per process: {pids}"


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_items_run_at_a_lower_cpu_priority_than_the_server(make_pool: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "pids"
    monkeypatch.setenv("IMGQ_TEST_PID_FILE", str(pid_file))
    pool, rt = make_pool(1, worker_nice=7)
    item = submit(rt, [{"op": "pid"}])
    assert pool.drain("cpu").result(timeout=60).items == 1
    assert rt.repo.get_item(item.id).status == Status.succeeded
    worker = int(pid_file.read_text().split()[0])
    assert worker != os.getpid()
    assert _nice(worker) == min(19, os.nice(0) + 7)
    assert _nice(os.getpid()) == os.nice(0)  # the server's own priority is left alone
