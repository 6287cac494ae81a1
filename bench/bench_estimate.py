"""Estimated against measured time of an upscale, on five image sizes, on this machine.

What a worker of `imgq serve` does, in one process: measure the model once (imgq.ai.warmup,
into a fresh cost file), then run the upscale step the way a worker runs it (decode, model,
encode), each size once. For each size it prints the estimate made right after the one-off
measurement ("first"), the estimate made just before the run, after the earlier runs were fed
back as the worker feeds them ("before run"), the measured seconds, and estimate ÷ measured.
The target is every ratio within 0.7–1.3.

    python bench/bench_estimate.py                         # realesrgan-x4plus, 5 sizes
    python bench/bench_estimate.py --model realesr-animevideov3 --sizes 320x240,640x480
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import _photo_like, machine_note, run_engine, table

DEFAULT_SIZES = "96x72,160x120,240x180,320x240,480x360"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesrgan-x4plus")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="WIDTHxHEIGHT,...")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]

    from imgq.ai.costs import book_at
    from imgq.ai.descriptors import SHIPPED
    from imgq.ai.warmup import calibrate_missing, limit_cpu_threads
    from imgq.config import load_settings
    from imgq.domain.pipeline import parse_pipeline
    from imgq.ops import build_registry

    threads = os.cpu_count() or 1  # one AI worker (IMGQ_AI_WORKERS=1) gets every core
    limit_cpu_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="imgq-bench-estimate-"))
    settings = load_settings(data_dir=work, ai_device="cpu", ai_costs_file=work / "costs.json")
    registry = build_registry(settings)
    steps = registry.bind(parse_pipeline(f"upscale:model={args.model},scale=4"))
    op, params = steps[0].op, steps[0].params
    book = book_at(settings.ai_costs_file)

    started = time.perf_counter()
    calibrate_missing([SHIPPED.get(args.model)], book, settings.ai_models_dir)
    calibration = time.perf_counter() - started
    first = {size: op.estimate(params, *size).seconds for size in sizes}  # type: ignore[attr-defined]

    rows, ratios = [], []
    for width, height in sizes:
        source = work / f"in-{width}x{height}.jpg"
        _photo_like(width, height, seed=width).write_to_file(str(source), Q=90)
        before = op.estimate(params, width, height).seconds  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        run_engine(steps, source, work / f"out-{width}x{height}.jpg")
        measured = time.perf_counter() - t0
        ratios.append((first[(width, height)] / measured, before / measured))
        rows.append([f"{width}×{height}", f"{first[(width, height)]:.1f}", f"{before:.1f}",
                     f"{measured:.1f}", f"{ratios[-1][0]:.2f}", f"{ratios[-1][1]:.2f}"])
        print("  ".join(rows[-1]), file=sys.stderr, flush=True)

    print(f"# estimate vs measured: {args.model} ×4 on the CPU, {threads} threads")
    print(machine_note())
    print(f"one-off measurement of the model: {calibration:.1f} s")
    print(table(rows, ["input", "first est. s", "before run s", "measured s",
                       "first/measured", "before/measured"]))
    worst_first = max(ratios, key=lambda r: abs(r[0] - 1))[0]
    worst_before = max(ratios, key=lambda r: abs(r[1] - 1))[1]
    inside = sum(0.7 <= r[1] <= 1.3 for r in ratios)
    print(f"worst ratio: first {worst_first:.2f}, before run {worst_before:.2f}; "
          f"{inside}/{len(ratios)} sizes within ±30 % before their run")


if __name__ == "__main__":
    main()
