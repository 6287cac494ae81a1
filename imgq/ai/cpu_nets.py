"""Which CPU runtime runs a model, and the loaded networks of the runtimes that are not torch:
the shipped ncnn files on OpenVINO or ncnn, DAT light's shipped graph on OpenVINO or onnxruntime.

Each shipped model lists the runtimes that run it exactly, fastest first, as measured by
bench/bench_runtimes.py (``ModelDescriptor.cpu_runtimes``); the first one installed here wins.
The networks are cached per process, a few at a time, like the PyTorch modules.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading

from cachetools import LRUCache

from imgq.ai.array_upscale import ArrayForward
from imgq.ai.descriptors import ModelDescriptor
from imgq.ai.errors import AIUnavailable, ModelLoadError
from imgq.ai.graph_runtime import OnnxRuntimeGraphNet, OpenVinoGraphNet
from imgq.ai.ncnn_runtime import CUGAN_PREPADDING, CuganForward, NcnnNet
from imgq.ai.openvino_runtime import OpenVinoNet

logger = logging.getLogger(__name__)

#: The packages each runtime needs; torch also needs spandrel and safetensors for its models.
RUNTIME_PACKAGES = {"openvino": ("openvino",), "ncnn": ("ncnn",),
                    "onnxruntime": ("onnxruntime",),
                    "torch": ("torch", "spandrel", "safetensors")}
INSTALL_HINT = {"openvino": "pip install openvino", "ncnn": "pip install ncnn",
                "onnxruntime": "pip install onnxruntime",
                "torch": "the torch extra: pip install 'imgq[torch]' (see docs/ai.md)"}


def runtime_installed(runtime: str) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in RUNTIME_PACKAGES[runtime])


def choose_runtime(descriptor: ModelDescriptor, requested: str = "auto") -> str:
    """The runtime a CPU run of this model uses: the fastest installed one, or the one asked
    for if the model can run on it. AIUnavailable names what to install."""
    candidates = descriptor.cpu_runtimes if requested == "auto" else (requested,)
    if requested != "auto" and requested not in descriptor.cpu_runtimes:
        raise AIUnavailable(f"model {descriptor.name} does not run on {requested}; it runs on "
                            f"{', '.join(descriptor.cpu_runtimes)}")
    for runtime in candidates:
        if runtime_installed(runtime):
            return runtime
    hints = "; or ".join(INSTALL_HINT[r] for r in candidates)
    raise AIUnavailable(f"model {descriptor.name} needs {' or '.join(candidates)}: {hints}")


def unavailable_reason(descriptor: ModelDescriptor) -> str | None:
    """Why a shipped model cannot run here (weights or runtime missing), or None."""
    if not descriptor.weights_installed():
        return f"the weights of {descriptor.name} ({descriptor.source.describe()}) are missing"
    if any(runtime_installed(r) for r in descriptor.cpu_runtimes):
        return None
    if descriptor.torch_form and runtime_installed("torch"):
        return None
    return f"{descriptor.name} needs " + " or ".join(
        INSTALL_HINT[r] for r in descriptor.cpu_runtimes)


_thread_limit: int | None = None


def limit_threads(threads: int) -> None:
    """Cap the threads each OpenVINO/ncnn net of this process uses (a worker process that
    shares the cores with others), like torch.set_num_threads for torch."""
    global _thread_limit
    _thread_limit = max(1, threads)


def usable_cores() -> int:
    """The threads a net gets: the cap set by limit_threads, else the cores we may use."""
    if _thread_limit is not None:
        return _thread_limit
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class NetCache:
    """A small per-process LRU of ready networks keyed by (model, runtime, threads)."""

    def __init__(self, size: int = 3) -> None:
        self._nets: LRUCache[tuple[str, str, int], ArrayForward] = LRUCache(size)
        self._lock = threading.Lock()

    def get(self, descriptor: ModelDescriptor, runtime: str, threads: int) -> ArrayForward:
        key = (descriptor.name, runtime, threads)
        with self._lock:  # one load at a time: two threads never build the same net twice
            forward = self._nets.get(key)
            if forward is None:
                forward = self._nets[key] = build_forward(descriptor, runtime, threads)
            return forward

    def clear(self) -> None:
        with self._lock:
            self._nets.clear()


def build_forward(descriptor: ModelDescriptor, runtime: str, threads: int) -> ArrayForward:
    stem = descriptor.source.location()
    if descriptor.graph_tile:
        return _graph_forward(descriptor, runtime, threads)
    cugan = descriptor.architecture == "RealCUGAN"
    if runtime == "openvino":
        min_side = 2 * CUGAN_PREPADDING[descriptor.scale] + 2 if cugan else 1
        net: OpenVinoNet | NcnnNet = OpenVinoNet(stem, threads, min_side)
    elif runtime == "ncnn":
        net = NcnnNet(stem, threads)
    else:
        raise AIUnavailable(f"no array runtime called {runtime!r}")
    logger.info("model loaded", extra={"model": descriptor.name, "runtime": runtime,
                                       "threads": threads})
    return CuganForward(net, descriptor.scale).forward if cugan else net.forward


def _graph_forward(descriptor: ModelDescriptor, runtime: str, threads: int) -> ArrayForward:
    """A model shipped as a weightless graph, bound to the weights of its installed file."""
    location = descriptor.source.location()
    net: OpenVinoGraphNet | OnnxRuntimeGraphNet
    if runtime == "openvino":
        net = OpenVinoGraphNet(descriptor.scale, location, threads)
    elif runtime == "onnxruntime":
        net = OnnxRuntimeGraphNet(descriptor.scale, location, threads)
    else:
        raise AIUnavailable(f"model {descriptor.name} has no graph for {runtime!r}")
    if net.tile != descriptor.graph_tile:
        raise ModelLoadError(f"the graph of {descriptor.name} takes {net.tile} px tiles, "
                             f"not {descriptor.graph_tile}")
    logger.info("model loaded", extra={"model": descriptor.name, "runtime": runtime,
                                       "threads": threads})
    return net.forward


NETS = NetCache()
