"""Every operation says the size of what it makes, and says it right: pipelines are refused
at submit from these sizes (IMGQ_MAX_OUTPUT_PIXELS), before any pixel is computed."""

from __future__ import annotations

import pytest

from imgq.domain.pipeline import parse_pipeline
from imgq.errors import OutputTooLarge
from imgq.ops.base import NullContext, Registry, refuse_large_outputs
from imgq.ops.image import Image
from tests.fixtures.images import from_array, pattern

PIPELINES = [
    "resize:width=50", "resize:width=500,height=40,fit=fill,enlarge=true",
    "resize:width=30,height=30,fit=cover", "resize:height=200,enlarge=true,kernel=linear",
    "resize:width=500", "thumbnail:size=40", "thumbnail:size=40,crop=centre",
    "crop:left=3,top=5,width=20,height=11", "rotate:angle=90", "rotate:angle=-90",
    "rotate:angle=180", "rotate:angle=33", "rotate:angle=-121.5", "flip", "flop", "blur",
    "sharpen", "grayscale", "encode:format=webp",
]


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_declared_output_size_is_the_size_made(registry: Registry, pipeline: str) -> None:
    image = Image(vips=from_array(pattern(), "srgb"), source_format="png")
    for step in registry.bind(parse_pipeline(pipeline)):
        declared = step.op.output_size(image.width, image.height, step.params)
        image = step.op.apply(image, step.params, NullContext())
        assert declared == (image.width, image.height), step.name


def test_every_operation_declares_a_size(registry: Registry) -> None:
    for op in registry:
        assert callable(op.output_size)
    upscale = registry.get("upscale")
    if upscale.unavailable_reason is None:
        params = registry.bind(parse_pipeline("upscale:scale=2"))[0].params
        assert upscale.output_size(100, 60, params) == (200, 120)


def test_a_pipeline_making_too_many_pixels_is_refused_naming_the_step(
    registry: Registry,
) -> None:
    steps = registry.bind(parse_pipeline(
        "grayscale|resize:width=65535,height=65535,fit=fill,enlarge=true|rotate:angle=90"))
    with pytest.raises(OutputTooLarge) as caught:
        refuse_large_outputs(steps, "tiny.png", 1, 1, 100_000_000)
    message = caught.value.message
    assert "step 1 (resize)" in message and "65535×65535" in message, message
    assert "IMGQ_MAX_OUTPUT_PIXELS" in message and caught.value.status_code == 413
    refuse_large_outputs(registry.bind(parse_pipeline("resize:width=1000,enlarge=true")),
                         "ok.png", 100, 100, 1_000_000)
