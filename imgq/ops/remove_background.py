"""remove_background: U²-Net-p foreground mask (shipped ONNX, onnxruntime).

Resource "cpu": the model always sees a 320×320 copy of the image, so a run costs about a
quarter of a second on one CPU core whatever the image size, and onnxruntime here is the CPU
build. Sending it to the GPU queue would only make it wait for a GPU worker (or, in a fleet
without one, never run).

Output: mode rgba adds the mask as alpha (an existing alpha is multiplied by it); mask returns
the mask alone as a grey image; composite lays the image over a colour, without alpha. Alpha
survives PNG, WebP, AVIF and TIFF; a JPEG input with no later encode step is written as PNG,
and an explicit encode:format=jpeg flattens the result onto white.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import Field

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

#: Output formats that cannot hold alpha.
_NO_ALPHA = frozenset({"jpeg"})


class RemoveBackgroundParams(Params):
    mode: Literal["rgba", "mask", "composite"] = Field(
        "rgba", description="rgba: the image with a transparent background; mask: the "
        "foreground mask alone (white = foreground); composite: the image over `background`.")
    background: str = Field(
        "#ffffff", pattern=r"^#[0-9a-fA-F]{6}$",
        description="Colour under the foreground in composite mode, as #rrggbb.")


def _weights_problem() -> str | None:
    from imgq.ai.descriptors import SHIPPED

    try:
        path = SHIPPED.get("u2netp").source.location()
    except Exception as exc:  # noqa: BLE001 - the package is missing: say so
        return str(exc)
    return None if path.is_file() else f"the U²-Net-p weights are missing ({path.name})"


class RemoveBackground(AIOperation):
    name = "remove_background"
    summary = ("AI background removal (U²-Net-p): transparent background, the mask alone, or "
               "a composite over a colour. Keep alpha with PNG or WebP output.")
    params_model = RemoveBackgroundParams
    resource = "cpu"

    def __init__(self, config: AIConfig | None = None) -> None:
        super().__init__(config)
        missing = missing_packages("onnxruntime")
        problem = ("onnxruntime is not installed (it comes with imgq: pip install onnxruntime)"
                   if missing else _weights_problem())
        if serving(self.config, self.name, None):
            problem = None  # a remote endpoint serves it: no local model needed
        self.unavailable_reason = problem  # type: ignore[misc]

    def name_suffix(self, params: RemoveBackgroundParams) -> str:
        return "-mask" if params.mode == "mask" else "-nobg"

    def output_size(self, width: int, height: int, params: RemoveBackgroundParams
                    ) -> tuple[int, int]:
        return width, height  # the mask is computed small, then applied at the full size

    def apply(self, image: Image, params: RemoveBackgroundParams, ctx: StepContext) -> Image:
        from imgq.ai.background import remove_background

        config = self.config
        served = serving(config, self.name, None)
        if served is not None:
            out = image.with_vips(run_remote(config, served, self.name,
                                             params.model_dump(mode="json"), ctx, image))
            return _alpha_kept(out, params)
        source = to_array(image)
        top = 65535 / 255 if source.array.dtype.itemsize == 2 else 1.0
        colour = tuple(int(params.background[i:i + 2], 16) * top for i in (1, 3, 5))
        ctx.progress(0.0, f"remove_background ({params.mode}): finding the foreground")
        with stopping_as_the_item_asks(ctx):
            result = remove_background(source.array, params.mode, colour,
                                       gpu=config.device != "cpu" and config.runs_on_cuda())
        return _alpha_kept(from_array(image, result, source.icc), params)


def _alpha_kept(out: Image, params: RemoveBackgroundParams) -> Image:
    """A transparent result of a JPEG is written as PNG, unless an encode step says JPEG."""
    if params.mode == "rgba" and out.encode.format is None and (
            out.output_format() in _NO_ALPHA):
        out = replace(out, encode=replace(out.encode, format="png"))
    return out


def operations(config: AIConfig | None = None) -> list[Operation]:
    return [RemoveBackground(config)]
