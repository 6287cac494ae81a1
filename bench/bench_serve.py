"""imgq serve end to end against the engine called directly, and small-image throughput.

(a) Overhead: the 50 2-MP JPEGs through `imgq serve` (a subprocess on a fresh IMGQ_DATA_DIR,
    IMGQ_WORKERS=2, default settings otherwise, logs at the default INFO level to a file),
    submitted in 5 jobs of 10 over HTTP, timed from the first byte sent to the last item done,
    against the same pipeline run by the engine directly (`run_pipeline`, no database) in a
    `multiprocessing` pool of 2 processes with one libvips thread each — the same concurrency
    and libvips tuning as the embedded worker pool on this 2-core machine.
    Overhead = serve time / direct time − 1 (target ≤ 10 %).

(b) Throughput: 200 small PNGs (64×64) with one operation (`grayscale`), submit → all done,
    items per second (target ≥ 300/s), as 20 jobs of 10 files and as one job of 200
    (the server runs with IMGQ_MAX_FILES=200 so that the big job is accepted; the 10-file
    jobs are unaffected by it).

"Done" is read from the server's own timestamps (the last item's finished_at) so polling
granularity does not count; the time at which the polling client saw everything finished is
printed next to it.

    python bench/bench_serve.py [--repeat 3] [--profile]

--profile runs (b) once more under py-spy (needs `py-spy` on PATH or IMGQ_BENCH_PYSPY;
`pip install py-spy` in any virtualenv) and prints the top functions of the API process and
of one worker.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PIPELINES = [
    "resize:width=1024|encode:format=jpeg",
    "blur:radius=2|encode:format=jpeg",
    "resize:width=1024|encode:format=webp",
]
SMALL_PIPELINE = "grayscale"
WORKERS = 2
JOB_SIZE = 10


# -- the server --------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log: Path

    def pids(self) -> list[int]:
        """The API process and its worker processes (children)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        kids = [int(p) for p in children.read_text().split()] if children.exists() else []
        return [self.proc.pid, *kids]


