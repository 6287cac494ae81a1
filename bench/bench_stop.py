"""How fast a cancel and the time limit stop an item whose steps copy a whole large image.

For each pipeline (right-angle rotations, flips, a wide blur, a free rotation) on a 16-megapixel
JPEG, through `imgq serve` (one worker process, default settings otherwise):

- reference: the item run to its end (submit → succeeded), seconds;
- cancel: the same item cancelled 1 s after it started running; the seconds from the cancel
  request to the item being `cancelled`, and that as a share of the reference;
- time limit: IMGQ_ITEM_TIME_LIMIT_SECONDS set to a quarter of the reference; how far past the
  limit the item ended (its processing seconds over the limit).

    python bench/bench_stop.py
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PIPELINES = {
    "rotate 90 ×4": "rotate:angle=90|rotate:angle=90|rotate:angle=90|rotate:angle=90|encode:format=png",
    "flip ×4": "flip|flip|flip|flip|encode:format=png",
    "wide blur": "blur:radius=60|encode:format=png",
    "rotate 30": "rotate:angle=30|encode:format=png",
}
SIDE = 4000  # 16 MP: the default input limit


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    def __init__(self, **settings: Any) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="imgq-bench-stop-"))
        port = _port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGQ_")}
        env.update({"IMGQ_DATA_DIR": str(self.data), "IMGQ_PORT": str(port), "IMGQ_WORKERS": "1",
                    "IMGQ_LOG_LEVEL": "WARNING"})
        env.update({f"IMGQ_{k.upper()}": str(v) for k, v in settings.items()})
        imgq = Path(sys.executable).with_name("imgq")
        self.log = (self.data / "serve.log").open("wb")
        self.process = subprocess.Popen([str(imgq), "serve"], env=env, start_new_session=True,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        end = time.monotonic() + 120
        while time.monotonic() < end and self.process.poll() is None:
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("imgq serve did not start: "
                           + (self.data / "serve.log").read_text()[-2000:])

    def submit(self, image: bytes, pipeline: str) -> str:
        response = self.client.post("/v1/jobs", files={"files": ("big.jpg", image)},
                                    data={"pipeline": pipeline})
        response.raise_for_status()
        return str(response.json()["id"])

    def item(self, job_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/v1/jobs/{job_id}").json()["items"][0])

    def wait(self, job_id: str, states: set[str], timeout: float = 900) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while (item := self.item(job_id))["status"] not in states:
            if time.monotonic() > end:
                raise RuntimeError(f"{job_id}: still {item['status']}")
            time.sleep(0.05)
        return item

    def close(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(30)
        self.client.close()
        shutil.rmtree(self.data, ignore_errors=True)


def main() -> None:
    image = common.photos(1, (SIDE, SIDE))[0].read_bytes()
    print(common.machine_note())
    rows = []
    for name, pipeline in PIPELINES.items():
        server = Serve()
        try:
            started = time.monotonic()
            job = server.submit(image, pipeline)
            server.wait(job, {"succeeded"})
            reference = time.monotonic() - started
            job = server.submit(image, pipeline)
            server.wait(job, {"running"})
            time.sleep(1.0)
            asked = time.monotonic()
            server.client.post(f"/v1/jobs/{job}/cancel").raise_for_status()
            server.wait(job, {"cancelled", "succeeded"})
            cancel = time.monotonic() - asked
        finally:
            server.close()
        limit = max(1.0, round(reference / 4, 1))
        server = Serve(item_time_limit_seconds=limit)
        try:
            item = server.wait(server.submit(image, pipeline), {"failed", "succeeded"})
            took = item["timings"].get("processing_seconds") or float("nan")
        finally:
            server.close()
        rows.append([name, f"{reference:.1f}", f"{cancel:.1f}", f"{cancel / reference:.2f}",
                     f"{limit:g}", f"{took:.1f}", f"{took - limit:+.1f}", item["status"]])
    print(common.table(rows, ["pipeline", "reference s", "cancel→cancelled s",
                              "cancel / reference", "time limit s", "ran s", "over limit s",
                              "with the limit"]))


if __name__ == "__main__":
    main()
