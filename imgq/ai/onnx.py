"""onnxruntime sessions, made one way for every ONNX model imgq runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgq.ai.errors import AIUnavailable


def onnx_session(path: Path | str, gpu: bool, purpose: str) -> Any:
    """A session for the model at `path`, on CUDA when asked and present, else on the CPU."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise AIUnavailable(f"{purpose} needs onnxruntime") from exc
    providers = ["CPUExecutionProvider"]
    if gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Idle onnxruntime threads spin by default and steal the cores torch needs in the same worker.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)
