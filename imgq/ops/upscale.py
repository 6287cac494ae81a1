"""upscale: AI super-resolution (Real-ESRGAN, DAT light, or a model from IMGQ_AI_MODELS_DIR).

The model list is the shipped super-resolution models whose weights are installed, then the
runnable files of the models folder; it is read again whenever the folder changes (each file
is inspected once, see imgq.ai.models_dir), so a dropped-in model is offered without a restart.
Nothing here imports a model runtime: the API validates and lists this step without one; a
shipped model is offered when its weights and one of its runtimes are installed.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, create_model, model_validator

from imgq.ai.catalog import find_descriptor
from imgq.ai.cpu_nets import unavailable_reason
from imgq.ai.descriptors import SHIPPED, ModelDescriptor
from imgq.ai.costs import Estimate, cost_key, covered_pixels, estimate
from imgq.ai.remote import NOT_ESTIMATED
from imgq.ai.estimate import describe_estimate
from imgq.errors import ImageTooLarge
from imgq.ops.ai_support import (
    AIConfig,
    from_array,
    staged,
    stopping_as_the_item_asks,
    to_array,
)
from imgq.ops.base import Operation, Params, StepContext
from imgq.ops.image import Image
from imgq.ops.remote import AIOperation, run_remote, serving

log = logging.getLogger(__name__)

DEFAULT_MODEL = "realesrgan-x4plus"
DEFAULT_SCALE = 4
MIN_RECORDED_PIXELS = 48 * 48  # smaller runs say little about the cost per pixel


def installed(descriptor: ModelDescriptor) -> bool:
    """Whether a shipped model can run here: its weight files and a runtime for it."""
    return unavailable_reason(descriptor) is None


def shipped_choices() -> dict[str, int]:
    """Installed shipped SR models, name → scale. DAT ×4 before ×2, so that a client taking the
    first "detailed" model of the list (the web page does) can ask for any scale with it."""
    models = [d for d in SHIPPED if d.purpose == "sr" and installed(d)]
    models.sort(key=lambda d: (d.architecture == "DAT", -d.scale if d.architecture == "DAT" else 0))
    return {d.name: d.scale for d in models}


def user_choices(models_dir: Path | None) -> dict[str, int]:
    """Runnable models of the folder, name → scale; broken files are left out (GET /v1/models
    lists them with their error)."""
    if models_dir is None or not Path(models_dir).is_dir():
        return {}
    from imgq.ai.models_dir import scan_models_dir

    return {e.name: e.scale or 1 for e in scan_models_dir(models_dir) if e.descriptor is not None}


class UpscaleParamsBase(Params):
    """The checks; the fields' choices are made per list of models by params_model()."""

    scale: int = DEFAULT_SCALE
    model: str = DEFAULT_MODEL
    model_scales: ClassVar[dict[str, int]] = {}

    @model_validator(mode="before")
    @classmethod
    def _scale_for_model(cls, data: Any) -> Any:
        """Without a scale, a model smaller than ×4 upscales at its own scale."""
        if isinstance(data, dict) and data.get("scale") is None:
            model_scale = cls.model_scales.get(str(data.get("model", DEFAULT_MODEL)), DEFAULT_SCALE)
            data = {**data, "scale": min(DEFAULT_SCALE, model_scale)}
        return data

    @model_validator(mode="after")
    def _scale_fits_model(self) -> UpscaleParamsBase:
        model, scale = self.model, self.scale
        if scale > self.model_scales.get(model, DEFAULT_SCALE):
            raise ValueError(f"model {model} upscales up to ×{self.model_scales[model]}, "
                             f"not ×{scale}; pick a ×{scale} model or a smaller scale")
        return self


@functools.lru_cache(maxsize=16)
def params_model(choices: tuple[tuple[str, int], ...]) -> type[Params]:
    names = tuple(name for name, _ in choices) or (DEFAULT_MODEL,)
    default = DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]
    model_choice: Any = Literal[names]
    model = create_model(
        "UpscaleParams", __base__=UpscaleParamsBase,
        scale=(Literal[2, 3, 4], Field(
            DEFAULT_SCALE, description="Output size ÷ input size. A ×4 model asked for ×2 or ×3 "
            "runs at ×4, then a high-quality downscale. Default 4, or the model's own scale "
            "when that is smaller.")),
        model=(model_choice, Field(
            default, description="realesrgan-x4plus: photos (Real-ESRGAN, standard); "
            "realesrgan-x4plus-anime: drawings; realesr-animevideov3: fast, compact; "
            "dat-light-x2/x3/x4: transformer, detailed; other names: models from the server's "
            "models folder or served by a remote endpoint (GET /v1/models).")),
        tile=(int, Field(
            0, ge=0, le=4096, description="Tile side in pixels; 0 chooses it from free memory. "
            "Tiles overlap and are blended without seams.")),
    )
    model.model_scales = dict(choices)
    return model


