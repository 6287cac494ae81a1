"""encode: sets the output options only; the files it leads to hold the same pixels."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import pyvips

from imgq.ops.image import EncodeOptions, encode_to_file, sniff
from tests.fixtures.images import SAMPLES, psnr, to_array

if TYPE_CHECKING:
    from tests.unit.ops.conftest import RunPipeline


def test_encode_sets_the_options_and_leaves_the_pixels(run: RunPipeline) -> None:
    image = SAMPLES["rgba"].image()
    result = run("encode:format=webp,quality=70,keep_metadata=true", image)
    assert result.vips is image.vips
    assert result.encode == EncodeOptions(
        format="webp", quality=70, lossless=False, keep_metadata=True
    )
    assert image.encode == EncodeOptions()  # the input is not changed in place
    assert result.output_format() == "webp"


def test_encode_without_a_format_keeps_the_input_format(run: RunPipeline) -> None:
    image = SAMPLES["rgb"].image(source_format="jpeg")
    assert run("encode:quality=60", image).output_format() == "jpeg"


def test_encode_accepts_jpg_and_tif_as_names(run: RunPipeline) -> None:
    image = SAMPLES["rgb"].image()
    assert run("encode:format=jpg", image).output_format() == "jpeg"
    assert run("encode:format=TIF", image).output_format() == "tiff"


@pytest.mark.parametrize(
    ("step", "min_psnr"),
    [
        ("encode:format=png", float("inf")),
        ("encode:format=tiff", float("inf")),
        ("encode:format=webp,lossless=true", float("inf")),
        # Lossy codecs halve the chroma: this small, sharp, noisy pattern suffers from it.
        ("encode:format=webp,quality=90", 26.0),
        ("encode:format=jpeg,quality=95", 26.0),
        ("encode:format=avif,quality=80", 26.0),
        ("encode:format=gif", 20.0),
    ],
)
def test_encoded_file_has_the_format_and_the_pixels(
    run: RunPipeline, tmp_path: Path, step: str, min_psnr: float
) -> None:
    source = SAMPLES["rgb"]
    image = run(step, source.image())
    path = tmp_path / "out"
    info = encode_to_file(image, path)
    assert sniff(path.read_bytes()[:64]) == info.format == image.output_format()
    written = to_array(pyvips.Image.new_from_file(str(path)))
    assert psnr(written[..., :3], source.array()) >= min_psnr


def test_lower_quality_makes_smaller_files(run: RunPipeline, tmp_path: Path) -> None:
    image = SAMPLES["rgb"].image(192, 128)
    sizes = []
    for quality in (30, 90):
        path = tmp_path / f"q{quality}.jpg"
        sizes.append(
            encode_to_file(run(f"encode:format=jpeg,quality={quality}", image), path).bytes
        )
    assert sizes[0] < sizes[1]


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_encode_to_png_keeps_alpha_16_bit_and_grey(
    run: RunPipeline, tmp_path: Path, sample: str
) -> None:
    source = SAMPLES[sample]
    path = tmp_path / "out.png"
    encode_to_file(run("encode:format=png", source.image()), path)
    written = pyvips.Image.new_from_file(str(path))
    assert (written.bands, written.format, written.interpretation) == (
        source.bands,
        source.format,
        source.interpretation,
    )
    assert np.array_equal(to_array(written), source.array())
