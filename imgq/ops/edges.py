"""edges: find edges with Pillow's FIND_EDGES 3×3 Laplacian kernel."""

from __future__ import annotations

from imgq.ops._filters import kernel3x3
from imgq.ops.base import NoParams, Operation, StepContext
from imgq.ops.image import Image

FIND_EDGES = [-1, -1, -1, -1, 8, -1, -1, -1, -1]


class Edges(Operation):
    name = "edges"
    summary = "Find edges (a 3×3 Laplacian like Pillow's FIND_EDGES); flat areas turn black."

    def margin(self, params: NoParams) -> int:
        return 1  # a 3×3 kernel

    def apply(self, image: Image, params: NoParams, ctx: StepContext) -> Image:
        return kernel3x3(image, FIND_EDGES)


OPERATIONS = [Edges()]