class Upscale(AIOperation):
    name = "upscale"
    summary = ("AI super-resolution ×2/×3/×4 (Real-ESRGAN, DAT light, or your own model). "
               "Alpha, grey and 16-bit are kept. Runs on the GPU queue.")
    resource = "gpu"
    concurrent = True  # items in flight share the loaded model and its batches

    def __init__(self, config: AIConfig | None = None) -> None:
        super().__init__(config)
        self.unavailable_reason = self._problem()  # type: ignore[misc]

    def _problem(self) -> str | None:
        if not self.choices():
            reason = unavailable_reason(SHIPPED.get(DEFAULT_MODEL))
            return (f"no upscaling model can run here ({reason}); see docs/ai.md, or put a "
                    "model in IMGQ_AI_MODELS_DIR")
        return None

    def choices(self) -> dict[str, int]:
        remote = {name: e.scale for name, e in self.config.remote_for(self.name).items()}
        return {**shipped_choices(), **user_choices(self.config.models_dir), **remote}

    @property
    def params_model(self) -> type[Params]:  # type: ignore[override]
        return params_model(tuple(self.choices().items()))

    # -- the estimate, and an operator's cap ---------------------------------------------------
    def descriptor(self, model: str) -> ModelDescriptor:
        return find_descriptor(model, self.config.models_dir)

    def estimate(self, params: Any, width: int, height: int) -> Estimate:
        """Seconds this step will take here, from the costs measured on this machine."""
        config = self.config
        if serving(config, self.name, params.model):
            return Estimate(0.0, NOT_ESTIMATED)
        device = "cuda" if config.runs_on_cuda() else "cpu"
        return estimate(config.costs(), self.descriptor(params.model), width, height, device,
                        config.threads)

    def name_suffix(self, params: Any) -> str:
        return f"@{params.scale}x"

    def refuse_if_too_large(self, params: Any, width: int, height: int, name: str) -> None:
        """ImageTooLarge past the operator's AI cap, naming it, the size and the estimate."""
        config = self.config
        if serving(config, self.name, params.model):
            return  # the endpoint's own limits apply
        pixels, on_cuda = width * height, config.runs_on_cuda()
        limit = config.max_pixels_gpu if on_cuda else config.max_pixels_cpu
        if not limit or pixels <= limit:
            return
        variable = "IMGQ_AI_MAX_PIXELS_GPU" if on_cuda else "IMGQ_AI_MAX_PIXELS"
        seconds = self.estimate(params, width, height).seconds
        raise ImageTooLarge(
            f"{name}: {width}×{height} is {pixels:,} pixels, more than the limit of {limit:,} "
            f"pixels this server's operator set for AI upscaling on its "
            f"{'GPU' if on_cuda else 'CPU'} ({variable}); with {params.model} it would take "
            f"{describe_estimate(seconds)} here. Send a smaller image or resize it first",
            file=name, limit=limit, estimated_seconds=round(seconds, 1))

    def output_size(self, width: int, height: int, params: Any) -> tuple[int, int]:
        return width * int(params.scale), height * int(params.scale)

    # -- running ------------------------------------------------------------------------------
    def apply(self, image: Image, params: Any, ctx: StepContext) -> Image:
        from imgq.ai.upscale import UpscaleOptions, Upscaler

        config = self.config
        served = serving(config, self.name, params.model)
        if served is not None:
            result = run_remote(config, served, self.name, params.model_dump(mode="json"), ctx,
                                image)
            return image.with_vips(_at_scale(result, image, params.scale, served.endpoint.scale))
        self.refuse_if_too_large(params, image.width, image.height, "the image")
        prefix = f"upscale ×{params.scale} ({params.model})"
        ctx.progress(0.0, f"{prefix}: loading the model")
        with stopping_as_the_item_asks(ctx):
            upscaler = Upscaler(UpscaleOptions(
                model=params.model, scale=params.scale, tile=params.tile or config.tile or None,
                device=config.device, precision=config.precision, models_dir=config.models_dir,
                compile_model=config.compile, share_batches=config.in_flight() > 1,
                threads=config.threads,
                estimated_seconds=self.estimate(params, image.width, image.height).seconds))
            # What the estimate stands for: the image's way into the model and back out.
            started, cpu = time.perf_counter(), time.process_time()
            source = to_array(image)
            result = upscaler.run(source.array, staged(ctx, prefix), ctx.should_abort)
            out = from_array(image, result, source.icc)
            self._record(image, params, time.perf_counter() - started,
                         time.process_time() - cpu)
        return out

    def _record(self, image: Image, params: Any, seconds: float, cpu_seconds: float) -> None:
        """Feed the run's time to this machine's costs (default tiles only: they are what
        the estimates assume). The CPU seconds too where they are this item's alone: on the
        CPU, one item at a time in the process."""
        config = self.config
        if params.tile or config.tile:
            return
        descriptor = self.descriptor(params.model)
        pixels = covered_pixels(image.width, image.height, descriptor)
        if pixels < MIN_RECORDED_PIXELS:
            return
        on_cuda = config.runs_on_cuda()
        alone = not on_cuda and config.in_flight() == 1
        config.costs().record(cost_key(descriptor, "cuda" if on_cuda else "cpu", config.threads),
                              pixels, seconds, cpu_seconds if alone else None)


def _at_scale(result: Any, image: Image, scale: int, model_scale: int) -> Any:
    """A remote model's result at the scale asked (a ×4 model asked for ×2 is resized down,
    as a local one is)."""
    width, height = image.width * scale, image.height * scale
    if (result.width, result.height) == (width, height) or scale == model_scale:
        return result
    return result.resize(width / result.width, vscale=height / result.height,
                         kernel="lanczos3")


def operations(config: AIConfig | None = None) -> list[Operation]:
    return [Upscale(config)]
