"""A NATS fleet (an API server, a worker, a beat) across a broker restart: every image of a batch
submitted before the outage succeeds after it. The test starts its own nats-server on a free
port and stops it; the shared broker is never touched."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.acceptance.fleet_support import signal_group, wait_or_kill
from tests.conftest import IN_CI
from tests.fixtures.encoded import big_png
from tests.fixtures.server import Server, free_port, imgq_command

SLOW = "resize:width=1500,enlarge=true|encode:format=png"
OUTAGE_SECONDS = 8.0


class OwnNats:
    def __init__(self, folder: Path) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(binary).exists():
            if IN_CI:
                pytest.fail("nats-server is not installed; CI must run this test")
            pytest.skip("nats-server is not installed")
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd",
             str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError("nats-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)
            self.process = None


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[OwnNats]:
    nats = OwnNats(tmp_path / "nats")
    nats.start()
    try:
        yield nats
    finally:
        nats.stop()


def test_a_batch_finishes_across_a_broker_restart(
    serve: Callable[..., Server], own_nats: OwnNats, tmp_path: Path,
) -> None:
    fleet = {"broker_url": own_nats.url, "lease_seconds": 5, "queue_sweep_interval_seconds": 1,
             "outbox_grace_seconds": 3, "nats_ack_wait_seconds": 6}
    server = serve(**fleet)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGQ_")}
    env.update({f"IMGQ_{k.upper()}": str(v) for k, v in fleet.items()})
    env["IMGQ_DATA_DIR"] = str(server.data_dir)  # one SQLite database and folder for all
    # The worker leads a session of its own: at the default worker_nice it would lower that
    # session's CPU group (Linux autogroup), and on a machine busy with other tests it took
    # no item in two minutes (as Fleet.worker says; test_worker_priority tests the priority)
    env["IMGQ_WORKER_NICE"] = "0"
    helpers = []
    for role, args in (("worker", ["--concurrency", "2"]), ("beat", [])):
        with (tmp_path / f"{role}.log").open("wb") as log:
            helpers.append(subprocess.Popen([*imgq_command(), role, *args], env=env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))
    try:
        image = big_png(300, 300)
        job_id = server.submit_ok([(f"img{n}.png", image) for n in range(10)], SLOW)["id"]
        server.wait_job(job_id, lambda j: j["counts"].get("succeeded", 0) >= 1, timeout=120,
                        what="a first item done")
        own_nats.stop()
        during = server.submit_ok([("late.png", image)], SLOW)["id"]  # published to no broker
        time.sleep(OUTAGE_SECONDS)
        own_nats.start()
        for job in (job_id, during):
            done = server.wait_finished(job, timeout=180)
            assert set(done["counts"]) == {"succeeded"}, done["counts"]
        for helper in helpers:  # an operator's stop is prompt after an outage, too
            signal_group(helper, signal.SIGTERM)
        for helper in helpers:
            assert helper.wait(15) == 0, helper.args
    finally:
        for helper in helpers:
            signal_group(helper, signal.SIGTERM)
        for helper in helpers:
            wait_or_kill(helper, timeout=20)
