"""Running the shipped ncnn files (.param + .bin) directly with the ``ncnn`` package, on the CPU.

ncnn is how the authors of these files run them: imgq uses it as the reference its OpenVINO
build is tested against, and as the fallback runtime when OpenVINO is not installed
(bench/bench_runtimes.py measured OpenVINO faster). fp32 storage and arithmetic throughout: the
outputs equal PyTorch's to float rounding (≥ 100 dB). Needs numpy and ncnn only, never torch.

Real-CUGAN's network wants context around each tile (``prepadding`` pixels on every side, the
tile itself a multiple of 2 or 4) and, at ×4, adds the nearest-neighbour input to its output;
``CuganForward`` does what the reference program (realcugan-ncnn-vulkan, CPU path, one tile)
does around the net, so that a forward maps (3, h, w) to (3, h·s, w·s) like any other model.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from imgq.ai.errors import AIUnavailable, ModelLoadError
from imgq.ai.ncnn_graph import parse_graph

logger = logging.getLogger(__name__)

# Real-CUGAN: context pixels on each side, and the multiple the unpadded tile is aligned to.
CUGAN_PREPADDING = {2: 18, 3: 14, 4: 19}
CUGAN_ALIGN = {2: 2, 3: 4, 4: 2}


def blob_names(param_path: Path) -> tuple[str, str]:
    """The input blob (the Input layer's output) and the last layer's output blob."""
    layers = parse_graph(param_path.read_text())
    inputs = [layer.tops[0] for layer in layers if layer.kind == "Input"]
    if not inputs:
        raise ModelLoadError(f"{param_path.name} has no Input layer")
    return inputs[0], layers[-1].tops[-1]


class NcnnNet:
    """One loaded ncnn network; ``forward`` is safe to call from several threads."""

    def __init__(self, stem: Path, threads: int = 1, fp16: bool = False) -> None:
        try:
            import ncnn
        except ImportError as exc:
            raise AIUnavailable("this model runs on ncnn: pip install ncnn") from exc
        param, weights = stem.with_suffix(".param"), stem.with_suffix(".bin")
        if not param.is_file() or not weights.is_file():
            raise ModelLoadError(f"missing ncnn files {param.name} / {weights.name}")
        self._ncnn = ncnn
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.use_vulkan_compute = False
        for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                     "use_bf16_storage"):
            setattr(opt, flag, fp16 and flag != "use_bf16_storage")
        opt.num_threads = max(1, threads)
        opt.openmp_blocktime = 0  # idle threads must not spin against the rest of the worker
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise ModelLoadError(f"ncnn could not load {param.name}")
        self.input_name, self.output_name = blob_names(param)
        self.threads = opt.num_threads
        self._lock = threading.Lock()

    def forward(self, chw: np.ndarray) -> np.ndarray:
        """(C, h, w) float32 → the network's (C', H, W) float32 output."""
        with self._lock:  # one extraction at a time: the threads are already all in use
            extractor = self.net.create_extractor()
            extractor.input(self.input_name, self._ncnn.Mat(np.ascontiguousarray(chw)))
            status, out = extractor.extract(self.output_name)
        if status != 0:
            raise ModelLoadError(f"ncnn extraction failed with status {status}")
        return np.array(out, dtype=np.float32, copy=True)


class Net(Protocol):
    def forward(self, chw: np.ndarray) -> np.ndarray: ...


class CuganForward:
    """Real-CUGAN around an ncnn net: (3, h, w) in 0..1 → (3, h·s, w·s), as the reference
    program's CPU path computes one tile (reflected border, aligned size, ×4 residual)."""

    def __init__(self, net: Net, scale: int) -> None:
        self.net, self.scale = net, scale
        self.pad, self.align = CUGAN_PREPADDING[scale], CUGAN_ALIGN[scale]

    def forward(self, chw: np.ndarray) -> np.ndarray:
        _, h, w = chw.shape
        s, p = self.scale, self.pad
        extra_h, extra_w = (-h) % self.align, (-w) % self.align
        # ncnn's border type 2 is numpy's "reflect"; the descriptor's min_size keeps h, w > p.
        padded = np.pad(chw, ((0, 0), (p, p + extra_h), (p, p + extra_w)), mode="reflect")
        out = self.net.forward(padded)[:, : h * s, : w * s]
        if s == 4:
            out = out + np.repeat(np.repeat(chw, s, axis=1), s, axis=2)
        return out

