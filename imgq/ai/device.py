"""Device and precision choice, and how much memory a model run may use."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from imgq.ai.descriptors import ModelDescriptor
from imgq.ai.errors import DeviceUnavailable

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_DEVICE_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DEFAULT_CPU_BUDGET = 2 * 1024**3  # bytes of activations a CPU model run may hold
GPU_MEMORY_FRACTION = 0.6  # of the free GPU memory; the rest covers workspace and fragmentation


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' → cuda when present, else cpu; 'cpu'; 'cuda'; 'cuda:N'."""
    import torch

    spec = (spec or "auto").strip().lower()
    if not _DEVICE_SPEC.match(spec):
        raise DeviceUnavailable(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable("CUDA was requested but no CUDA device is available")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceUnavailable(f"there is no CUDA device {index}")
    return device


def free_memory(device: torch.device, cpu_budget: int | None = None) -> int:
    """Bytes a model run may use on this device: free GPU memory, or the CPU budget."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * GPU_MEMORY_FRACTION)
    budget = cpu_budget if cpu_budget is not None else DEFAULT_CPU_BUDGET
    available = _available_host_memory()
    return min(budget, available // 2) if available else budget


def _available_host_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def choose_precision(descriptor: ModelDescriptor, device: torch.device,
                     requested: str = "auto") -> str:
    """fp16 on CUDA when the model supports it (bf16 as second choice), fp32 on CPU.

    On CPU bf16 roughly halves the time on CPUs with AVX512-BF16/AMX but costs about 1/255 of
    accuracy, so it is used only when asked for.
    """
    import torch

    if requested not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"unknown precision {requested!r}")
    if requested != "auto":
        if requested not in descriptor.precisions:
            logger.info("precision not supported by model, using fp32",
                        extra={"model": descriptor.name, "requested": requested})
            return "fp32"
        if requested == "fp16" and device.type == "cpu":
            return "fp32"  # fp16 convolutions on CPU are slow or missing
        return requested
    if device.type != "cuda":
        return "fp32"
    if "fp16" in descriptor.precisions:
        return "fp16"
    if "bf16" in descriptor.precisions and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def torch_dtype(precision: str) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def cpu_threads() -> int:
    """The CPU threads a model run uses: torch's count once torch is loaded, else what it
    would take when it loads (OMP_NUM_THREADS, which a worker process that shares the cores
    sets: imgq.ai.warmup.limit_cpu_threads), else the cores this process may use (what the
    other runtimes get)."""
    if "torch" in sys.modules:
        import torch

        return max(1, torch.get_num_threads() or os.cpu_count() or 1)
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if limit.isdigit() and int(limit) > 0:
        return int(limit)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
