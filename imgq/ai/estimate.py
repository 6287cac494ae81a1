"""How long a model run will take on this CPU: for the AI megapixel limit and stage messages.

seconds = low-res pixels × tile overhead × FLOPs per low-res pixel / CPU throughput.
The throughput is per architecture family (convolutions run far closer to peak than attention),
measured on the reference machine per CPU thread, or calibrated on this machine by timing one
small tile (``calibrate``), which the worker can do once at start-up.
"""

from __future__ import annotations

import logging

from imgq.ai.descriptors import ModelDescriptor

logger = logging.getLogger(__name__)

# FLOP/s per CPU thread (per CPU second), fp32. Convolutions: PyTorch channels_last with 2
# threads on an AMD EPYC (Zen 4, AVX-512): RRDBNet 389 GFLOP/s, SRVGGNetCompact 404; OpenVINO on
# the reference machine's Xeon does 165-260 GFLOP per CPU second on the shipped networks. DAT
# light (attention, counted FLOPs): 25 GFLOP per CPU second on OpenVINO there (16 on PyTorch).
REFERENCE_FLOPS_PER_THREAD = {"conv": 195e9, "attention": 25e9}
ATTENTION_ARCHITECTURES = {"DAT", "SwinIR", "Swin2SR", "HAT", "ATD", "DRCT", "GRL", "RGT",
                           "SRFormer", "IPT"}
TILE_OVERHEAD = 1.3  # overlap recomputation plus cache effects of real tile sizes
FALLBACK_FLOPS_PER_PIXEL = 36e6  # unknown user model: assume an RRDBNet

def family(descriptor: ModelDescriptor) -> str:
    return "attention" if descriptor.architecture in ATTENTION_ARCHITECTURES else "conv"


def cpu_throughput(descriptor: ModelDescriptor, threads: int | None = None) -> float:
    """FLOP/s this process can expect for the model on CPU."""
    if threads is None:
        from imgq.ai.device import cpu_threads

        threads = cpu_threads()
    return REFERENCE_FLOPS_PER_THREAD[family(descriptor)] * max(1, threads)


def reference_cpu_seconds_per_pixel(descriptor: ModelDescriptor) -> float:
    """CPU seconds per pixel the network runs on, at the reference throughput."""
    flops = descriptor.flops_per_pixel or FALLBACK_FLOPS_PER_PIXEL
    return flops / REFERENCE_FLOPS_PER_THREAD[family(descriptor)]


def estimate_cpu_seconds(width: int, height: int, descriptor: ModelDescriptor,
                         threads: int | None = None) -> float:
    """Estimated seconds to run `descriptor` on a width×height input on this CPU."""
    flops = descriptor.flops_per_pixel or FALLBACK_FLOPS_PER_PIXEL
    side = descriptor.graph_tile  # a graph of one tile shape: a short image is padded up to it
    pixels = max(width, side) * max(height, side)
    return pixels * flops * TILE_OVERHEAD / cpu_throughput(descriptor, threads)


def describe_estimate(seconds: float) -> str:
    """'~40 s', '~3 min', '~1.5 h' for stage messages and error texts."""
    if seconds < 90:
        return f"~{round(seconds)} s"
    if seconds < 5400:
        return f"~{round(seconds / 60)} min"
    return f"~{seconds / 3600:.1f} h"
