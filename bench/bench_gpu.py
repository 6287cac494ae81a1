"""x4plus on a GPU: imgq's torch path against a RealESRGANer-style loop, same weights, device
and precision, and the fraction of the device's fp16 peak imgq reaches.

Prints low-resolution megapixels per second for both (best of --repeat passes over --images
images of --size², after one warm-up pass that lets cuDNN tune its kernels for each shape), the
ratio, and the achieved FLOP/s against the peak: Real-ESRGAN x4plus (RRDBNet, 23 blocks, ×4)
costs 2 × 17.93 MFLOP per low-resolution pixel. Under 5 minutes on a data-centre GPU.

    python bench/bench_gpu.py                            # CUDA, fp16, 3 images of 1024²
    python bench/bench_gpu.py --device cpu --size 64     # the same measurement on the CPU
    python bench/bench_gpu.py --peak-tflops 989          # when the GPU is not in PEAK_TFLOPS

Then, with ``--mode concurrent`` (or ``all``, the default), the same images upscaled by imgq
one at a time against all of them at once in threads sharing the model, as an AI worker runs
IMGQ_AI_ITEMS_IN_FLIGHT items: their tiles of one shape go through the model in shared batches
(imgq.ai.torch_batcher). Prints both times, the ratio, and how many batches mixed images.

    python bench/bench_gpu.py --mode concurrent --device cpu --size 64 --images 4

Needs the torch extra (and a CUDA build of torch for the GPU).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.bench_upscale import ReferenceRealESRGANer, test_image  # noqa: E402
from imgq.ai.descriptors import SHIPPED  # noqa: E402
from imgq.ai.loading import build_spandrel_model  # noqa: E402
from imgq.ai.torch_batcher import all_stats  # noqa: E402
from imgq.ai.upscale import UpscaleOptions, Upscaler, upscale_array  # noqa: E402

MODEL = "realesrgan-x4plus"
FLOPS_PER_PIXEL = 2 * 17.93e6
# Dense fp16 tensor-core peak, TFLOP/s, by a part of the device name (vendor data sheets).
PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 756.0,
               "A100": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0,
               "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "T4": 65.0, "V100": 125.0}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_pass(run: object, images: list[np.ndarray], repeat: int,
              device: torch.device) -> tuple[float, list[np.ndarray]]:
    best, outputs = float("inf"), []
    for _ in range(repeat):
        sync(device)
        started = time.perf_counter()
        outputs = [run(image) for image in images]  # type: ignore[operator]
        sync(device)
        best = min(best, time.perf_counter() - started)
    return best, outputs


def together(images: list[np.ndarray], device: torch.device, precision: str,
             shared: bool) -> tuple[float, list[np.ndarray]]:
    """All images at once in threads sharing the model's batches (shared), or one at a time."""
    runners = [Upscaler(UpscaleOptions(model=MODEL, device=str(device), runtime="torch",
                                       precision=precision, share_batches=shared))
               for _ in images]
    outputs: list[np.ndarray] = [np.empty(0)] * len(images)

    def one(i: int) -> None:
        outputs[i] = runners[i].run(images[i])

    def in_turn() -> None:
        for i in range(len(images)):
            one(i)

    # One at a time runs in a thread of its own too: both sides call torch from threads that
    # are not the main one (OpenMP treats the main thread's team differently, see docs/ai.md).
    threads = ([threading.Thread(target=one, args=(i,)) for i in range(len(images))] if shared
               else [threading.Thread(target=in_turn)])
    sync(device)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sync(device)
    return time.perf_counter() - started, outputs


