"""Webhook deliveries are bounded and run beside the sweeper: a receiver that never answers
delays no other job's webhook, and an answer's body is never read (a 300 MB one included)."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.fixtures.encoded import png_bytes
from tests.fixtures.server import Server


# The deliveries' time limit: the slow call is cut after it, so the test waits it out once.
# Long enough that the other webhooks are delivered within it on a loaded machine.
LIMIT = 12


class Receivers:
    """/slow holds every request until the caller hangs up (or a minute); /huge answers a
    300 MB body; /fast says 200."""

    def __init__(self) -> None:
        self.fast_at: list[float] = []
        self.slow_at: list[float] = []
        self.slow_cut_at: list[float] = []  # when imgq hung up on a held /slow call
        self.huge_sent: list[int] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/slow":
                    outer.slow_at.append(time.monotonic())
                    if self._hung_up_within(60):
                        outer.slow_cut_at.append(time.monotonic())
                    return
                if self.path == "/huge":
                    self._huge()
                    return
                outer.fast_at.append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _hung_up_within(self, seconds: float) -> bool:
                """Hold the call, answering nothing; True once the caller closes it."""
                end = time.monotonic() + seconds
                while not outer.release.is_set() and time.monotonic() < end:
                    readable, _, _ = select.select([self.connection], [], [], 0.1)
                    if readable and not self.connection.recv(1, socket.MSG_PEEK):
                        return True
                return False

            def _huge(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(300 * 1024 * 1024))
                self.end_headers()
                sent, block = 0, b"x" * 65536
                try:
                    while sent < 300 * 1024 * 1024:
                        self.wfile.write(block)
                        sent += len(block)
                except OSError:
                    pass
                outer.huge_sent.append(sent)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    r = Receivers()
    yield r
    r.close()


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_receiver_that_never_answers_delays_no_other_webhook_and_bodies_are_not_read(
    serve: Callable[..., Server], receivers: Receivers,
) -> None:
    # a retry 1 s after the cut, not the default 10 s: the time limit alone spaces the calls
    server = serve(workers=1, webhook_secret="s3cret", webhook_allow_private="true",
                   webhook_timeout_seconds=LIMIT, webhook_retry_backoff_seconds=1,
                   lease_seconds=2)
    slow = server.submit_ok([("a.png", png_bytes())], "grayscale",
                            callback_url=f"{receivers.base}/slow")
    server.wait_finished(slow["id"])
    _wait(lambda: bool(receivers.slow_at), 30, "the slow receiver was never called")
    huge = server.submit_ok([("b.png", png_bytes())], "grayscale",
                            callback_url=f"{receivers.base}/huge")
    fast = server.submit_ok([("c.png", png_bytes())], "grayscale",
                            callback_url=f"{receivers.base}/fast")
    server.wait_finished(fast["id"])
    server.wait_finished(huge["id"])
    _wait(lambda: bool(receivers.fast_at), 15, "the fast receiver waited for the slow one")
    # the fast webhook was delivered while the slow call was still held, not after its cut
    _wait(lambda: bool(receivers.slow_cut_at), 90, "the slow call was never cut")
    assert receivers.fast_at[0] < receivers.slow_cut_at[0]
    _wait(lambda: bool(receivers.huge_sent), 30, "imgq kept reading the 300 MB answer")
    assert receivers.huge_sent[0] < 64 * 1024 * 1024, receivers.huge_sent
    # The slow delivery is cut at its time limit and tried again later.
    _wait(lambda: len(receivers.slow_at) >= 2, 90, "the slow delivery was never tried again")
    assert receivers.slow_at[1] - receivers.slow_at[0] >= LIMIT
