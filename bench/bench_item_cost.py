"""What one small item costs the embedded worker, in instructions (callgrind), against a raw
pyvips loop doing the same image work in the same run.

Each side runs in its own fresh process under `valgrind --tool=callgrind`, which counts
the instructions of every thread (libvips' worker threads, which decode, resample and compress
the pixels, included) during one call of `functools.reduce` that runs the measured items (the
process's start-up, imports and the first WARM_UP items, which prepare the statements and fill
the caches, are not counted): the count divided by the items is the cost of one item.
Callgrind counts instructions, not seconds, so the figures repeat whatever else the machine is
doing.

Sides:
- raw: `pyvips.Image.thumbnail(path, 100, height=100, crop="centre")` then `jpegsave(Q=85)`,
  one libvips thread and no operation cache (bench_compare's raw loop); with `--photos`,
  bench_compare's 2-MP workload instead: `new_from_file(access="sequential")`,
  `gaussblur(2, precision="integer")`, `jpegsave(Q=85)` on its 1728×1152 photos, and imgq's
  pipeline `blur:radius=2|encode:format=jpeg,quality=85`;
- drain: the embedded worker's item loop (`imgq.worker.execute.drain`) on a fresh SQLite
  database and local blob store holding the items (jobs of 10, the 400×300 JPEGs of
  bench_compare), pipeline `resize:width=100,height=100,fit=cover|encode:format=jpeg,
  quality=85`, logging as a worker process sets it up (INFO, to a file here);
- db: the worker's database work alone: claim, then for each item its end (succeeded, with a
  result key) written with the next claim, no image work;
- log: the INFO line an item's end writes (`LogLines.ended`);
- restore: the pipeline restored from the job's row and the item's time limit (`time_limit`).

Printed per item: the instructions of each library (in brackets: libpython is the Python
code's own work) and of the C functions that spend most themselves (`--functions N`). `--code DIR` (repeated) runs the imgq sides
with the imgq package of each checkout named, one after the other for each side (an A/B of
two versions; raw pyvips is the same for all).

    python bench/bench_item_cost.py [--items 30] [--sides raw,drain,db] [--photos]
                                    [--code /path/to/old/checkout --code .]
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

PIPELINE = "resize:width=100,height=100,fit=cover|encode:format=jpeg,quality=85"
PHOTO_PIPELINE = "blur:radius=2|encode:format=jpeg,quality=85"
#: set by --photos for the measured processes: bench_compare's 2-MP workload
PHOTOS = "IMGQ_BENCH_ITEM_PHOTOS"
JOB_SIZE = 10
WARM_UP = 3  # items run before the count starts
ROOT = Path(__file__).resolve().parents[1]


# -- inside the measured process ------------------------------------------------------------
def _settings(folder: Path) -> Any:
    from imgq.config import load_settings

    # Under callgrind a small item takes about a second instead of milliseconds: with the
    # default periods its heartbeat thread would look at cancel and renew the lease during
    # every item, which a small item never does at full speed.
    return load_settings(data_dir=folder, ai_measure_on_start="false", lease_seconds=3600,
                         cancel_poll_seconds=3600)


def prepare(folder: Path, count: int) -> None:
    """A fresh database and blob store in `folder` holding `count` queued small JPEGs."""
    import pyvips

    from imgq.domain.models import Item, Job
    from imgq.domain.pipeline import parse_pipeline
    from imgq.domain.status import Status
    from imgq.store.repository import utcnow
    from imgq.worker.runtime import Runtime

    rt = Runtime.from_settings(_settings(folder), run_migrations=True)
    steps = rt.registry.bind(parse_pipeline(PHOTO_PIPELINE if _photos() else PIPELINE))
    files = _files()
    for first in range(0, count, JOB_SIZE):
        job_id, now, job_items = str(uuid.uuid4()), utcnow(), []
        for idx in range(min(JOB_SIZE, count - first)):
            path = files[(first + idx) % len(files)]
            header = pyvips.Image.new_from_file(str(path))
            key = f"{job_id}/inputs/{idx}.jpg"
            rt.blobs.put_file(key, _copy(path, folder))
            job_items.append(Item(
                id=str(uuid.uuid4()), job_id=job_id, idx=idx, status=Status.queued,
                input_name=path.name, input_key=key, queued_at=now,
                input_meta={"format": "jpeg", "width": header.width, "height": header.height,
                            "bytes": path.stat().st_size, "frames": 1,
                            "estimated_seconds": None}))
        rt.repo.create_job(Job(id=job_id, created_at=now, expires_at=now, resource="cpu",
                               pipeline=[s.to_dict() for s in steps],
                               item_count=len(job_items), items=job_items))
    rt.close()


def _photos() -> bool:
    return bool(os.environ.get(PHOTOS))


def _files() -> list[Path]:
    from bench_compare import small_jpegs
    from common import photos

    return photos() if _photos() else small_jpegs()


def _copy(path: Path, folder: Path) -> Path:
    staged = folder / f"staged-{uuid.uuid4()}"
    shutil.copyfile(path, staged)
    return staged


def measured(count: int, one: Callable[[], object]) -> None:
    """`one()` WARM_UP times, then `count` times inside the call that callgrind counts."""
    for _ in range(WARM_UP):
        one()
    functools.reduce(lambda _, __: one(), range(count), None)


def run_side(side: str, folder: Path, count: int) -> None:
    import logging

    from imgq.logs import setup_logging
    from imgq.worker.runtime import tune_libvips

    tune_libvips(1)
    if side == "raw":
        import pyvips

        files = iter(_files() * 2)

        def raw() -> None:
            if _photos():
                image = pyvips.Image.new_from_file(str(next(files)), access="sequential")
                image = image.gaussblur(2, precision="integer")
            else:
                image = pyvips.Image.thumbnail(str(next(files)), 100, height=100, crop="centre")
            image.jpegsave(str(folder / "out.jpg"), Q=85, keep="none")
        measured(count, raw)
        return
    from imgq.worker import context
    from imgq.worker.runtime import Runtime

    setup_logging("INFO")
    logging.getLogger().handlers[0].setStream(open(folder / "worker.log", "a"))  # type: ignore[attr-defined]
    rt = Runtime.from_settings(_settings(folder), item_worker=True)
    context.PROGRESS_EVERY = 3600  # as in `_settings`: no progress write a fast item never makes
    # Nor the heartbeat thread's look at the running item every 0.2 s: at full speed one small
    # item in about forty sees one, under callgrind every item sees several, and how many
    # depends on how busy the machine is.
    context.time = _NoHeartbeat()  # type: ignore[attr-defined]
    if side == "drain":
        from imgq.worker.execute import drain

        # the warm-up, as `measured` does; no time budget: under callgrind a 2-MP item takes
        # seconds, and a drain stops taking items after DRAIN_SECONDS
        drain(rt, "cpu", budget=1e9, limit=WARM_UP)
        ran = functools.reduce(lambda _, __: drain(rt, "cpu", budget=1e9), range(1), None)
        assert ran is not None and ran.items == count, f"measured {ran} for {count} items"
    elif side == "db":
        from imgq.store.repository import succeeded

        claim = rt.repo.claim_next("cpu", 60)

        def db() -> None:
            nonlocal claim
            assert claim is not None
            finish = succeeded(claim, f"{claim.job.id}/results/{claim.item.idx}.jpg",
                               "out.jpg", {"format": "jpeg", "width": 100, "height": 100,
                                           "frames": 1, "bytes": 3000}, 0.004)
            _, claim = rt.repo.finish_and_claim(finish, "cpu", 60)
        measured(count, db)
    else:
        _component(side, rt, count)
    left = rt.repo.claim_next("cpu", 60)
    assert left is None or side in ("db", "log", "restore"), "items left undone"


class _NoHeartbeat:
    """`time` for `imgq.worker.context`, whose heartbeat thread then sleeps through the run."""

    monotonic = staticmethod(time.monotonic)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(3600)


def _component(side: str, rt: Any, count: int) -> None:
    from imgq.worker.execute import time_limit
    from imgq.worker.hooks import default_hooks

    claim = rt.repo.claim_next("cpu", 60)
    assert claim is not None
    hooks = default_hooks()
    if side == "log":
        measured(count, lambda: hooks.ended(claim, "succeeded", "in 0.004 s, 3000 bytes"))
    else:
        measured(count, lambda: time_limit(rt, claim, rt.registry.restore(claim.job.pipeline)))


# -- the driver --------------------------------------------------------------------------------
def instructions(side: str, count: int, work: Path, code: Path) -> tuple[int, dict[str, int]]:
    folder = work / f"{side}-{count}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{ROOT / 'bench'}"}
    if side != "raw":
        subprocess.run([sys.executable, __file__, "--prepare", str(folder),
                        str(count + WARM_UP)], env=env, check=True)
    out = folder / "callgrind.out"
    # A dump on entering and on leaving the measured call: each dump holds every thread's
    # instructions since the one before, libvips' worker threads (which decode, resample and
    # compress the pixels) included. A toggle of collection on that call would count only the
    # thread that makes it.
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    "--dump-before=functools_reduce", "--dump-after=functools_reduce",
                    sys.executable, __file__, "--side", side, str(folder), str(count)],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    total, functions = 0, dict[str, int]()
    for part in _measured_parts(out):
        annotated = subprocess.run(["callgrind_annotate", "--threshold=100", str(part)],
                                   capture_output=True, text=True, check=True).stdout
        total += int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", annotated)
                     .group(1).replace(",", ""))  # type: ignore[union-attr]
        rows = []
        for line in annotated.splitlines():  # "N (p%)  file:function [object]"
            m = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+\S*:(\S+)(?: \[(.*)\])?", line)
            if m:
                rows.append((int(m.group(1).replace(",", "")), m.group(2), m.group(3)))
        # The frames active across the whole part (a thread's start, the interpreter's main
        # loop) are listed with all the instructions below them: a chain of functions with
        # the same figure. They are left out of the breakdown; the others are their own.
        chains = Counter(n for n, _, _ in rows)
        for n, function, library in rows:
            if chains[n] >= 3:
                continue
            for name in (function, f"[{Path(library or '?').name}]"):
                functions[name] = functions.get(name, 0) + n
    return total, functions


def _measured_parts(out: Path) -> list[Path]:
    """The dumps that cover the last outermost `functools.reduce` call (the measured one; a
    call of it nested inside makes more dumps, all counted)."""
    parts: list[Path] = []
    region: list[Path] = []
    depth = start = 0
    number = 1
    while (part := out.with_name(f"{out.name}.{number}")).exists():
        parts.append(part)
        number += 1
    for index, part in enumerate(parts):
        with part.open() as fh:
            trigger = next((ln for ln in fh if ln.startswith("desc: Trigger:")), "")
        if "--dump-before" in trigger:
            depth += 1
            if depth == 1:
                start = index + 1
        elif "--dump-after" in trigger:
            depth -= 1
            if depth == 0:
                region = parts[start:index + 1]
    if not region:
        raise RuntimeError(f"no measured call found in {out}.*")
    return region


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--code", action="append", type=Path,
                        help="a checkout whose imgq package runs (default: this one)")
    parser.add_argument("--sides", default="raw,drain,db,log,restore")
    parser.add_argument("--functions", type=int, default=12)
    parser.add_argument("--photos", action="store_true",
                        help="bench_compare's 2-MP workload (blur → JPEG) instead of small items")
    parser.add_argument("--prepare", nargs=2, metavar=("FOLDER", "COUNT"))
    parser.add_argument("--side", nargs=3, metavar=("SIDE", "FOLDER", "COUNT"))
    args = parser.parse_args()
    if args.photos:
        os.environ[PHOTOS] = "1"
    if args.prepare:
        prepare(Path(args.prepare[0]), int(args.prepare[1]))
        return
    if args.side:
        run_side(args.side[0], Path(args.side[1]), int(args.side[2]))
        return
    codes = [c.resolve() for c in args.code or [ROOT]]
    work = Path(tempfile.mkdtemp(prefix="imgq-item-cost-"))
    per_item: dict[str, float] = {}
    try:
        for side in args.sides.split(","):
            for code in codes[:1] if side == "raw" else codes:
                name = side if side == "raw" or len(codes) == 1 else f"{side} ({code})"
                total, functions = instructions(side, args.items, work, code)
                per_item[name] = total / args.items
                print(f"{name}: {per_item[name] / 1e6:.3f} M instructions per item", flush=True)
                libraries = [(n, f) for f, n in functions.items() if f.startswith("[")]
                top = sorted(((n, f) for f, n in functions.items() if not f.startswith("[")),
                             reverse=True)
                for n, function in sorted(libraries, reverse=True)[:6] + top[:args.functions]:
                    print(f"    {n / args.items / 1e6:8.3f} M  {function}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if "raw" in per_item:
        for name, value in per_item.items():
            if name != "raw":
                print(f"{name}: {value / per_item['raw']:.3f}× raw pyvips's instructions")


if __name__ == "__main__":
    main()