def concurrent(images: list[np.ndarray], device: torch.device, precision: str, repeat: int,
               mpx: float) -> None:
    together(images, device, precision, True)  # cuDNN tunes the shared batch shapes once
    together(images, device, precision, False)
    before = {k: (s.batches, s.mixed, s.tiles) for k, s in all_stats().items()}
    serial = min(together(images, device, precision, False)[0] for _ in range(repeat))
    runs = [together(images, device, precision, True) for _ in range(repeat)]
    shared = min(seconds for seconds, _ in runs)
    _, alone = together(images, device, precision, False)
    stats = [(s.batches - before.get(k, (0, 0, 0))[0], s.mixed - before.get(k, (0, 0, 0))[1],
              s.tiles - before.get(k, (0, 0, 0))[2]) for k, s in all_stats().items()]
    batches, mixed, tiles = (sum(column) for column in zip(*stats, strict=True)) if stats \
        else (0, 0, 0)
    print(f"{len(images)} images one at a time:         {serial:8.3f} s  {mpx / serial:9.4f} MP/s")
    print(f"{len(images)} images at once, shared batches: {shared:8.3f} s  "
          f"{mpx / shared:9.4f} MP/s")
    print(f"ratio at once / one at a time: {serial / shared:.2f}×  ({batches} model calls for "
          f"{tiles} tiles over {repeat} passes, {mixed} of them mixing images)")
    worst = max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
                for a, b in zip(alone, runs[-1][1], strict=True))
    print(f"outputs at once differ from one at a time by at most {worst} levels of 255")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=None, help="side of each input, pixels")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--ref-tile", type=int, default=None, help="the loop's tile (default "
                        "512 on a GPU, as RealESRGANer's users set it; 0: whole image)")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--mode", choices=("all", "loop", "concurrent"), default="all",
                        help="loop: imgq against the RealESRGANer-style loop; concurrent: "
                        "images at once in shared batches against one at a time")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    size = args.size or (1024 if gpu else 64)
    precision = "fp16" if gpu else "fp32"
    ref_tile = args.ref_tile if args.ref_tile is not None else (512 if gpu else 0)
    images = [np.roll(test_image(size), 17 * i, axis=1) for i in range(args.images)]
    mpx = args.images * size * size / 1e6

    name = torch.cuda.get_device_name(device) if gpu else "cpu"
    print(f"{MODEL} {precision} on {name}: {args.images} images of {size}×{size} "
          f"({mpx:.2f} low-res MP a pass), best of {args.repeat}, torch {torch.__version__}")
    if args.mode != "concurrent":
        against_the_loop(args, images, device, precision, ref_tile, mpx)
    if args.mode != "loop":
        concurrent(images, device, precision, args.repeat, mpx)


def against_the_loop(args: argparse.Namespace, images: list[np.ndarray], device: torch.device,
                     precision: str, ref_tile: int, mpx: float) -> None:
    descriptor = SHIPPED.get(MODEL)
    reference = ReferenceRealESRGANer(build_spandrel_model(descriptor).model, 4, ref_tile, 10,
                                      10, device)
    ours = lambda image: upscale_array(image, MODEL, device=str(device), runtime="torch",  # noqa: E731
                                       precision=precision)
    warm = images[:1]
    best_pass(reference.enhance, warm, 1, device)  # cuDNN tunes each shape once
    best_pass(ours, warm, 1, device)
    ref_s, ref_out = best_pass(reference.enhance, images, args.repeat, device)
    our_s, our_out = best_pass(ours, images, args.repeat, device)

    print(f"RealESRGANer-style loop (tile {ref_tile or 'none'}): {ref_s:8.3f} s  "
          f"{mpx / ref_s:9.4f} MP/s")
    print(f"imgq (torch path):                 {our_s:8.3f} s  {mpx / our_s:9.4f} MP/s")
    print(f"ratio imgq / loop: {ref_s / our_s:.2f}×")
    achieved = mpx * 1e6 * FLOPS_PER_PIXEL / our_s / 1e12
    peak = peak_tflops(device, args.peak_tflops)
    share = f"{achieved / peak:.1%} of {peak:.0f} TFLOP/s fp16 peak" if peak else \
        "peak unknown (pass --peak-tflops)"
    print(f"imgq achieves {achieved:.2f} TFLOP/s: {share}")
    worst = max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
                for a, b in zip(ref_out, our_out, strict=True))
    print(f"outputs differ by at most {worst} levels of 255 (tile borders and fp16 rounding)")


if __name__ == "__main__":
    main()
