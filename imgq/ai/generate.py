"""Text-to-image with diffusers, from checkpoints the operator puts in `<models dir>/generate/`.

A checkpoint is a diffusers folder (model_index.json with unet/, vae/, text_encoder/,
tokenizer/, scheduler/: what `save_pretrained` writes, a Stable Diffusion 1.x/2.x or SDXL
pipeline). Nothing is ever downloaded: the hub is switched off (HF_HUB_OFFLINE) before diffusers
is imported and every load passes local_files_only.

One pipeline per (checkpoint, device) stays loaded in each worker process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgq.ai.errors import AIUnavailable, ModelLoadError, ModelNotFound
from imgq.errors import Cancelled

log = logging.getLogger(__name__)

FOLDER = "generate"
PACKAGES = ("torch", "diffusers", "transformers")

_pipelines: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Checkpoint:
    name: str
    path: Path


def checkpoints(models_dir: Path | None) -> list[Checkpoint]:
    """The text-to-image checkpoints installed, in name order."""
    if models_dir is None or not (models_dir / FOLDER).is_dir():
        return []
    found = []
    for entry in sorted((models_dir / FOLDER).iterdir()):
        if entry.is_dir() and (entry / "model_index.json").is_file():
            found.append(Checkpoint(entry.name, entry))
    return found


def find(models_dir: Path | None, name: str | None) -> Checkpoint:
    installed = checkpoints(models_dir)
    if not installed:
        raise AIUnavailable(no_model_message(models_dir))
    if name is None:
        return installed[0]
    for checkpoint in installed:
        if checkpoint.name == name:
            return checkpoint
    raise ModelNotFound(f"no text-to-image model named {name!r}; installed: "
                        f"{', '.join(c.name for c in installed)}")


def no_model_message(models_dir: Path | None) -> str:
    where = models_dir / FOLDER if models_dir is not None else f"<IMGQ_MODELS_DIR>/{FOLDER}"
    return (f"no text-to-image model installed: put a Stable Diffusion checkpoint in diffusers "
            f"format (a folder with model_index.json, unet/, vae/, text_encoder/, tokenizer/, "
            f"scheduler/) in {where}, then restart; see docs/ai.md")


def _load(checkpoint: Checkpoint, device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers reads it
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    try:
        import torch
        from diffusers import DiffusionPipeline
    except ImportError as exc:
        raise AIUnavailable("text-to-image needs torch, diffusers and transformers: "
                            "pip install 'imgq[generate]'") from exc
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    try:
        pipe = DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            str(checkpoint.path), local_files_only=True, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - a broken checkpoint is the operator's to fix
        raise ModelLoadError(f"the text-to-image model {checkpoint.name!r} could not be "
                             f"loaded: {type(exc).__name__}: {str(exc)[:300]}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def pipeline(checkpoint: Checkpoint, device: str) -> Any:
    key = (str(checkpoint.path), device)
    with _lock:
        if key not in _pipelines:
            started = time.monotonic()
            _pipelines[key] = _load(checkpoint, device)
            log.info("text-to-image model loaded", extra={
                "model": checkpoint.name, "device": device,
                "seconds": round(time.monotonic() - started, 2)})
        return _pipelines[key]


@dataclass(frozen=True)
class Request:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int


#: Called after each denoising step with (steps done, steps in all, seconds per step so far);
#: raises Cancelled to stop between steps.
StepHook = Callable[[int, int, float], None]


def generate(checkpoint: Checkpoint, device: str, request: Request, hook: StepHook) -> np.ndarray:
    """(height, width, 3) uint8 RGB."""
    import torch

    pipe = pipeline(checkpoint, device)
    generator = torch.Generator(device="cpu").manual_seed(request.seed)
    started = time.monotonic()

    def on_step_end(_pipe: Any, index: int, _timestep: Any, kwargs: dict[str, Any]
                    ) -> dict[str, Any]:
        done = index + 1
        hook(done, request.steps, (time.monotonic() - started) / done)
        return kwargs

    try:
        with torch.inference_mode():
            out = pipe(prompt=request.prompt, negative_prompt=request.negative_prompt or None,
                       width=request.width, height=request.height,
                       num_inference_steps=request.steps, guidance_scale=request.guidance,
                       generator=generator, output_type="np", callback_on_step_end=on_step_end)
    except Cancelled:
        raise
    except torch.OutOfMemoryError:
        from imgq.ai.errors import OutOfMemory

        raise OutOfMemory(f"not enough GPU memory to generate {request.width}×{request.height}; "
                          "ask for a smaller image") from None
    image = np.asarray(out.images[0])
    result: np.ndarray = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return result
