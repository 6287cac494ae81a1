"""Text-to-image with diffusers, from checkpoints the operator puts in `<models dir>/generate/`.

A checkpoint is either
- a diffusers folder `<name>/` (model_index.json with unet/, vae/, text_encoder/, tokenizer/,
  scheduler/: what `save_pretrained` writes, a Stable Diffusion 1.x/2.x or SDXL pipeline), or
- a single file `<name>.safetensors` in the original (CompVis/Stability) layout, as model sites
  distribute them. Such a file holds only weights: diffusers also needs the components' configs
  and the tokenizer, which it would fetch from the Hugging Face hub. Here they come from a folder
  per model family, `configs/<family>/` beside the files (the family as diffusers names it when
  it reads the file's tensor names: `v1`, `v2`, `xl_base`), holding the non-weight files of that
  family's reference diffusers repository. imgq ships none of them: the tokenizer files cannot be
  derived from a checkpoint, so the operator fetches that folder anyway; docs/ai.md says how.

Nothing is ever downloaded: the hub is switched off (HF_HUB_OFFLINE) before diffusers is imported
and every load passes local_files_only, a single file always with its local config folder (without
one diffusers would go to the hub even with local_files_only).

One pipeline per (checkpoint, device) stays loaded in each worker process.
"""

from __future__ import annotations

import json
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
CONFIGS = "configs"
SINGLE_FILE_SUFFIX = ".safetensors"
PACKAGES = ("torch", "diffusers", "transformers")

