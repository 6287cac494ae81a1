"""EXIF orientation is applied exactly once: on decode, and in the fused resize/thumbnail load."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage
from PIL import ImageOps

from imgq.domain.pipeline import parse_pipeline
from imgq.ops import build_registry
from imgq.ops.base import NullContext
from imgq.ops.image import Image, decode, encode_to_file
from tests.fixtures.images import (
    EXIF_ORIENTATION,
    HEIGHT,
    WIDTH,
    from_pil,
    psnr,
    to_array,
    write_exif_jpeg,
)

ORIENTATIONS = range(1, 9)
LANCZOS = PILImage.Resampling.LANCZOS


def _upright(path: Path) -> PILImage.Image:
    """The reference: Pillow applying the orientation tag."""
    with PILImage.open(path) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


def _upright_size(orientation: int) -> tuple[int, int]:
    return (HEIGHT, WIDTH) if orientation >= 5 else (WIDTH, HEIGHT)


def _resize_step(text: str):  # type: ignore[no-untyped-def]
    (bound,) = build_registry().bind(parse_pipeline(text))
    return bound


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_decode_applies_exif_orientation_once(tmp_path: Path, orientation: int) -> None:
    path = write_exif_jpeg(tmp_path / "photo.jpg", orientation)
    image = decode(path, "jpeg")
    assert (image.width, image.height) == _upright_size(orientation)
    assert psnr(to_array(image), from_pil(_upright(path))) >= 38.0


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("fused", [True, False], ids=["fused-load", "decode-then-resize"])
def test_resize_of_an_exif_rotated_jpeg_is_upright(
    tmp_path: Path, orientation: int, fused: bool
) -> None:
    path = write_exif_jpeg(tmp_path / "photo.jpg", orientation, 192, 128)
    step = _resize_step("resize:width=40")
    if fused:
        image = step.op.load(path, "jpeg", step.params)
        assert image is not None
    else:
        image = step.op.apply(decode(path, "jpeg"), step.params, NullContext())
    upright = _upright(path)
    expected = upright.resize((40, round(40 * upright.height / upright.width)), LANCZOS)
    assert (image.width, image.height) == expected.size
    assert psnr(to_array(image), from_pil(expected)) >= 30.0


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("fused", [True, False], ids=["fused-load", "decode-then-thumbnail"])
def test_thumbnail_of_an_exif_rotated_jpeg_is_upright(
    tmp_path: Path, orientation: int, fused: bool
) -> None:
    path = write_exif_jpeg(tmp_path / "photo.jpg", orientation, 192, 128)
    step = _resize_step("thumbnail:size=48,crop=centre")
    image = (
        step.op.load(path, "jpeg", step.params)
        if fused
        else step.op.apply(decode(path, "jpeg"), step.params, NullContext())
    )
    assert image is not None
    expected = ImageOps.fit(_upright(path), (48, 48), LANCZOS)
    assert psnr(to_array(image), from_pil(expected)) >= 28.0


@pytest.mark.parametrize("orientation", [6, 8])
@pytest.mark.parametrize("fused", [True, False], ids=["fused-load", "decode-then-resize"])
def test_written_file_keeping_metadata_is_not_rotated_again(
    tmp_path: Path, orientation: int, fused: bool
) -> None:
    path = write_exif_jpeg(tmp_path / "photo.jpg", orientation, 192, 128)
    steps = build_registry().bind(
        parse_pipeline("resize:width=40|encode:format=jpeg,keep_metadata=true")
    )
    image: Image | None = steps[0].op.load(path, "jpeg", steps[0].params) if fused else None
    if image is None:
        image = steps[0].op.apply(decode(path, "jpeg"), steps[0].params, NullContext())
    image = steps[1].op.apply(image, steps[1].params, NullContext())
    out = tmp_path / "out.jpg"
    encode_to_file(image, out)
    with PILImage.open(out) as written:
        assert written.getexif().get(EXIF_ORIENTATION, 1) == 1
        assert written.size == (40, 60)
        viewed = from_pil(ImageOps.exif_transpose(written).convert("RGB"))
    expected = from_pil(_upright(path).resize((40, 60), LANCZOS))
    # JPEG at quality 85 with halved chroma costs PSNR on this small sharp pattern; the image
    # turned the wrong way scores about 10 dB.
    assert psnr(viewed, expected) >= 20.0
    assert psnr(viewed, expected) > psnr(viewed[::-1, ::-1], expected) + 6
