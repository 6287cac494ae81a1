"""Stopping `imgq serve`: Ctrl-C always stops it (never a hang), and a step that ignores a
cancel is stopped with its worker process, which is replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

from tests.fixtures.encoded import big_png
from tests.fixtures.server import STOP_TIMEOUT, Server

SLOW = "resize:width=3000,enlarge=true|encode:format=png"


def ctrl_c(server: Server) -> int:
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group, the
    worker processes included. The exit status, or a failure when it hangs."""
    process = server.process
    assert process is not None
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"imgq serve hung after Ctrl-C:\n{server.log_text()[-3000:]}") from None


def group_gone(group: int, within: float = 10.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_ctrl_c_stops_imgq_serve_every_time_and_loses_no_work(
    serve: Callable[..., Server],
) -> None:
    server = serve(workers=2)
    image = big_png(500, 500)
    jobs = []
    # At once, while workers start, while they run items, and when idle.
    for wait in (0.0, 0.3, 1.0, 2.0, 0.0, 0.5):
        jobs.append(server.submit_ok([(f"img{n}.png", image) for n in range(4)], SLOW)["id"])
        time.sleep(wait)
        group = server.process.pid if server.process else 0
        ctrl_c(server)
        server.process = None
        assert group_gone(group), "worker processes outlived imgq serve"
        server.start()
    for job_id in jobs:
        job = server.wait_finished(job_id)
        assert job["counts"] == {"succeeded": 4}, job["items"]
