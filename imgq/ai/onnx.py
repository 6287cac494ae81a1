"""onnxruntime sessions, made one way for every ONNX model imgq runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgq.ai.errors import AIUnavailable


def onnx_session(model: Path | str | bytes, gpu: bool, purpose: str,
                 threads: int | None = None) -> Any:
    """A session for the model at a path (or its serialised bytes), on CUDA when asked and
    present, else on the CPU with `threads` threads (onnxruntime's choice when None)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise AIUnavailable(f"{purpose} needs onnxruntime") from exc
    providers = ["CPUExecutionProvider"]
    if gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = max(1, threads)
    # Idle onnxruntime threads spin by default and steal the cores torch needs in the same worker.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=providers)
