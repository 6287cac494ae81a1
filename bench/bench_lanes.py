"""Lanes: how long a classic item waits behind four AI upscales in `imgq serve`.

One `imgq serve` (a subprocess on a fresh data folder, embedded defaults: classic workers one
per core, one AI worker with every core's threads). First a classic item alone (a 2-MP JPEG,
resize to 1024 px wide; once to start the worker processes, then again as the reference); then four upscale jobs (a 320×240 photo each,
realesrgan-x4plus ×4), and once the first of them runs, the same classic item again. Printed:
the classic item's wait (queued → started, from the server's own timestamps) and its time to
done, alone and behind the upscales, their ratio, and how many upscales were still unfinished
when it was done (the target: a wait under 5 s). The upscales are cancelled afterwards.

    python bench/bench_lanes.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve
import common

CLASSIC = "resize:width=1024|encode:format=jpeg"
UPSCALE = "upscale:model=realesrgan-x4plus,scale=4"
UPSCALES = 4


def submit(client: Any, path: Path, pipeline: str) -> str:
    with path.open("rb") as fh:
        response = client.post("/v1/jobs", files={"files": (path.name, fh)},
                               data={"pipeline": pipeline})
    response.raise_for_status()
    return str(response.json()["id"])


def wait_item(client: Any, job_id: str, until: set[str], timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()["items"][0]
        if item["status"] in until:
            return item
        time.sleep(0.1)
    raise SystemExit(f"job {job_id} not {until} after {timeout} s")


def timings(item: dict[str, Any]) -> tuple[float, float]:
    t = item["timings"]
    queued = bench_serve._epoch(t["queued_at"])
    return bench_serve._epoch(t["started_at"]) - queued, bench_serve._epoch(t["finished_at"]) - queued


def main() -> None:
    import httpx

    photo = common.photos(1)[0]
    small = Path(common.CACHE) / "lanes-320x240.jpg"
    if not small.exists():
        common._photo_like(320, 240, seed=5).write_to_file(str(small), Q=90)
    env = {"IMGQ_WORKERS": "0", "IMGQ_AI_MEASURE_ON_START": "false"}
    with bench_serve.serve(env) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        wait_item(client, submit(client, photo, CLASSIC), bench_serve.TERMINAL)  # warm-up
        alone = wait_item(client, submit(client, photo, CLASSIC), bench_serve.TERMINAL)
        upscales = [submit(client, small, UPSCALE) for _ in range(UPSCALES)]
        wait_item(client, upscales[0], {"running"})
        behind = wait_item(client, submit(client, photo, CLASSIC), bench_serve.TERMINAL)
        unfinished = sum(client.get(f"/v1/jobs/{j}").json()["status"] in ("queued", "running")
                         for j in upscales)
        for job_id in upscales:
            client.post(f"/v1/jobs/{job_id}/cancel")
        lanes = next((line for line in server.log.read_text().splitlines()
                      if "serving on" in line), "")
    (wait0, done0), (wait1, done1) = timings(alone), timings(behind)
    print(f"# a classic item behind {UPSCALES} upscales ({UPSCALE})")
    print(common.machine_note())
    print(lanes[lanes.find("serving on"):] if lanes else "")
    print(common.table([
        ["alone", f"{wait0:.2f}", f"{done0:.2f}", "-"],
        [f"behind {UPSCALES} upscales", f"{wait1:.2f}", f"{done1:.2f}", str(unfinished)],
    ], ["classic item", "wait s", "to done s", "upscales unfinished"]))
    print(f"behind/alone, time to done: {done1 / max(done0, 1e-6):.2f}×; "
          f"wait behind the upscales {wait1:.2f} s (target < 5 s)")


if __name__ == "__main__":
    main()
