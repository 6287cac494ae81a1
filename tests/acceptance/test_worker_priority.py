"""`imgq worker`'s CPU priority under Linux's autogroup, where the cores are shared between
sessions first and a process's nice only orders it within its session: a worker that leads
its own session lowers its session's group to IMGQ_WORKER_NICE; one started inside another
session (a shell's) leaves that session's group as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.fleet_support import (
    BROKERS,
    Fleet,
    broker_reachable,
    forget_queues,
    imgq_command,
)
from tests.conftest import service_missing

AUTOGROUP_SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")
STARTED_WITHIN = 60.0


def autogroup(pid: int) -> tuple[str, int] | None:
    """The autogroup of a process, and its nice: "/autogroup-N nice X"; None for a process
    in no autogroup (the kernel's root group, where a session that never called setsid since
    boot stays, such as a CI runner's: the file reads empty)."""
    fields = Path(f"/proc/{pid}/autogroup").read_text().split()
    if not fields:
        return None
    name, _, nice = fields
    return name, int(nice)


def nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):  # gone meanwhile
            continue
    return found


def item_processes(worker: int, wanted_nice: int) -> list[int]:
    """The worker's item processes once each has lowered its own priority (which they do as
    they start, after the worker's own start-up)."""
    deadline = time.monotonic() + STARTED_WITHIN
    while time.monotonic() < deadline:
        found = [c for c in children(worker) if nice_of(c) == wanted_nice]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"worker {worker} started no item process in {STARTED_WITHIN:.0f} s")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    if not AUTOGROUP_SWITCH.exists() or AUTOGROUP_SWITCH.read_text().strip() != "1":
        pytest.skip("this kernel does not schedule by session (autogroup)")
    url = BROKERS["redis"]
    problem = broker_reachable(url)
    if problem:
        service_missing("redis", problem)
    tag = uuid.uuid4().hex[:8]
    queues = {"cpu_queue": f"cpu-{tag}", "gpu_queue": f"gpu-{tag}", "sweep_queue": f"sweep-{tag}"}
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Fleet({"broker_url": url, "data_dir": str(tmp_path / "data"),
                     "worker_nice": "7", **queues}, logs)
    try:
        yield running
    finally:
        running.stop_all()
        forget_queues(url, list(queues.values()))


def test_a_worker_leading_its_session_lowers_the_sessions_cpu_group(fleet: Fleet) -> None:
    worker = fleet.worker(1)  # in a session of its own, as a service manager starts it
    assert os.getsid(worker.pid) == worker.pid
    items = item_processes(worker.pid, min(19, nice_of(worker.pid) + 7))
    group = autogroup(worker.pid)
    assert group is not None and group[1] == 7, fleet.log_text()
    assert {autogroup(pid) for pid in items} == {group}  # its item processes are in it
    own = autogroup(os.getpid())  # the test's own session is not (nor in the root group)
    assert own is None or own[0] != group[0]


def test_a_worker_in_a_shells_session_leaves_that_sessions_group_alone(fleet: Fleet) -> None:
    shell = subprocess.Popen(  # the shell leads the session, the worker is its child
        ["sh", "-c", '"$@" & wait', "sh", *imgq_command(), "worker", "--concurrency", "1"],
        env=fleet.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT, start_new_session=True)
    fleet.processes.append(("worker", shell, fleet.log_dir / "unused.log"))
    deadline = time.monotonic() + STARTED_WITHIN
    while not (workers := children(shell.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers, "the shell started no worker"
    worker = workers[0]
    try:
        item_processes(worker, min(19, nice_of(worker) + 7))
        assert os.getsid(worker) == shell.pid != worker
        shells = autogroup(shell.pid)
        assert shells is not None and autogroup(worker) == shells
        assert shells[1] == 0
    finally:
        stop_and_wait(shell.pid, worker)


def stop_and_wait(group: int, pid: int) -> None:
    """SIGTERM the process group and wait for `pid` (not the group's leader) to end."""
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if running(pid):
        os.killpg(group, signal.SIGKILL)


def running(pid: int) -> bool:
    """Not ended (a zombie has ended: its new parent may reap it later)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