#: The single-file families generate runs: diffusers' name → (what people call it, the
#: reference repository whose configs and tokenizer go in configs/<family>/).
FAMILIES = {
    "v1": ("Stable Diffusion 1.x", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    "v2": ("Stable Diffusion 2.x", "stabilityai/stable-diffusion-2-1"),
    "xl_base": ("SDXL", "stabilityai/stable-diffusion-xl-base-1.0"),
}
#: Components a single file never holds and that the config folder need not describe.
_NOT_IN_FILE = {"safety_checker", "feature_extractor", "image_encoder"}

_pipelines: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Checkpoint:
    name: str
    path: Path
    #: For a single file: the folder with its components' configs and tokenizer.
    config: Path | None = None


@dataclass(frozen=True)
class Unusable:
    """A file in the generate folder that cannot be loaded as it is, and why."""

    name: str
    path: Path
    reason: str


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers reads it
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def scan(models_dir: Path | None) -> tuple[list[Checkpoint], list[Unusable]]:
    """The checkpoints installed, in name order, and the files that cannot be used and why."""
    if models_dir is None or not (models_dir / FOLDER).is_dir():
        return [], []
    root = models_dir / FOLDER
    found: dict[str, Checkpoint] = {}
    unusable: list[Unusable] = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and (entry / "model_index.json").is_file():
            found[entry.name] = Checkpoint(entry.name, entry)
    for entry in sorted(root.iterdir()):
        if entry.suffix == ".ckpt":
            unusable.append(Unusable(entry.stem, entry, (
                f"{entry.name} is a pickled checkpoint, which can run code when loaded; imgq "
                f"loads only {SINGLE_FILE_SUFFIX} files: use the model's .safetensors "
                "download instead")))
        if entry.suffix != SINGLE_FILE_SUFFIX or not entry.is_file():
            continue
        if entry.stem in found:
            unusable.append(Unusable(entry.stem, entry, (
                f"{entry.name} has the name of the folder {entry.stem}/ beside it, which is "
                "used instead; rename one of them")))
            continue
        config, reason = _config_for(entry, root / CONFIGS)
        if config is None:
            unusable.append(Unusable(entry.stem, entry, reason))
        else:
            found[entry.stem] = Checkpoint(entry.stem, entry, config)
    return [found[name] for name in sorted(found)], unusable


def checkpoints(models_dir: Path | None) -> list[Checkpoint]:
    """The text-to-image checkpoints installed and loadable, in name order."""
    return scan(models_dir)[0]


#: What a whole Stable Diffusion checkpoint holds, by the prefixes of its tensors' names in
#: the original layout: (the part, the prefixes any of which it is stored under).
_PARTS = (("the UNet", ("model.diffusion_model.",)),
          ("the VAE", ("first_stage_model.",)),
          ("the text encoder", ("cond_stage_model.", "conditioner.embedders.")))


def _header(path: Path) -> dict[str, Any]:
    """The file's tensors by name, each with only its .shape (the header; no weights read)."""
    from safetensors import safe_open

    @dataclass(frozen=True)
    class Shape:
        shape: tuple[int, ...]

    with safe_open(str(path), framework="pt") as tensors:
        return {key: Shape(tuple(tensors.get_slice(key).get_shape())) for key in tensors.keys()}


def family(header: dict[str, Any]) -> str:
    """diffusers' name for the model family of a single-file checkpoint, from its tensors'
    names and shapes."""
    _offline()
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    kind: str = infer_diffusers_model_type(header)  # type: ignore[no-untyped-call]
    return kind


def _config_for(path: Path, configs: Path) -> tuple[Path | None, str]:
    try:
        header = _header(path)
    except ImportError:
        return None, f"{path.name}: reading a single-file checkpoint needs safetensors"
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file is the operator's
        return None, (f"{path.name} is not a readable safetensors checkpoint "
                      f"({type(exc).__name__}: {str(exc)[:200]})")
    lacking = [part for part, prefixes in _PARTS
               if not any(key.startswith(prefixes) for key in header)]
    if lacking:
        # diffusers would call any such file Stable Diffusion 1.x (its fallback).
        return None, (f"{path.name} is not a whole Stable Diffusion checkpoint in the original "
                      f"layout: it lacks {' and '.join(lacking)} (a LoRA, a VAE or a single "
                      f"component belongs elsewhere; put whole checkpoints here)")
    try:
        kind = family(header)
    except ImportError:
        return None, f"{path.name}: reading a single-file checkpoint needs diffusers"
    if kind not in FAMILIES:
        return None, (f"{path.name} is a {kind!r} checkpoint (as diffusers classifies it), not "
                      f"a text-to-image one of the families generate runs: "
                      f"{', '.join(label for label, _ in FAMILIES.values())}")
    label, repo = FAMILIES[kind]
    folder = configs / kind
    fetch = (f"put the configs and tokenizer of {repo} in {folder} (its model_index.json and "
             f"the .json and .txt files of its subfolders, no weights: a few MB; e.g. on a "
             f"machine with internet: hf download {repo} --include '*.json' '*.txt' "
             f"--local-dir {folder}), then restart; see docs/ai.md")
    if not (folder / "model_index.json").is_file():
        return None, (f"{path.name} is a {label} checkpoint; a single file holds only weights, "
                      f"and its configs and tokenizer are missing: {fetch}")
    missing = _missing_parts(folder)
    if missing:
        return None, (f"{path.name} is a {label} checkpoint; its config folder {folder} lacks "
                      f"{', '.join(missing)}: {fetch}")
    return folder, ""


def _missing_parts(folder: Path) -> list[str]:
    """The components named in the folder's model_index.json that have no config there."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"a readable model_index.json ({exc})"]
    missing = []
    for name, value in sorted(index.items()):
        if name.startswith("_") or name in _NOT_IN_FILE:
            continue
        if not isinstance(value, list) or value[0] is None:
            continue
        if not (folder / name).is_dir() or not any((folder / name).glob("*.json")):
            missing.append(f"{name}/")
    return missing


def find(models_dir: Path | None, name: str | None) -> Checkpoint:
    installed, unusable = scan(models_dir)
    for broken in unusable:
        if broken.name == name:  # the operator's to fix, not worth another try
            raise ModelLoadError(broken.reason)
    if not installed:
        raise AIUnavailable(no_model_message(models_dir, unusable))
    if name is None:
        return installed[0]
    for checkpoint in installed:
        if checkpoint.name == name:
            return checkpoint
    raise ModelNotFound(f"no text-to-image model named {name!r}; installed: "
                        f"{', '.join(c.name for c in installed)}")


def no_model_message(models_dir: Path | None, unusable: list[Unusable] | None = None) -> str:
    if unusable:
        return "no text-to-image model can be loaded: " + "; ".join(u.reason for u in unusable)
    where = models_dir / FOLDER if models_dir is not None else f"<IMGQ_MODELS_DIR>/{FOLDER}"
    return (f"no text-to-image model installed: put a Stable Diffusion checkpoint in {where}: "
            f"a single <name>{SINGLE_FILE_SUFFIX} file (with its family's configs in "
            f"{CONFIGS}/, the refusal then says which) or a diffusers folder (model_index.json, "
            f"unet/, vae/, text_encoder/, tokenizer/, scheduler/), then restart; or serve it "
            f"from a remote endpoint (IMGQ_AI_REMOTE_ENDPOINTS); see docs/ai.md")


def _load(checkpoint: Checkpoint, device: str) -> Any:
    _offline()
    try:
        import diffusers
        import torch
        from diffusers import DiffusionPipeline
    except ImportError as exc:
        raise AIUnavailable("text-to-image needs torch, diffusers and transformers: "
                            "pip install 'imgq[generate]'") from exc
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    try:
        if checkpoint.config is None:
            pipe = DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
                str(checkpoint.path), local_files_only=True, dtype=dtype)
        else:
            # The pipeline class the config folder names (StableDiffusionXLPipeline for SDXL).
            index = json.loads((checkpoint.config / "model_index.json").read_text())
            cls = getattr(diffusers, str(index.get("_class_name", "StableDiffusionPipeline")))
            pipe = cls.from_single_file(str(checkpoint.path), config=str(checkpoint.config),
                                        local_files_only=True, dtype=dtype)
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