@contextlib.contextmanager
def serve(extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    data_dir = Path(tempfile.mkdtemp(prefix="imgq-bench-serve-"))
    port = _free_port()
    env = {**os.environ, "IMGQ_DATA_DIR": str(data_dir), "IMGQ_WORKERS": str(WORKERS),
           "IMGQ_PORT": str(port), "IMGQ_HOST": "127.0.0.1",
           # no AI steps here: the AI lane's one-off model measuring would run during (a)
           "IMGQ_AI_MEASURE_ON_START": "false", **(extra_env or {})}
    for key in ("IMGQ_DATABASE_URL", "IMGQ_STORAGE_URL", "IMGQ_BROKER_URL"):
        env.pop(key, None)  # embedded defaults only
    log = data_dir / "serve.log"
    imgq = Path(sys.executable).with_name("imgq")
    cmd = [str(imgq), "serve"] if imgq.exists() else [
        sys.executable, "-c", "from imgq.cli import app; app()", "serve"]
    with log.open("wb") as log_fh:
        proc = subprocess.Popen(cmd, env=env, stdout=log_fh, stderr=subprocess.STDOUT)
    server = Server(proc, f"http://127.0.0.1:{port}", data_dir, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_ready(server: Server, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"imgq serve exited:\n{server.log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"imgq serve not ready after {timeout} s:\n{server.log.read_text()[-3000:]}")


# -- the client ---------------------------------------------------------------------------

TERMINAL = {"succeeded", "failed", "cancelled", "expired"}


def _epoch(stamp: str) -> float:
    dt = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


@dataclass
class BatchResult:
    items: int
    submit_s: float  # first byte sent → last job accepted
    done_s: float  # first byte sent → last item's finished_at (server clock, same machine)
    seen_s: float  # first byte sent → the polling client saw every item finished
    first_start_s: float  # first byte sent → first item's started_at
    failed: int
    processing_s: float  # sum of items' processing seconds (worker-measured)


def run_batch(client: Any, files: list[Path], pipeline: str, per_job: int,
              poll: float = 0.05) -> BatchResult:
    """Submit `files` in jobs of `per_job`, poll until every item is finished."""
    chunks = [files[i : i + per_job] for i in range(0, len(files), per_job)]
    t0 = time.time()
    job_ids = []
    for chunk in chunks:
        handles = [p.open("rb") for p in chunk]
        try:
            ctype = "image/png" if chunk[0].suffix == ".png" else "image/jpeg"
            resp = client.post("/v1/jobs", data={"pipeline": pipeline},
                               files=[("files", (p.name, h, ctype)) for p, h in zip(chunk, handles)])
        finally:
            for h in handles:
                h.close()
        if resp.status_code != 201:
            raise SystemExit(f"submit refused: {resp.status_code} {resp.text[:500]}")
        job_ids.append(resp.json()["id"])
    submit_s = time.time() - t0
    # Poll the last job alone (items run about in order), then every job still pending: a
    # light client, so that the benchmark's own polling costs the server little.
    pending, finished = list(job_ids), {}
    while pending:
        ask = pending[-1:] if len(pending) > 1 and pending[-1] not in finished else pending
        resp = client.get("/v1/jobs", params={"ids": ",".join(ask)})
        resp.raise_for_status()
        newly = 0
        for job in resp.json()["jobs"]:
            if all(item["status"] in TERMINAL for item in job["items"]):
                finished[job["id"]] = job
                newly += 1
        if ask == pending or not newly:
            pending = [j for j in pending if j not in finished]
        if pending and not newly:
            time.sleep(poll)
    seen_s = time.time() - t0
    items = [item for job in finished.values() for item in job["items"]]
    done = max(_epoch(i["timings"]["finished_at"]) for i in items if i["timings"]["finished_at"])
    starts = [_epoch(i["timings"]["started_at"]) for i in items if i["timings"]["started_at"]]
    return BatchResult(
        items=len(items), submit_s=submit_s, done_s=done - t0, seen_s=seen_s,
        first_start_s=min(starts) - t0 if starts else float("nan"),
        failed=sum(i["status"] != "succeeded" for i in items),
        processing_s=sum(i["timings"]["processing_seconds"] or 0 for i in items),
    )


# -- the engine directly, same concurrency ---------------------------------------------------

_steps: Any = None
_out: Path | None = None


def _pool_init(pipeline: str, out_dir: str) -> None:
    global _steps, _out
    common.single_thread_libvips()  # as the embedded pool: cores // workers = 1 thread each
    _steps = common.Engine.load().steps(pipeline)
    _out = Path(out_dir)


def _pool_run(args: tuple[int, str]) -> None:
    index, src = args
    assert _out is not None
    common.run_engine(_steps, Path(src), _out / f"{index:03d}.out")


def direct_batch(pool: Any, files: list[Path]) -> float:
    t0 = time.perf_counter()
    for _ in pool.imap_unordered(_pool_run, list(enumerate(map(str, files))), chunksize=1):
        pass
    return time.perf_counter() - t0


# -- the benchmarks ---------------------------------------------------------------------------

def overhead(repeat: int) -> list[list[str]]:
    import httpx

    photos = common.photos()
    rows = []
    ctx = multiprocessing.get_context("spawn")
    with serve() as server, httpx.Client(base_url=server.url, timeout=120) as client:
        run_batch(client, photos[:4], PIPELINES[0], JOB_SIZE)  # warm-up: start the workers
        for pipeline in PIPELINES:
            out_dir = tempfile.mkdtemp(prefix="imgq-bench-direct-")
            with ctx.Pool(WORKERS, initializer=_pool_init, initargs=(pipeline, out_dir)) as pool:
                direct_batch(pool, photos[:4])  # warm-up
                direct, served = [], []
                for _ in range(repeat):  # alternate, so drifting load hits both alike
                    direct.append(direct_batch(pool, photos))
                    served.append(run_batch(client, photos, pipeline, JOB_SIZE))
            shutil.rmtree(out_dir, ignore_errors=True)
            failed = sum(b.failed for b in served)
            if failed:
                raise SystemExit(f"{pipeline}: {failed} items failed; see {server.log}")
            best_direct = min(direct)
            best = min(served, key=lambda b: b.done_s)
            over = best.done_s / best_direct - 1
            rows.append([
                pipeline, f"{best_direct:.2f}", f"{best.done_s:.2f}", f"{best.seen_s:.2f}",
                f"{best.submit_s:.2f}", f"{over * 100:+.1f}%",
                f"{statistics.median(b.done_s for b in served) / statistics.median(direct) - 1:+.1%}",
            ])
            print(f"  {pipeline}: direct {', '.join(f'{d:.2f}' for d in direct)} s; serve "
                  f"{', '.join(f'{b.done_s:.2f}' for b in served)} s → {over * 100:+.1f}%",
                  flush=True)
    return rows


def throughput(repeat: int) -> list[list[str]]:
    import httpx

    smalls = common.small_pngs(200)
    rows = []
    with serve({"IMGQ_MAX_FILES": "200"}) as server, \
            httpx.Client(base_url=server.url, timeout=120) as client:
        run_batch(client, smalls[:10], SMALL_PIPELINE, 10)  # warm-up
        for per_job, label in ((10, "20 jobs × 10"), (200, "1 job × 200")):
            results = [run_batch(client, smalls, SMALL_PIPELINE, per_job) for _ in range(repeat)]
            if any(r.failed for r in results):
                raise SystemExit(f"small batch: items failed; see {server.log}")
            best = min(results, key=lambda r: r.done_s)
            rate = best.items / best.done_s
            rows.append([
                label, str(best.items), f"{best.submit_s:.2f}", f"{best.done_s:.2f}",
                f"{rate:.0f}/s", f"{best.items / best.seen_s:.0f}/s",
                f"{best.processing_s / best.items * 1000:.1f}",
            ])
            print(f"  {label}: " + ", ".join(f"{r.items / r.done_s:.0f}/s" for r in results),
                  flush=True)
    return rows


def profile() -> None:
    """Run (b) (20 jobs × 10) under py-spy: where the API process and a worker spend time."""
    import httpx

    pyspy = os.environ.get("IMGQ_BENCH_PYSPY") or shutil.which("py-spy")
    if not pyspy:
        print("py-spy not found: pip install py-spy (any virtualenv) and put it on PATH, "
              "or set IMGQ_BENCH_PYSPY")
        return
    smalls = common.small_pngs(200)
    out_dir = common.CACHE / "profile"
    out_dir.mkdir(parents=True, exist_ok=True)
    with serve({"IMGQ_MAX_FILES": "200"}) as server, \
            httpx.Client(base_url=server.url, timeout=120) as client:
        run_batch(client, smalls[:10], SMALL_PIPELINE, 10)
        pids = server.pids()
        spies = []
        roles = ["api"] + [_role(pid, i) for i, pid in enumerate(pids[1:])]
        for role, pid in zip(roles, pids):
            if role.startswith("helper"):
                continue
            raw = out_dir / f"{role}.txt"
            spies.append((role, raw, subprocess.Popen(
                [pyspy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
                 "--output", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        time.sleep(1.0)
        results = [run_batch(client, smalls, SMALL_PIPELINE, 10) for _ in range(3)]
        for _, _, spy in spies:
            spy.send_signal(signal.SIGINT)
        for _, _, spy in spies:
            spy.wait(timeout=60)
    print(f"  under py-spy: {', '.join(f'{r.items / r.done_s:.0f}/s' for r in results)}")
    for role, raw, _ in spies:
        if raw.exists():
            print(f"\n  [{role}] top self time (py-spy raw: {raw})")
            for line in _top(raw, 14):
                print("   ", line)
            print(f"  [{role}] top inclusive (imgq / app frames)")
            for line in _top(raw, 14, inclusive=True):
                print("   ", line)


def profile_worker(count: int = 200) -> None:
    """The worker's per-item path in-process: jobs submitted through the app (no workers),
    then `execute(item)` in a loop, timed per stage with cProfile. No server, no pool, no
    thread hand-offs: what one item costs a worker in itself."""
    import cProfile
    import io
    import pstats

    from fastapi.testclient import TestClient

    from imgq.api.app import create_app
    from imgq.compose import open_runtime
    from imgq.config import load_settings
    from imgq.worker.execute import execute

    smalls = common.small_pngs(count)
    data_dir = Path(tempfile.mkdtemp(prefix="imgq-bench-prof-"))
    settings = load_settings(data_dir=data_dir, max_files=count, workers=1)
    common.single_thread_libvips()
    app = create_app(open_runtime(settings, run_migrations=True), None, sweeper=False)
    rt = app.state.runtime
    with TestClient(app, base_url="http://127.0.0.1") as client:  # a loopback server
        handles = [p.open("rb") for p in smalls]
        resp = client.post("/v1/jobs", data={"pipeline": SMALL_PIPELINE},
                           files=[("files", (p.name, h, "image/png"))
                                  for p, h in zip(smalls, handles)])
        for h in handles:
            h.close()
        resp.raise_for_status()
        ids = [i["id"] for i in resp.json()["items"]]
    warm, ids = ids[:10], ids[10:]
    for item_id in warm:
        execute(rt, item_id)
    prof = cProfile.Profile()
    t0, c0 = time.perf_counter(), time.process_time()
    prof.enable()
    outcomes = [execute(rt, item_id).status for item_id in ids]
    prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rt.close()
    shutil.rmtree(data_dir, ignore_errors=True)
    n = len(ids)
    print(f"  {n} items in one process: {wall / n * 1000:.2f} ms/item wall, "
          f"{cpu / n * 1000:.2f} ms/item CPU → at most {n / wall:.0f} items/s per worker "
          f"process ({set(outcomes)})")
    stats = pstats.Stats(prof)
    wanted = [
        ("execute (whole item)", "execute.py", "execute"),
        ("repo.claim", "repository.py", "claim"),
        ("registry.bind + parse_pipeline", "base.py", "bind"),
        ("ItemContext.__enter__ (heartbeat thread start)", "context.py", "__enter__"),
        ("ItemContext.__exit__ (heartbeat thread join)", "context.py", "__exit__"),
        ("ItemContext._beat (heartbeat writes)", "context.py", "_beat"),
        ("run_pipeline (decode, op, encode)", "run.py", "run_pipeline"),
        ("  decode", "image.py", "decode"),
        ("  encode_to_file", "image.py", "encode_to_file"),
        ("  ItemContext.monitor (progress signal)", "context.py", "monitor"),
        ("_store (put_file + finish_succeeded)", "execute.py", "_store"),
        ("  blobs.put_file", "local.py", "put_file"),
        ("  repo.finish_succeeded", "repository.py", "finish_succeeded"),
        ("TemporaryDirectory (make)", "tempfile.py", "mkdtemp"),
        ("TemporaryDirectory (cleanup rmtree)", "tempfile.py", "_rmtree"),
        ("logging", "__init__.py", "_log"),
    ]
    rows = []
    for label, file_end, func in wanted:
        total = sum(v[3] for (f, _, fn), v in stats.stats.items()  # type: ignore[attr-defined]
                    if f.endswith(file_end) and fn == func)
        rows.append([label, f"{total / n * 1000:.2f}", f"{total / wall * 100:.0f}%"])
    print(common.table(rows, ["stage (cumulative wall time, per item)", "ms", "share"]))
    if os.environ.get("IMGQ_BENCH_PSTATS"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
        print(buf.getvalue())


def _role(pid: int, index: int) -> str:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return f"worker{index}" if "spawn_main" in cmdline else f"helper{index}"


def _top(raw: Path, n: int, inclusive: bool = False) -> list[str]:
    """Summarise py-spy's collapsed stacks: self (leaf) or inclusive time per function."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, num = line.rpartition(" ")
        if not num.isdigit():
            continue
        total += int(num)
        frames = stack.split(";")
        if inclusive:
            seen = set()
            for f in frames:
                name = f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] \
                    if " (" in f else f
                if ("imgq" in f or "sqlalchemy" in f.split(":")[0].lower()) and name not in seen:
                    seen.add(name)
                    counts[name] = counts.get(name, 0) + int(num)
        else:
            leaf = frames[-1]
            key = leaf.split(":")[0] if ":" in leaf else leaf
            counts[key] = counts.get(key, 0) + int(num)
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return [f"{c / max(1, total) * 100:5.1f}%  {k[:120]}" for k, c in ranked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="batches per case (best counts)")
    parser.add_argument("--only", choices=["overhead", "throughput"], help="run one part only")
    parser.add_argument("--profile", action="store_true", help="also profile (b) with py-spy")
    args = parser.parse_args()
    t_start = time.perf_counter()
    print(f"# imgq serve benchmarks — {common.machine_note()}")
    common.photos()
    common.small_pngs(200)
    if args.only in (None, "overhead"):
        print(f"\n(a) 50 JPEGs {common.PHOTO_SIZE[0]}×{common.PHOTO_SIZE[1]}: imgq serve "
              f"(IMGQ_WORKERS={WORKERS}, jobs of {JOB_SIZE}) vs run_pipeline in a pool of "
              f"{WORKERS} processes; best of {args.repeat}")
        rows = overhead(args.repeat)
        print()
        print(common.table(rows, ["pipeline", "direct s", "serve s (done)", "serve s (seen)",
                                  "upload s", "overhead", "overhead (medians)"]))
        print("target: overhead ≤ 10%")
    if args.only in (None, "throughput"):
        print(f"\n(b) 200 PNGs {common.SMALL_SIZE[0]}×{common.SMALL_SIZE[1]}, pipeline "
              f"{SMALL_PIPELINE!r}, IMGQ_WORKERS={WORKERS}, IMGQ_MAX_FILES=200; best of "
              f"{args.repeat}")
        rows = throughput(args.repeat)
        print()
        print(common.table(rows, ["submitted as", "items", "upload s", "submit→done s",
                                  "items/s", "items/s (seen)", "worker ms/item"]))
        print("target: ≥ 300 items/s submit→done")
    if args.profile:
        print("\n(b) the worker's per-item cost, in one process (cProfile)")
        profile_worker()
        print("\n(b) under py-spy")
        profile()
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
