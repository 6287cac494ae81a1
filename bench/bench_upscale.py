"""Upscaling throughput: imgq's runtime against a reference loop written like RealESRGANer.

Prints, in one run: low-res megapixels per second for both on the same weights and input (imgq
on the model's own CPU runtime, OpenVINO or ncnn, unless --runtime says otherwise), the ratio,
the agreement of their outputs, the model load times, and (on CUDA) the achieved FLOP/s and the
peak GPU memory per tile size.

    python bench/bench_upscale.py                      # CPU here; CUDA when present
    python bench/bench_upscale.py --size 1024 --ref-tile 512 --device cuda

The reference follows Real-ESRGAN's ``RealESRGANer`` (realesrgan/utils.py): reflect pre-padding,
one tile at a time with ``tile_pad`` context cropped away, fp16 on GPU / fp32 on CPU, NCHW, and
the output moved to the CPU as float and quantised there.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from imgq.ai.cpu_nets import choose_runtime  # noqa: E402
from imgq.ai.descriptors import SHIPPED  # noqa: E402
from imgq.ai.catalog import get_model  # noqa: E402
from imgq.ai.loading import CACHE, build_spandrel_model  # noqa: E402
from imgq.ai.upscale import upscale_array  # noqa: E402


class ReferenceRealESRGANer:
    """RealESRGANer's enhance() for 3-channel uint8 input, kept to its structure."""

    def __init__(self, model: torch.nn.Module, scale: int, tile: int, tile_pad: int,
                 pre_pad: int, device: torch.device) -> None:
        self.half = device.type == "cuda"
        self.model = model.eval().to(device)
        if self.half:
            self.model = self.model.half()
        self.scale, self.tile_size, self.tile_pad, self.pre_pad = scale, tile, tile_pad, pre_pad
        self.device = device

    def pre_process(self, img: np.ndarray) -> None:
        tensor = torch.from_numpy(np.transpose(img, (2, 0, 1))).float()
        self.img = tensor.unsqueeze(0).to(self.device)
        if self.half:
            self.img = self.img.half()
        if self.pre_pad:
            self.img = F.pad(self.img, (0, self.pre_pad, 0, self.pre_pad), "reflect")

    def process(self) -> None:
        self.output = self.model(self.img)

    def tile_process(self) -> None:
        _, channel, height, width = self.img.shape
        self.output = self.img.new_zeros((1, channel, height * self.scale, width * self.scale))
        tiles_x, tiles_y = math.ceil(width / self.tile_size), math.ceil(height / self.tile_size)
        for y in range(tiles_y):
            for x in range(tiles_x):
                self._one_tile(x, y, height, width)

    def _one_tile(self, x: int, y: int, height: int, width: int) -> None:
        ofs_x, ofs_y = x * self.tile_size, y * self.tile_size
        x0, x1 = ofs_x, min(ofs_x + self.tile_size, width)
        y0, y1 = ofs_y, min(ofs_y + self.tile_size, height)
        x0p, x1p = max(x0 - self.tile_pad, 0), min(x1 + self.tile_pad, width)
        y0p, y1p = max(y0 - self.tile_pad, 0), min(y1 + self.tile_pad, height)
        with torch.no_grad():
            out_tile = self.model(self.img[:, :, y0p:y1p, x0p:x1p])
        s = self.scale
        tx, ty = (x0 - x0p) * s, (y0 - y0p) * s
        self.output[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = \
            out_tile[:, :, ty:ty + (y1 - y0) * s, tx:tx + (x1 - x0) * s]

    def post_process(self) -> torch.Tensor:
        if self.pre_pad:
            _, _, h, w = self.output.size()
            self.output = self.output[:, :, :h - self.pre_pad * self.scale,
                                      :w - self.pre_pad * self.scale]
        return self.output

    @torch.no_grad()
    def enhance(self, img: np.ndarray) -> np.ndarray:
        self.pre_process(img.astype(np.float32) / 255.0)
        if self.tile_size > 0:
            self.tile_process()
        else:
            self.process()
        output = self.post_process().data.squeeze().float().cpu().clamp_(0, 1).numpy()
        return (np.transpose(output, (1, 2, 0)) * 255.0).round().astype(np.uint8)


def test_image(size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([80 + 120 * yy, 90 + 100 * xx, 200 - 120 * xx * yy], axis=2)
    detail = 30 * np.sin(40 * xx + 10 * np.sin(9 * yy))[..., None]
    return np.clip(base + detail + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def timed(fn: Any, repeat: int, device: torch.device) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best, result


def bench_throughput(args: argparse.Namespace, device: torch.device) -> None:
    descriptor = SHIPPED.get(args.model)
    image = test_image(args.size)
    mpx = args.size * args.size / 1e6
    ref_model = build_spandrel_model(descriptor).model
    reference = ReferenceRealESRGANer(ref_model, descriptor.scale, args.ref_tile, 10, 10, device)
    ours = lambda: upscale_array(image, args.model, device=str(device), tile=args.tile,  # noqa: E731
                                 runtime=args.runtime)
    runtime = "torch" if device.type == "cuda" or args.runtime == "torch" else (
        choose_runtime(descriptor, args.runtime))
    warm = test_image(48)
    reference.enhance(warm)
    upscale_array(warm, args.model, device=str(device), runtime=args.runtime)
    ref_s = our_s = float("inf")
    for _ in range(args.repeat):  # alternate, so a busy machine slows both alike
        seconds, ref_out = timed(lambda: reference.enhance(image), 1, device)
        ref_s = min(ref_s, seconds)
        seconds, our_out = timed(ours, 1, device)
        our_s = min(our_s, seconds)
    difference = np.abs(ref_out.astype(np.int16) - our_out.astype(np.int16))
    print(f"input {args.size}×{args.size} ({mpx:.3f} MP low-res), model {args.model}, "
          f"device {device_name(device)}, torch threads {torch.get_num_threads()}")
    print(f"reference (RealESRGANer loop, tile {args.ref_tile}, pad 10, pre-pad 10): "
          f"{ref_s:8.2f} s  {mpx / ref_s:8.4f} MP/s")
    print(f"imgq upscale_array ({runtime}, tile {args.tile or 'auto'}):{'':6}"
          f"{our_s:8.2f} s  {mpx / our_s:8.4f} MP/s")
    print(f"speed-up: {ref_s / our_s:.2f}×   outputs differ by mean {difference.mean():.3f}, "
          f"p99.9 {np.percentile(difference, 99.9):.0f} levels of 255")
    flops = mpx * 1e6 * descriptor.flops_per_pixel
    print(f"achieved: imgq {flops / our_s / 1e12:.2f} TFLOP/s, reference "
          f"{flops / ref_s / 1e12:.2f} TFLOP/s ({descriptor.flops_per_pixel / 1e6:.2f} MFLOP "
          "per low-res pixel)")


def bench_load_times(device: torch.device) -> None:
    print("model load time (weights from disk to a ready module, cold cache):")
    for descriptor in SHIPPED:
        if descriptor.purpose != "sr" or not descriptor.torch_form:
            continue  # Real-CUGAN has no PyTorch form
        CACHE.clear()
        started = time.perf_counter()
        get_model(descriptor.name, device, "fp16" if device.type == "cuda" and
                  descriptor.supports_half else "fp32")
        print(f"  {descriptor.name:26s} {time.perf_counter() - started:6.2f} s")


def bench_gpu_memory(args: argparse.Namespace, device: torch.device) -> None:
    print("peak GPU memory per tile size (one tile, batch 1, auto precision):")
    image = test_image(1024)
    for tile in (128, 256, 512, 1024):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        upscale_array(image[:tile, :tile], args.model, device=str(device), tile=tile, batch=1)
        peak = torch.cuda.max_memory_allocated(device) - base
        print(f"  tile {tile:5d}: {peak / 2**20:9.1f} MiB")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesrgan-x4plus")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=None, help="input side in pixels")
    parser.add_argument("--tile", type=int, default=None, help="imgq tile (default: auto)")
    parser.add_argument("--ref-tile", type=int, default=None, help="reference tile size")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--runtime", default="auto", help="imgq's runtime: auto (the model's "
                        "fastest installed CPU runtime; torch on CUDA), torch, openvino, ncnn")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    gpu = device.type == "cuda"
    args.size = args.size or (1024 if gpu else 256)
    args.ref_tile = args.ref_tile or (512 if gpu else 256)
    args.repeat = args.repeat or (3 if gpu else 1)
    if gpu:
        torch.backends.cudnn.benchmark = True
    bench_throughput(args, device)
    bench_load_times(device)
    if gpu:
        bench_gpu_memory(args, device)
    else:
        print("peak GPU memory per tile size: skipped (no CUDA device)")


if __name__ == "__main__":
    main()
