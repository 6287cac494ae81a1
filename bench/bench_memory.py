"""Peak memory of resizing one 100-megapixel JPEG (12000×8400) to 1024 px wide.

Each case runs in a fresh Python process; its peak resident set is the child's own
ru_maxrss (os.wait4 on that child). The "import only" rows are the floor: what the
interpreter and the libraries cost before any image is touched.

- imgq: the worker's `run_pipeline` on `resize:width=1024|encode:format=jpeg`, with one
  libvips thread (as a worker of a 2-worker pool on 2 cores) and with two. A first-step
  resize is fused into decoding (libvips thumbnail: JPEG shrink-on-load).
- imgq, resize not first: `sharpen|resize:width=1024|encode:format=jpeg`: the full-size image
  is decoded and filtered, streamed through libvips rather than held whole.
- Pillow: Image.open → resize((1024, h), LANCZOS) → save (the earlier systems' way: the whole
  image decoded in memory), and Pillow's thumbnail(), which asks the JPEG decoder for a
  reduced size (draft mode) first.

The image is generated once into the cache folder (about 30 s).
The API refuses this image by default (IMGQ_MAX_PIXELS is 16 megapixels); this measures the
engine, as a worker would run it with the limit raised.

    python bench/bench_memory.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TARGET_MB = 200
WIDTH = 1024


def child(case: str, src: Path, out_dir: Path) -> None:
    """Runs in the fresh process."""
    t0 = time.perf_counter()
    info = ""
    if case.startswith("imgq"):
        import pyvips

        threads = 2 if case.endswith("-2threads") else 1
        pyvips.concurrency_set(threads)
        pyvips.cache_set_max(0)
        engine = common.Engine.load()
        import imgq.worker.execute  # noqa: F401 - what a worker process has loaded
        import imgq.worker.runtime  # noqa: F401

        if case == "imgq-import":
            pass
        else:
            pipeline = f"resize:width={WIDTH}|encode:format=jpeg"
            if case == "imgq-unfused":
                pipeline = "sharpen|" + pipeline
            t0 = time.perf_counter()  # the work only, not the imports
            result = common.run_engine(engine.steps(pipeline), src, out_dir / f"{case}.jpg")
            info = f"{result.width}×{result.height}"
    else:
        from PIL import Image

        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if case == "pillow-import":
            pass
        elif case == "pillow-resize":
            with Image.open(src) as im:
                w, h = im.size
                out = im.resize((WIDTH, round(h * WIDTH / w)), Image.LANCZOS)
            out.save(out_dir / f"{case}.jpg", quality=85)
            info = f"{out.width}×{out.height}"
        elif case == "pillow-thumbnail":
            with Image.open(src) as im:
                im.thumbnail((WIDTH, WIDTH), Image.LANCZOS)  # the box lets draft() shrink
                im.save(out_dir / f"{case}.jpg", quality=85)
                info = f"{im.width}×{im.height}"
    print(json.dumps({"seconds": time.perf_counter() - t0, "info": info}))


CASES = [
    ("imgq-import", "imgq: a worker's modules imported, nothing done"),
    ("imgq", "imgq: resize (first step) → jpeg, 1 libvips thread"),
    ("imgq-2threads", "imgq: resize (first step) → jpeg, 2 libvips threads"),
    ("imgq-unfused", "imgq: sharpen → resize → jpeg, 1 thread (full decode, streamed)"),
    ("pillow-import", "Pillow: Python + PIL imported, nothing done"),
    ("pillow-resize", "Pillow: open → resize(LANCZOS) → save (full decode)"),
    ("pillow-thumbnail", "Pillow: open → thumbnail(LANCZOS) → save (JPEG draft mode)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, src, out_dir = args.child
        child(case, Path(src), Path(out_dir))
        return

    t_start = time.perf_counter()
    print(f"# peak RSS, 100-MP JPEG → {WIDTH} px wide — {common.machine_note()}")
    src = common.big_photo()
    print(f"# source {common.BIG_SIZE[0]}×{common.BIG_SIZE[1]} "
          f"({common.BIG_SIZE[0] * common.BIG_SIZE[1] / 1e6:.1f} MP, "
          f"{src.stat().st_size / 1e6:.1f} MB JPEG; decoded RGB would be "
          f"{common.BIG_SIZE[0] * common.BIG_SIZE[1] * 3 / 2**20:.0f} MiB)")
    out_dir = common.CACHE / "out-memory"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, peaks = [], {}
    for case, label in CASES:
        run = common.run_child([sys.executable, __file__, "--child", case, str(src),
                                str(out_dir)])
        if run.returncode != 0:
            raise SystemExit(f"{case} failed:\n{run.stderr[-3000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        peaks[case] = run.max_rss_mb
        rows.append([label, f"{run.max_rss_mb:.0f}", f"{result['seconds']:.2f}",
                     result["info"] or "-"])
        print(f"  {case}: {run.max_rss_mb:.0f} MB peak, {result['seconds']:.2f} s", flush=True)
    print()
    print(common.table(rows, ["case", "peak RSS MB", "seconds", "output"]))
    imgq = peaks["imgq"]
    print(f"\nimgq worker resize: {imgq:.0f} MB peak (target ≤ {TARGET_MB} MB: "
          f"{'met' if imgq <= TARGET_MB else 'NOT met'}); "
          f"Pillow full decode {peaks['pillow-resize']:.0f} MB "
          f"({peaks['pillow-resize'] / imgq:.1f}× imgq); "
          f"Pillow thumbnail {peaks['pillow-thumbnail']:.0f} MB")
    print(f"(MB = MiB; ru_maxrss of each fresh child process; total "
          f"{time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
