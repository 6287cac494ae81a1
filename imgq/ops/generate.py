"""generate: text-to-image with a Stable Diffusion checkpoint the operator installs
(imgq/ai/generate.py: a diffusers folder or a single .safetensors file), as the first step of a job sent with no files.

The prompt is refined by rules (imgq/ops/prompts.py) unless `refine` is false; the result's
details carry the model, seed, steps, guidance and the prompt actually used. Progress is
reported after every denoising step with the time left; cancel and the time limit stop it
between steps. Resource "gpu": on a CPU one step of a 512×512 Stable Diffusion 1.5 takes tens of
seconds, so after the first step a run that would outlast the item's time limit stops at once
with the estimate, instead of failing at the limit.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pyvips
from pydantic import Field

from imgq.ai.costs import MEASURED, CostBook, Estimate
from imgq.ai.remote import NOT_ESTIMATED
from imgq.errors import ImgqError, TimeLimitExceeded
from imgq.ops.ai_support import AIConfig, missing_packages, stopping_as_the_item_asks
from imgq.ops.base import Operation, Params, StepContext
from imgq.ops.image import Image
from imgq.ops.prompts import PromptRules, refine
from imgq.ops.remote import AIOperation, Served, run_remote, serving


UNMEASURED = "not measured here yet: the first image of this checkpoint measures it"


class GenerateParams(Params):
    prompt: str = Field(min_length=1, max_length=2000, description="What to draw.")
    negative_prompt: str | None = Field(
        None, max_length=2000, description="What to avoid; by default the prompt rules' "
        "negative prompt when refine is on, none otherwise.")
    width: int = Field(512, ge=64, le=2048, multiple_of=8, description="Width in pixels.")
    height: int = Field(512, ge=64, le=2048, multiple_of=8, description="Height in pixels.")
    steps: int = Field(30, ge=1, le=150, description="Denoising steps.")
    guidance: float = Field(7.5, ge=0.0, le=30.0, description="Classifier-free guidance scale.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Random seed; chosen and "
                             "reported in the result's details when not given.")
    model: str | None = Field(None, max_length=200, description="A checkpoint in "
                              "<models dir>/generate/ (a folder's name, or a .safetensors "
                              "file's name without the extension), or a model served by a "
                              "remote endpoint (GET /v1/operations lists them under remote); "
                              "the first local one by name when not given, else the first "
                              "remote one.")
    refine: bool = Field(True, description="Add quality and style terms and the default "
                         "negative prompt by the prompt rules (IMGQ_AI_PROMPT_RULES).")


def _problem(config: AIConfig) -> str | None:
    missing = missing_packages("torch", "diffusers", "transformers")
    if missing:
        return (f"text-to-image needs {', '.join(missing)}: pip install 'imgq[generate]' "
                "(torch, diffusers, transformers), then restart")
    from imgq.ai.generate import no_model_message, scan

    installed, unusable = scan(config.models_dir)
    return None if installed else no_model_message(config.models_dir, unusable)


class Generate(AIOperation):
    name = "generate"
    summary = ("Text-to-image (Stable Diffusion, with a checkpoint in the models folder): a new "
               "image from a prompt, refined by the prompt rules. First step of a job with no "
               "files.")
    params_model = GenerateParams
    resource = "gpu"
    makes_image = True

    def __init__(self, config: AIConfig | None = None, rules: Path | None = None) -> None:
        super().__init__(config or AIConfig.from_environment())
        self._rules = PromptRules.load(rules)
        self._local_problem = _problem(self.config)
        remote = bool(self.config.remote_for(self.name))
        self.unavailable_reason = None if remote else self._local_problem  # type: ignore[misc]
        # every step goes to an endpoint (no checkpoint here): items in flight wait side by side
        self.concurrent = remote and self._local_problem is not None  # type: ignore[misc]

    def _served(self, model: str | None) -> Served | None:
        """The endpoint of the model asked for; with none asked, the first remote model when
        no checkpoint is installed here."""
        if model is None and self._local_problem is not None:
            model = next(iter(self.config.remote_for(self.name)), None)
        return serving(self.config, self.name, model)

    def output_size(self, width: int, height: int, params: GenerateParams) -> tuple[int, int]:
        return params.width, params.height  # it makes its image: no input size counts

    # -- the estimate: from this machine's earlier images of the same checkpoint --------------
    def estimate(self, params: GenerateParams, width: int, height: int) -> Estimate:
        """Seconds to make the image here: a line through the earlier runs of the checkpoint
        on this machine over pixels × steps (the UNet's work; the decode is in the fixed part).
        Before its first image, no figure: the first run's progress says the time left."""
        from imgq.ai import generate as sd

        if self._served(params.model) is not None:
            return Estimate(0.0, NOT_ESTIMATED)
        name = params.model  # only the default checkpoint needs the folder looked at
        if name is None:
            try:
                name = sd.find(self.config.models_dir, None).name
            except ImgqError:
                return Estimate(0.0, UNMEASURED)
        fit = self.config.costs().fit(self._cost_key(name))
        line = fit.line() if fit is not None else None
        if line is None:
            return Estimate(0.0, UNMEASURED)
        overhead, per_unit = line
        return Estimate(overhead + per_unit * params.width * params.height * params.steps,
                        MEASURED)

    def _cost_key(self, checkpoint: str) -> str:
        device = "cuda" if self._on_cuda() else "cpu"
        return CostBook.key(f"generate:{checkpoint}", f"{device}/{self.config.threads}t")

    def _on_cuda(self) -> bool:
        return self.config.runs_on_cuda() and self.config.device != "cpu"

    def create(self, params: GenerateParams, ctx: StepContext) -> Image:
        from imgq.ai import generate as sd

        refined = (refine(params.prompt, params.negative_prompt, self._rules) if params.refine
                   else None)
        served = self._served(params.model)
        if served is not None:
            return self._remote(params, refined.prompt if refined else params.prompt,
                                (refined.negative_prompt if refined else params.negative_prompt),
                                served, ctx)
        checkpoint = sd.find(self.config.models_dir, params.model)
        device = "cuda" if self._on_cuda() else "cpu"
        request = sd.Request(
            prompt=refined.prompt if refined else params.prompt,
            negative_prompt=(refined.negative_prompt if refined else params.negative_prompt) or "",
            width=params.width, height=params.height, steps=params.steps,
            guidance=params.guidance,
            seed=params.seed if params.seed is not None else secrets.randbelow(2**32))
        ctx.progress(0.0, f"generate: loading {checkpoint.name}")
        started = time.monotonic()
        with stopping_as_the_item_asks(ctx):
            pixels = sd.generate(checkpoint, device, request, _step_hook(ctx))
        self.config.costs().record(self._cost_key(checkpoint.name),
                                   request.width * request.height * request.steps,
                                   time.monotonic() - started)
        image = Image(pyvips.Image.new_from_array(pixels, interpretation="srgb"), "png")
        image.details.update({
            "model": checkpoint.name, "seed": request.seed, "steps": request.steps,
            "guidance": request.guidance, "width": request.width, "height": request.height,
            "prompt": params.prompt, "prompt_used": request.prompt,
            "negative_prompt": request.negative_prompt, "device": device})
        return image


    def _remote(self, params: GenerateParams, prompt: str, negative: str | None,
                served: Served, ctx: StepContext) -> Image:
        """Generated by the endpoint, from the prompt as refined here."""
        seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
        sent = {**params.model_dump(mode="json"), "prompt": prompt, "negative_prompt": negative,
                "seed": seed, "refine": False}
        pixels = run_remote(self.config, served, self.name, sent, ctx)
        image = Image(pixels, "png")
        image.details.update({
            "model": served.name, "seed": seed, "steps": params.steps,
            "guidance": params.guidance, "width": pixels.width, "height": pixels.height,
            "prompt": params.prompt, "prompt_used": prompt, "negative_prompt": negative or "",
            "device": "remote", "served_by": served.endpoint.where()})
        return image


def _step_hook(ctx: StepContext) -> Callable[[int, int, float], None]:
    def hook(done: int, total: int, per_step: float) -> None:
        left = (total - done) * per_step
        ctx.progress(done / total, f"generate: step {done}/{total} · ~{left:.0f} s left")
        deadline = getattr(ctx, "deadline", None)
        if done == 1 and isinstance(deadline, float) and time.monotonic() + left > deadline:
            raise TimeLimitExceeded(
                f"generating would take about {per_step * total:.0f} s here ({per_step:.1f} s "
                f"per step × {total} steps), more than the item's time limit allows; ask for "
                "fewer steps or a smaller image, or run it on a GPU worker")
        ctx.check()

    return hook


def operations(config: AIConfig | None = None, rules: Path | None = None) -> list[Operation]:
    return [Generate(config, rules)]
