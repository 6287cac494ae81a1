"""imgq's engine against Pillow, one process each, one thread each, on 50 2-MP JPEGs.

For each of the earlier systems' operations (blur, sharpen, grayscale, edges, smooth, resize
to 1024 px), followed by JPEG encoding at quality 85:

- imgq: the real operations from the registry, bound from a pipeline such as
  `blur:radius=2|encode:format=jpeg,quality=85`, run by the worker's `run_pipeline` (decode,
  the steps, `encode_to_file`) with a context that does nothing; libvips limited to one
  thread (`pyvips.concurrency_set(1)` through `imgq.worker.runtime.tune_libvips(1)`, which also
  turns the operation cache off, as in a worker).
- Pillow: Image.open, .filter(GaussianBlur(2) / SHARPEN / FIND_EDGES / SMOOTH), convert('L'),
  resize(..., LANCZOS), save(JPEG, quality=85); Pillow's filters are single-threaded.

Each side runs in its own fresh process (they alternate, never at the same time), warms up on
two images, then times the whole batch `--repeat` times; the best run counts. Process CPU
time is printed next to wall time: CPU ≈ wall shows the run used one thread.

WebP and AVIF encoding (decode → encode, no operation) use the same codec libraries on both
sides (libwebp; libaom through libheif vs libavif), so they are reported apart, not in the
geometric mean.

    python bench/bench_engine.py [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RESIZE_WIDTH = 1024

#: name -> (imgq pipeline, output extension)
CASES: dict[str, tuple[str, str]] = {
    "blur": ("blur:radius=2|encode:format=jpeg,quality=85", "jpg"),
    "sharpen": ("sharpen|encode:format=jpeg,quality=85", "jpg"),
    "grayscale": ("grayscale|encode:format=jpeg,quality=85", "jpg"),
    "edges": ("edges|encode:format=jpeg,quality=85", "jpg"),
    "smooth": ("smooth|encode:format=jpeg,quality=85", "jpg"),
    "resize": (f"resize:width={RESIZE_WIDTH}|encode:format=jpeg,quality=85", "jpg"),
}
CODECS: dict[str, tuple[str, str]] = {
    # decode → JPEG Q85 with no operation: the fixed cost inside every row above
    "jpeg": ("encode:format=jpeg,quality=85", "jpg"),
    # imgq defaults: webp Q80 effort 4; avif Q50 effort 2 (libheif: aom speed 9 - 2 = 7)
    "webp": ("encode:format=webp,quality=80", "webp"),
    "avif": ("encode:format=avif,quality=50", "avif"),
}
AVIF_IMAGES = 10  # AVIF is slow on both sides; a subset keeps the run short


def pillow_case(name: str, optimize: bool = False):  # type: ignore[no-untyped-def]
    from PIL import Image, ImageFilter

    def jpeg(im: Any, out: Path) -> None:
        im.save(out, "JPEG", quality=85, optimize=optimize)

    def reencode(src: Path, out: Path) -> None:
        with Image.open(src) as im:
            jpeg(im, out)

    def filtered(f: Any):  # type: ignore[no-untyped-def]
        def run(src: Path, out: Path) -> None:
            with Image.open(src) as im:
                jpeg(im.filter(f), out)
        return run

    def grayscale(src: Path, out: Path) -> None:
        with Image.open(src) as im:
            jpeg(im.convert("L"), out)

    def resize(src: Path, out: Path) -> None:
        with Image.open(src) as im:
            w, h = im.size
            jpeg(im.resize((RESIZE_WIDTH, round(h * RESIZE_WIDTH / w)), Image.LANCZOS), out)

    def webp(src: Path, out: Path) -> None:
        with Image.open(src) as im:
            im.save(out, "WEBP", quality=80, method=4)

    def avif(src: Path, out: Path) -> None:
        with Image.open(src) as im:
            im.save(out, "AVIF", quality=50, speed=7, max_threads=1)

    return {
        "blur": filtered(ImageFilter.GaussianBlur(2)), "sharpen": filtered(ImageFilter.SHARPEN),
        "edges": filtered(ImageFilter.FIND_EDGES), "smooth": filtered(ImageFilter.SMOOTH),
        "grayscale": grayscale, "resize": resize, "jpeg": reencode, "webp": webp, "avif": avif,
    }[name]


def imgq_case(name: str):  # type: ignore[no-untyped-def]
    common.single_thread_libvips()
    engine = common.Engine.load()
    pipeline = {**CASES, **CODECS}[name][0]
    steps = engine.steps(pipeline)

    def run(src: Path, out: Path) -> None:
        common.run_engine(steps, src, out)

    return run


def worker(side: str, name: str, count: int, repeat: int, optimize: bool) -> None:
    """Child process: time one side of one case; print a JSON line."""
    photos = common.photos()[:count]
    ext = {**CASES, **CODECS}[name][1]
    out_dir = common.CACHE / f"out-{side}-{name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    fn = imgq_case(name) if side == "imgq" else pillow_case(name, optimize)
    for src in photos[:2]:  # warm-up: imports, codec set-up, page cache
        fn(src, out_dir / f"warm.{ext}")
    runs = []
    for _ in range(repeat):
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i, src in enumerate(photos):
            fn(src, out_dir / f"{i:03d}.{ext}")
        runs.append((time.perf_counter() - t0, time.process_time() - cpu0))
    cpu, wall = min((c, w) for w, c in runs)  # best by CPU time: least disturbed
    size = sum((out_dir / f"{i:03d}.{ext}").stat().st_size for i in range(len(photos)))
    print(json.dumps({"wall": wall, "cpu": cpu, "all_walls": [r[0] for r in runs],
                      "bytes": size, "count": len(photos)}))


def spawn(side: str, name: str, count: int, repeat: int, optimize: bool) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", side, name, str(count), str(repeat),
         str(int(optimize))],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{side} {name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def similarity(name: str) -> str:
    """PSNR of imgq's first output against Pillow's (dB): shows both did the same work."""
    import numpy as np
    from PIL import Image

    ext = {**CASES, **CODECS}[name][1]
    a_path = common.CACHE / f"out-imgq-{name}" / f"000.{ext}"
    b_path = common.CACHE / f"out-pillow-{name}" / f"000.{ext}"
    with Image.open(a_path) as a_im, Image.open(b_path) as b_im:
        if a_im.size != b_im.size or a_im.mode != b_im.mode:
            return f"size/mode differ: {a_im.size} {a_im.mode} vs {b_im.size} {b_im.mode}"
        a = np.asarray(a_im, dtype=np.float64)
        b = np.asarray(b_im, dtype=np.float64)
    mse = float(((a - b) ** 2).mean())
    psnr = 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)
    return f"{psnr:.1f} dB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side (best counts)")
    parser.add_argument("--quick", action="store_true", help="10 images, 1 run: a smoke test")
    parser.add_argument("--pillow-optimize", action="store_true",
                        help="Pillow saves JPEG with optimize=True (Huffman optimisation)")
    parser.add_argument("--only", help="comma-separated cases to run (default: all)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        side, name, count, repeat, optimize = args.worker
        worker(side, name, int(count), int(repeat), optimize == "1")
        return

    count = 10 if args.quick else common.PHOTO_COUNT
    repeat = 1 if args.quick else args.repeat
    t_start = time.perf_counter()
    photos = common.photos()
    print(f"# imgq engine vs Pillow — {common.machine_note()}")
    print(f"# {count} photo-like JPEGs {common.PHOTO_SIZE[0]}×{common.PHOTO_SIZE[1]} "
          f"({sum(p.stat().st_size for p in photos[:count]) / count / 1e3:.0f} KB avg, Q90); "
          f"one process per side; libvips threads: {common.vips_threads()}, Pillow: 1; "
          f"best of {repeat}")
    engine = common.Engine.load()
    if engine.unregistered:
        print(f"# note: ops not in the registry yet, imported from their modules: "
              f"{', '.join(engine.unregistered)}")
    if not engine.has("encode"):
        print("# note: imgq has no encode op yet: EncodeOptions set directly")

    if args.pillow_optimize:
        print("# Pillow saves JPEG with optimize=True (as imgq's optimize_coding)")
    names = [*CASES, *CODECS]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    rows, ratios, wall_ratios = [], [], []
    for name in names:
        n = min(count, AVIF_IMAGES) if name == "avif" else count
        r = 1 if name == "avif" else repeat
        vips = spawn("imgq", name, n, r, args.pillow_optimize)
        pil = spawn("pillow", name, n, r, args.pillow_optimize)
        ratio, wall_ratio = pil["cpu"] / vips["cpu"], pil["wall"] / vips["wall"]
        if name in CASES:
            ratios.append(ratio)
            wall_ratios.append(wall_ratio)
        label = name if name in CASES else f"{name} (apart)"
        rows.append([
            label, str(n),
            f"{vips['cpu'] / n * 1000:.1f}", f"{vips['wall'] / n * 1000:.1f}",
            f"{pil['cpu'] / n * 1000:.1f}", f"{pil['wall'] / n * 1000:.1f}",
            f"{ratio:.2f}×", f"{wall_ratio:.2f}×", f"{vips['bytes'] / pil['bytes']:.2f}",
            similarity(name),
        ])
        print(f"  {name}: imgq {vips['cpu']:.2f} s cpu ({vips['wall']:.2f} wall), Pillow "
              f"{pil['cpu']:.2f} s cpu ({pil['wall']:.2f} wall) → {ratio:.2f}×", flush=True)
    print()
    print(common.table(rows, ["op → encode", "imgs", "imgq cpu ms", "imgq wall ms",
                              "Pillow cpu ms", "Pillow wall ms", "speed-up cpu",
                              "speed-up wall", "bytes imgq/PIL", "PSNR imgq~PIL"]))
    print("(ms per image; speed-up = Pillow time / imgq time; cpu = process CPU time of the "
          "single-threaded run, which a busy machine disturbs less than wall time)")
    if ratios:
        gm, gm_wall = common.geomean(ratios), common.geomean(wall_ratios)
        print(f"\ngeometric mean speed-up over {', '.join(n for n in names if n in CASES)}: "
              f"{gm:.2f}× cpu, {gm_wall:.2f}× wall (target ≥ 2×: {'met' if gm >= 2 else 'NOT met'})")
    print("JPEG: imgq = libvips jpegsave Q85 (mozjpeg in pyvips-binary); "
          f"Pillow = save(quality=85{', optimize=True' if args.pillow_optimize else ''}) "
          "(libjpeg-turbo). webp: Q80 effort/method 4 both. avif: Q50, imgq effort 2 "
          "(libheif → aom), Pillow speed=7 max_threads=1 (libavif → aom).")
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
