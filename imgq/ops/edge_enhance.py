"""edge_enhance: Pillow's EDGE_ENHANCE (or EDGE_ENHANCE_MORE) 3×3 kernel."""

from __future__ import annotations

from pydantic import Field

from imgq.ops._filters import kernel3x3
from imgq.ops.base import Operation, Params, StepContext
from imgq.ops.image import Image

EDGE_ENHANCE = ([-1, -1, -1, -1, 10, -1, -1, -1, -1], 2)
EDGE_ENHANCE_MORE = ([-1, -1, -1, -1, 9, -1, -1, -1, -1], 1)


class EdgeEnhanceParams(Params):
    more: bool = Field(False, description="Stronger enhancement, as Pillow's EDGE_ENHANCE_MORE.")


class EdgeEnhance(Operation):
    name = "edge_enhance"
    summary = "Enhance edges (Pillow's EDGE_ENHANCE kernel); alpha is left as it is."
    params_model = EdgeEnhanceParams

    def margin(self, params: EdgeEnhanceParams) -> int:
        return 1  # a 3×3 kernel

    def apply(self, image: Image, params: EdgeEnhanceParams, ctx: StepContext) -> Image:
        weights, scale = EDGE_ENHANCE_MORE if params.more else EDGE_ENHANCE
        return kernel3x3(image, weights, scale=scale)


OPERATIONS = [EdgeEnhance()]
