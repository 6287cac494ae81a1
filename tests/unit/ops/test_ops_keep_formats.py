"""Alpha, 16-bit and grey survive every operation, in memory and written to PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pyvips

from imgq.ops.base import Registry
from imgq.ops.image import encode_to_file
from tests.fixtures.images import SAMPLES, Sample

if TYPE_CHECKING:
    from tests.unit.ops.conftest import RunPipeline

#: A representative step per operation; a new operation needs an entry here.
STEPS = {
    "blur": "blur:radius=1.5",
    "sharpen": "sharpen",
    "sharpen (unsharp mask)": "sharpen:sigma=1,amount=2",
    "edges": "edges",
    "smooth": "smooth",
    "edge_enhance": "edge_enhance",
    "brightness": "brightness:factor=1.3",
    "contrast": "contrast:factor=1.8",
    "saturation": "saturation:factor=0.4",
    "resize": "resize:width=40",
    "resize (cover)": "resize:width=30,height=30,fit=cover",
    "resize (enlarge)": "resize:width=120,enlarge=true",
    "thumbnail": "thumbnail:size=32,crop=attention",
    "crop": "crop:left=4,top=4,width=20,height=10",
    "rotate": "rotate:angle=90",
    "rotate (free)": "rotate:angle=17",
    "flip": "flip",
    "flop": "flop",
    "grayscale": "grayscale",
    "encode": "encode:format=png",
    "remove_background": "remove_background",
    "style_transfer": "style_transfer:style=7",
}
#: Operations whose point is to change what these tests check.
CHANGES_COLOUR = {"grayscale"}
ADDS_ALPHA = {"remove_background"}
#: Operations whose result is in colour whatever the input (a grey input comes out RGB).
MAKES_COLOUR = {"style_transfer"}


def _has_alpha(sample: Sample, step: str) -> bool:
    return sample.alpha or step.split(":")[0] in ADDS_ALPHA


def _expected(sample: Sample, step: str) -> tuple[int, str, str]:
    if step.split(":")[0] in ADDS_ALPHA and not sample.alpha:
        return sample.bands + 1, sample.format, sample.interpretation
    if step.split(":")[0] in MAKES_COLOUR and sample.grey:
        colour = "rgb16" if sample.sixteen_bit else "srgb"
        return 3 + int(sample.alpha), sample.format, colour
    if step.split(":")[0] in CHANGES_COLOUR and not sample.grey:
        grey = "grey16" if sample.sixteen_bit else "b-w"
        return 1 + int(sample.alpha), sample.format, grey
    return sample.bands, sample.format, sample.interpretation


def test_every_cpu_operation_has_a_step_here(registry: Registry) -> None:
    covered = {step.split(":")[0] for step in STEPS.values()}
    runnable = {op.name for op in registry if op.resource == "cpu" and not op.unavailable_reason}
    missing = runnable - covered
    assert not missing, f"add a step for {sorted(missing)} to STEPS"


@pytest.mark.parametrize("step", list(STEPS.values()), ids=list(STEPS))
@pytest.mark.parametrize("sample", list(SAMPLES.values()), ids=list(SAMPLES))
def test_operation_keeps_bands_sample_format_and_interpretation(
    run: RunPipeline, sample: Sample, step: str
) -> None:
    result = run(step, sample.image())
    vips = result.vips
    assert (vips.bands, vips.format, vips.interpretation) == _expected(sample, step)
    assert result.has_alpha == _has_alpha(sample, step)


@pytest.mark.parametrize("step", list(STEPS.values()), ids=list(STEPS))
@pytest.mark.parametrize(
    "sample", [SAMPLES["rgba16"], SAMPLES["grey_alpha"]], ids=["rgba16", "grey_alpha"]
)
def test_operation_result_written_as_png_keeps_alpha_16_bit_and_grey(
    run: RunPipeline, tmp_path: Path, sample: Sample, step: str
) -> None:
    result = run(f"{step}|encode:format=png", sample.image())
    path = tmp_path / "out.png"
    info = encode_to_file(result, path)
    written = pyvips.Image.new_from_file(str(path))
    assert (written.bands, written.format, written.interpretation) == _expected(sample, step)
    assert (info.width, info.height) == (result.width, result.height)
