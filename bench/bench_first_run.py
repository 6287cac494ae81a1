"""From `git clone` to the first downloaded ×4 upscale of a 640×480 photo, as a new user does it.

Clones the repository (default: the one this script is in) into a temporary folder, runs the
README's first command there (`scripts/serve.sh`, which makes a fresh .venv and installs imgq
with the AI runtime, with whatever pip cache and package index this machine has), waits until
the server answers, submits a 640×480 JPEG with the page's "Upscale 4×, Photos · sharp" preset
(`upscale:scale=4`, Real-ESRGAN ×4plus), waits for it and downloads it. Prints each phase's
seconds, the total (the target: 3 minutes), the size of .venv, and checks the download: its
name (photo480@4x.jpg) and its size (2560×1920).

    python bench/bench_first_run.py [--repo PATH] [--keep]
    python bench/bench_first_run.py --against http://127.0.0.1:8000   # a dry check

--against skips the clone and the install and runs the rest (submit, wait, download, check)
against a server already running: a check of this script's path that needs no quiet machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def du(path: Path) -> str:
    return subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True,
                          check=True).stdout.split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(ROOT), help="what to clone")
    parser.add_argument("--keep", action="store_true", help="keep the clone afterwards")
    parser.add_argument("--against", metavar="URL",
                        help="no clone or install: upscale on this running server (a dry check)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgq-first-run-"))
    clone, port = work / "imgq", free_port()
    photo = work / "photo480.jpg"
    common._photo_like(640, 480, seed=11).write_to_file(str(photo), Q=90)
    if args.against:
        t0 = time.monotonic()
        upscaled = first_upscale(args.against, photo)
        print(f"# dry check against {args.against}: {upscaled.describe()}, "
              f"{time.monotonic() - t0:.0f} s")
        shutil.rmtree(work, ignore_errors=True)
        return
    import httpx

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IMGQ_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update({"IMGQ_PORT": str(port), "IMGQ_DATA_DIR": str(work / "data")})
    phases: list[tuple[str, float]] = []
    t0 = time.monotonic()
    subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)
    phases.append(("git clone", time.monotonic() - t0))
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen([str(clone / "scripts" / "serve.sh")], cwd=clone, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        installed = None
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"serve.sh exited:\n{(work / 'serve.log').read_text()[-3000:]}")
            text = (work / "serve.log").read_text(errors="replace")
            if installed is None and "imgq setup: done" in text:
                installed = time.monotonic()
                phases.append(("install (scripts/setup.sh)", installed - t0 - phases[0][1]))
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        up = time.monotonic()
        phases.append(("server up", up - (installed or t0)))
        upscaled = first_upscale(url, photo)
        done = time.monotonic()
        phases.append(("upscale 640×480 ×4 and download", done - up))
        venv = du(clone / ".venv")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("# git clone → first downloaded ×4 upscale of a 640×480 photo (scripts/serve.sh)")
    print(common.machine_note())
    print(common.table([[label, f"{seconds:.0f}"] for label, seconds in phases],
                       ["phase", "seconds"]))
    total = done - t0
    print(f"total {total:.0f} s ({total / 180:.2f}× the 3-minute target); .venv {venv}; "
          f"{upscaled.describe()}")


@dataclass
class Upscaled:
    estimated: float | None
    processing: float
    width: int
    height: int
    disposition: str

    def describe(self) -> str:
        return (f"upscale estimated {self.estimated} s, processing {self.processing:.0f} s; "
                f"download {self.width}×{self.height}, {self.disposition}")


def first_upscale(url: str, photo: Path) -> Upscaled:
    """The page's "Upscale 4×, Photos · sharp" on the photo: submit, wait, download, check."""
    import httpx
    import pyvips

    with httpx.Client(base_url=url, timeout=60) as client, photo.open("rb") as fh:
        job = client.post("/v1/jobs", files={"files": (photo.name, fh, "image/jpeg")},
                          data={"pipeline": "upscale:scale=4"}).raise_for_status().json()
        estimate = job["items"][0]["estimated_seconds"]
        while True:
            item = client.get(f"/v1/jobs/{job['id']}").raise_for_status().json()["items"][0]
            if item["status"] not in ("queued", "running"):
                break
            time.sleep(0.5)
        if item["status"] != "succeeded":
            raise SystemExit(f"the upscale {item['status']}: {item['error']}")
        result = client.get(item["result_url"]).raise_for_status()
    image = pyvips.Image.new_from_buffer(result.content, "")
    name = result.headers["content-disposition"]
    if (image.width, image.height) != (2560, 1920) or "photo480@4x.jpg" not in name:
        raise SystemExit(f"the download is {image.width}×{image.height}, {name}: expected "
                         "2560×1920, photo480@4x.jpg")
    return Upscaled(estimate, item["timings"]["processing_seconds"] or 0.0, image.width,
                    image.height, name)


if __name__ == "__main__":
    main()
