"""Estimated against measured time of an upscale, on five image sizes, on this machine.

What a worker of `imgq serve` does, in one process, per model: measure the model once into a
fresh cost file (imgq.ai.warmup, as the AI worker does before the model's first item), then
run the upscale step the way a worker runs it (decode, model, encode; imgq.worker.run), each
size once, with the worker's threads and the default CPU runtime (OpenVINO from the shipped
ncnn files). For each size it prints the FIRST estimate (made right after the one-off
measurement, before any real run: what the 201 answer and the page say on a fresh machine), the
measured seconds, and their ratio, and the same ratio in CPU seconds (the work the estimate
foresaw, apart from how busy the machine was: the wall-clock estimate is the CPU seconds × the
pace of the latest runs); then the estimate made just before the run, after the earlier runs
were fed back as the worker feeds them, and its ratio. The target: every first
ratio within 0.7–1.3. The machine's load average is printed with each model: a figure taken
on a loaded machine says so.

    python bench/bench_estimate.py                      # the default model, 5 sizes
    python bench/bench_estimate.py --models realesr-animevideov3,realcugan-x2,realcugan-x4
    python bench/bench_estimate.py --sizes 320x240,640x480 --scale 2
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

DEFAULT_SIZES = "320x240,640x480,960x720,1280x960,1600x1200"
LOW, HIGH = 0.7, 1.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="realesrgan-x4plus",
                        help="comma-separated model names (default: the default model)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="WIDTHxHEIGHT,...")
    parser.add_argument("--scale", type=int, default=0, help="0: each model's own scale")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]

    from imgq.ai.warmup import limit_cpu_threads
    from imgq.config import load_settings

    threads = load_settings().ai_threads  # one AI worker (IMGQ_AI_WORKERS=1): every core
    limit_cpu_threads(threads)
    print(f"# estimate vs measured: upscale on the CPU, {threads} threads, one worker")
    print(machine_note())
    summary = []
    for model in args.models.split(","):
        summary.append(bench_model(model.strip(), sizes, args.scale, threads))
    print()
    print(table(summary, ["model", "first/measured", "within ±30 %", "after feedback",
                          "load average"]))


def bench_model(model: str, sizes: list[tuple[int, ...]], scale: int, threads: int
                ) -> list[str]:
    from imgq.ai.costs import book_at
    from imgq.ai.cpu_nets import choose_runtime
    from imgq.ai.descriptors import SHIPPED
    from imgq.ai.warmup import calibrate_missing
    from imgq.config import load_settings
    from imgq.domain.pipeline import parse_pipeline
    from imgq.ops import build_registry

    descriptor = SHIPPED.get(model)
    scale = scale or descriptor.scale
    work = Path(tempfile.mkdtemp(prefix="imgq-bench-estimate-"))
    settings = load_settings(data_dir=work, ai_device="cpu", ai_costs_file=work / "costs.json")
    registry = build_registry(settings)
    steps = registry.bind(parse_pipeline(f"upscale:model={model},scale={scale}"))
    op, params = steps[0].op, steps[0].params
    book = book_at(settings.ai_costs_file)
    load_before = os.getloadavg()[0]

    started = time.perf_counter()
    calibrate_missing([descriptor], book, settings.ai_models_dir, threads)
    calibration = time.perf_counter() - started
    # A worker's pipeline is warm after its first item: imports and codecs readied on a
    # 16×16 image, too small to be recorded (imgq.ops.upscale.MIN_RECORDED_PIXELS).
    _photo_like(16, 16, seed=1).write_to_file(str(work / "warm.jpg"), Q=90)
    run_engine(steps, work / "warm.jpg", work / "warm-out.jpg")
    first = {size: op.estimate(params, *size) for size in sizes}  # type: ignore[attr-defined]

    rows, ratios = [], []
    for width, height in sizes:
        source = work / f"in-{width}x{height}.jpg"
        _photo_like(width, height, seed=width).write_to_file(str(source), Q=90)
        before = op.estimate(params, width, height).seconds  # type: ignore[attr-defined]
        t0, c0 = time.perf_counter(), time.process_time()
        run_engine(steps, source, work / f"out-{width}x{height}.jpg")
        measured, cpu = time.perf_counter() - t0, time.process_time() - c0
        estimated = first[(width, height)]
        ratios.append((estimated.seconds / measured, before / measured))
        cpu_ratio = f"{estimated.cpu_seconds / cpu:.2f}" if estimated.cpu_seconds else "-"
        rows.append([f"{width}×{height}", f"{estimated.seconds:.1f}", f"{measured:.1f}",
                     f"{ratios[-1][0]:.2f}", cpu_ratio, f"{before:.1f}",
                     f"{ratios[-1][1]:.2f}", f"{os.getloadavg()[0]:.1f}"])
        print("  ".join(rows[-1]), file=sys.stderr, flush=True)

    print()
    print(f"## {model} ×{scale} on {choose_runtime(descriptor)}: one-off measurement "
          f"{calibration:.1f} s")
    print(table(rows, ["input", "first estimate s", "measured s", "first/measured",
                       "CPU s est./meas.", "after feedback s", "after/measured", "load avg"]))
    inside = sum(LOW <= r[0] <= HIGH for r in ratios)
    after = sum(LOW <= r[1] <= HIGH for r in ratios)
    firsts = sorted(r[0] for r in ratios)
    return [model, f"{firsts[0]:.2f}–{firsts[-1]:.2f}", f"{inside}/{len(ratios)}",
            f"{after}/{len(ratios)}", f"{load_before:.1f}→{os.getloadavg()[0]:.1f}"]


if __name__ == "__main__":
    main()
