"""`imgq serve` on a port that is taken says so at once, before it says it is serving."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.server import Server, imgq_command


def test_a_busy_port_is_named_and_nothing_claims_to_serve(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGQ_")}
        run = subprocess.run([*imgq_command(), "serve", "--port", str(port)], check=False,
                             env={**env, "IMGQ_DATA_DIR": str(tmp_path / "data")},
                             capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    output = run.stdout + run.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in output
    assert "--port" in output
    assert "serving on" not in output
    assert "Traceback" not in output


def test_it_logs_serving_on_the_port_it_bound(serve: Callable[..., Server]) -> None:
    server = serve()
    log = server.logs[-1].read_text()
    assert f"serving on http://127.0.0.1:{server.port}" in log
    assert server.client.get("/healthz").json() == {"status": "ok"}
