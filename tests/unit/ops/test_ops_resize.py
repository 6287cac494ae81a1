"""resize and thumbnail: sizes, fits, never enlarging, alpha, and the fused shrink-on-load."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import pyvips
from PIL import Image as PILImage

from imgq.ops import build_registry
from imgq.ops.base import NullContext
from imgq.ops.image import Image, decode
from tests.fixtures.images import (
    HEIGHT,
    SAMPLES,
    WIDTH,
    from_array,
    from_pil,
    psnr,
    to_array,
    to_pil,
    visible,
    write_jpeg,
)

if TYPE_CHECKING:
    from tests.unit.ops.conftest import RunPipeline

LANCZOS = PILImage.Resampling.LANCZOS


def _size(image: Image) -> tuple[int, int]:
    return image.width, image.height


@pytest.mark.parametrize(
    ("step", "size"),
    [
        ("resize:width=48", (48, 32)),
        ("resize:height=16", (24, 16)),
        ("resize:width=48,height=48", (48, 32)),
        ("resize:width=48,height=48,fit=contain", (48, 32)),
        ("resize:width=48,height=48,fit=cover", (48, 48)),
        ("resize:width=48,height=48,fit=fill", (48, 48)),
        ("resize:width=30,fit=cover", (30, 20)),
        ("resize:width=30,fit=fill", (30, 20)),
        ("resize:width=1,height=1", (1, 1)),
        ("resize:width=95", (95, 63)),
    ],
)
def test_resize_gives_the_size_its_fit_implies(
    run: RunPipeline, step: str, size: tuple[int, int]
) -> None:
    assert _size(run(step, SAMPLES["rgb"].image())) == size


@pytest.mark.parametrize(
    "step",
    [
        "resize:width=200",
        "resize:height=65",
        "resize:width=200,height=200",
        "resize:width=200,height=200,fit=cover",
        "resize:width=200,height=200,fit=fill",
        f"resize:width={WIDTH},height={HEIGHT}",
    ],
)
def test_resize_never_enlarges_unless_asked(run: RunPipeline, step: str) -> None:
    image = SAMPLES["rgba"].image()
    result = run(step, image)
    assert _size(result) == (WIDTH, HEIGHT)
    assert np.array_equal(to_array(result), to_array(image))


@pytest.mark.parametrize(
    ("step", "size"),
    [
        ("resize:width=200,height=30,fit=fill", (WIDTH, 30)),
        ("resize:width=40,height=200,fit=fill", (40, HEIGHT)),
        ("resize:width=80,height=80,fit=cover", (80, HEIGHT)),
        ("resize:width=120,height=40,fit=cover", (WIDTH, 40)),
    ],
)
def test_resize_shrinks_only_the_sides_that_are_too_large(
    run: RunPipeline, step: str, size: tuple[int, int]
) -> None:
    assert _size(run(step, SAMPLES["rgb"].image())) == size


def test_resize_enlarges_when_asked(run: RunPipeline) -> None:
    source = SAMPLES["rgb"]
    result = to_array(run("resize:width=192,enlarge=true", source.image()))
    expected = from_pil(to_pil(source.array()).resize((192, 128), LANCZOS))
    # libvips enlarges with a bicubic interpolator whatever the kernel; Pillow with Lanczos.
    assert psnr(result, expected) >= 29.0


@pytest.mark.parametrize(
    ("kernel", "pillow"),
    [
        ("lanczos3", PILImage.Resampling.LANCZOS),
        ("cubic", PILImage.Resampling.BICUBIC),
        ("linear", PILImage.Resampling.BILINEAR),
    ],
)
@pytest.mark.parametrize("sample", ["rgb", "grey"])
def test_resize_matches_pillow(
    run: RunPipeline, kernel: str, pillow: PILImage.Resampling, sample: str
) -> None:
    source = SAMPLES[sample]
    result = to_array(run(f"resize:width=37,kernel={kernel}", source.image()))
    expected = from_pil(to_pil(source.array()).resize((37, 25), pillow))
    assert psnr(result, expected) >= 40.0


def test_resize_cover_crops_around_the_centre(run: RunPipeline) -> None:
    source = SAMPLES["rgb"]
    result = to_array(run("resize:width=32,height=32,fit=cover", source.image()))
    scaled = to_pil(source.array()).resize((48, 32), LANCZOS)
    expected = from_pil(scaled.crop((8, 0, 40, 32)))
    assert psnr(result, expected) >= 40.0


def test_resize_fill_stretches_to_the_box(run: RunPipeline) -> None:
    source = SAMPLES["rgb"]
    result = to_array(run("resize:width=40,height=40,fit=fill", source.image()))
    expected = from_pil(to_pil(source.array()).resize((40, 40), LANCZOS))
    assert psnr(result, expected) >= 38.0


def test_resize_with_nearest_only_picks_existing_pixels(run: RunPipeline) -> None:
    source = SAMPLES["grey"]
    result = to_array(run("resize:width=30,kernel=nearest", source.image()))
    assert set(np.unique(result)) <= set(np.unique(source.array()))


@pytest.mark.parametrize(
    ("deep", "shallow"), [("rgb16", "rgb"), ("grey16", "grey"), ("rgba16", "rgba")]
)
def test_resize_of_16_bit_matches_8_bit(run: RunPipeline, deep: str, shallow: str) -> None:
    result16 = run("resize:width=40", SAMPLES[deep].image())
    assert result16.vips.format == "ushort"
    result8 = to_array(run("resize:width=40", SAMPLES[shallow].image()))
    if SAMPLES[deep].alpha:
        assert psnr(visible(to_array(result16), 65535) / 257, visible(result8)) >= 45.0
    else:
        assert psnr(to_array(result16) / 257, result8) >= 45.0


def _two_tone_rgba(width: int = 48, height: int = 32) -> np.ndarray:
    """Left half transparent red, right half opaque blue."""
    pixels = np.zeros((height, width, 4), np.uint8)
    pixels[..., 0] = 255
    pixels[:, width // 2 :] = [0, 0, 255, 255]
    return pixels


@pytest.mark.parametrize(
    "step",
    [
        "resize:width=12",
        "resize:width=17,height=13,fit=fill",
        "resize:width=96,enlarge=true",
        "thumbnail:size=20",
        "thumbnail:size=16,crop=centre",
    ],
)
def test_resize_of_alpha_images_keeps_hidden_colour_from_bleeding(
    run: RunPipeline, step: str
) -> None:
    image = Image(vips=from_array(_two_tone_rgba(), "srgb"), source_format="png")
    result = to_array(run(step, image))
    visible = result[..., 3] > 0
    assert visible.any() and (result[..., 3] < 255).any()
    assert result[visible][:, 0].max() <= 2  # no red in any pixel that can be seen


def test_resize_of_alpha_keeps_alpha_of_opaque_and_transparent_areas(run: RunPipeline) -> None:
    result = to_array(run("resize:width=24", SAMPLES["rgba"].image()))
    assert result[:, 0, 3].max() == 0 and result[HEIGHT // 8, -1, 3] == 255


@pytest.mark.parametrize(
    ("step", "size"),
    [
        ("thumbnail:size=32", (32, 21)),
        ("thumbnail:size=32,crop=centre", (32, 32)),
        ("thumbnail:size=32,crop=attention", (32, 32)),
        ("thumbnail:size=80,crop=centre", (80, 64)),
        ("thumbnail:size=500", (WIDTH, HEIGHT)),
        ("thumbnail", (WIDTH, HEIGHT)),
    ],
)
def test_thumbnail_fits_the_box_and_never_enlarges(
    run: RunPipeline, step: str, size: tuple[int, int]
) -> None:
    assert _size(run(step, SAMPLES["rgba"].image())) == size


def test_thumbnail_matches_pillow(run: RunPipeline) -> None:
    source = SAMPLES["rgb"]
    result = to_array(run("thumbnail:size=40", source.image()))
    pil = to_pil(source.array())
    pil.thumbnail((40, 40), LANCZOS, reducing_gap=None)
    assert psnr(result, from_pil(pil)) >= 40.0


def test_thumbnail_with_attention_keeps_the_interesting_part(run: RunPipeline) -> None:
    # A saturated red disc near the right end of a wide, flat grey image.
    y, x = np.mgrid[0:40, 0:160]
    pixels = np.full((40, 160, 3), 120, np.uint8)
    pixels[(x - 140) ** 2 + (y - 20) ** 2 < 100] = [230, 20, 20]
    image = Image(vips=from_array(pixels, "srgb"), source_format="png")

    def red_share(crop: str) -> float:
        result = to_array(run(f"thumbnail:size=40,crop={crop}", image)).astype(int)
        return float(((result[..., 0] - result[..., 1]) > 100).mean())

    assert red_share("centre") == 0.0
    assert red_share("attention") > 0.1


# The fused load: decode and resize in one go with libvips' thumbnail loader.

FUSED_STEPS = [
    "resize:width=100",
    "resize:height=60,width=60,fit=cover",
    "resize:width=50,height=90,fit=fill",
    "thumbnail:size=64",
    "thumbnail:size=48,crop=centre",
    "thumbnail:size=48,crop=attention",
]


def _bound(step: str):  # type: ignore[no-untyped-def]
    from imgq.domain.pipeline import parse_pipeline

    (bound,) = build_registry().bind(parse_pipeline(step))
    return bound


@pytest.mark.parametrize("step", FUSED_STEPS)
def test_fused_load_matches_decode_then_apply(tmp_path: Path, step: str) -> None:
    path = write_jpeg(tmp_path / "photo.jpg", 400, 300)
    bound = _bound(step)
    fused = bound.op.load(path, "jpeg", bound.params)
    assert fused is not None and fused.source_format == "jpeg"
    applied = bound.op.apply(decode(path, "jpeg"), bound.params, NullContext())
    assert _size(fused) == _size(applied)
    if "attention" not in step:  # a slightly different image may draw attention elsewhere
        # Shrink-on-load lets libjpeg do the first halvings, so the pixels differ a little.
        assert psnr(to_array(fused), to_array(applied)) >= 32.0


@pytest.mark.parametrize("sample", ["rgba", "grey_alpha", "grey"])
def test_fused_load_keeps_alpha_and_grey(tmp_path: Path, sample: str) -> None:
    source = SAMPLES[sample]
    path = source.write_png(tmp_path / "in.png")
    bound = _bound("resize:width=48")
    fused = bound.op.load(path, "png", bound.params)
    assert fused is not None
    assert (fused.bands, fused.vips.format, fused.vips.interpretation) == (
        source.bands,
        source.format,
        source.interpretation,
    )
    applied = bound.op.apply(decode(path, "png"), bound.params, NullContext())
    if source.alpha:
        assert psnr(visible(to_array(fused)), visible(to_array(applied))) >= 40.0
    else:
        assert psnr(to_array(fused), to_array(applied)) >= 40.0


@pytest.mark.parametrize("sample", ["rgb16", "grey16", "rgba16"])
def test_fused_load_leaves_16_bit_images_to_decode(tmp_path: Path, sample: str) -> None:
    # libvips' thumbnail loader would turn them into 8-bit sRGB.
    path = SAMPLES[sample].write_png(tmp_path / "in.png")
    bound = _bound("resize:width=48")
    assert bound.op.load(path, "png", bound.params) is None


def test_fused_load_leaves_cmyk_to_decode(tmp_path: Path) -> None:
    from tests.fixtures.images import write_cmyk_jpeg

    path = write_cmyk_jpeg(tmp_path / "cmyk.jpg")
    bound = _bound("resize:width=48")
    assert bound.op.load(path, "jpeg", bound.params) is None


@pytest.mark.parametrize(
    "step", ["resize:width=200", "resize:width=50,kernel=cubic", "thumbnail:size=300"]
)
def test_fused_load_declines_when_it_would_not_help(tmp_path: Path, step: str) -> None:
    path = write_jpeg(tmp_path / "photo.jpg")
    bound = _bound(step)
    assert bound.op.load(path, "jpeg", bound.params) is None


def test_fused_load_of_an_animated_gif_takes_the_first_frame_like_decode(tmp_path: Path) -> None:
    from tests.fixtures.images import write_animated_gif

    path = write_animated_gif(tmp_path / "anim.gif")
    bound = _bound("resize:width=48")
    fused = bound.op.load(path, "gif", bound.params)
    assert fused is not None
    applied = bound.op.apply(decode(path, "gif"), bound.params, NullContext())
    assert _size(fused) == _size(applied) == (48, 32)
    assert psnr(to_array(fused), to_array(applied)) >= 35.0


# The fused load reads its header and its pixels through one libvips source (the file opened
# once, the loader named by the format). The reference is what it did before: the header of
# the file, pyvips' thumbnail of the file name (libvips searching for the loader), then the
# centre crop; the pixels must be the same, not merely close.


def _thumbnail_of_the_file(path: Path, fmt: str, step: str) -> np.ndarray:
    from imgq.ops import resize, thumbnail

    bound = _bound(step)
    opened = pyvips.Image.new_from_file(str(path))
    width, height = opened.width, opened.height
    if opened.get_typeof("orientation") and opened.get("orientation") >= 5:
        width, height = height, width
    module = resize if bound.name == "resize" else thumbnail
    target = module._target(bound.params, width, height)
    out = pyvips.Image.thumbnail(str(path), target.scaled_width, height=target.scaled_height,
                                 size="force", fail_on="error")
    left, top = (out.width - target.width) // 2, (out.height - target.height) // 2
    return to_array(out.crop(left, top, target.width, target.height))


def _written(tmp_path: Path, kind: str) -> tuple[Path, str]:
    from tests.fixtures.images import write_animated_gif, write_exif_jpeg

    if kind == "jpeg":
        return write_jpeg(tmp_path / "in.jpg", 400, 300), "jpeg"
    if kind.startswith("jpeg-exif-"):
        return write_exif_jpeg(tmp_path / "in.jpg", int(kind[-1]), 400, 300), "jpeg"
    if kind == "gif":
        return write_animated_gif(tmp_path / "in.gif", width=400, height=300), "gif"
    sample, fmt = kind.split(".")
    path = tmp_path / f"in.{fmt}"
    SAMPLES[sample].vips(400, 300).write_to_file(str(path))
    return path, fmt


@pytest.mark.parametrize("kind", ["jpeg", "jpeg-exif-6", "jpeg-exif-3", "rgb.png", "rgba.png",
                                  "grey.png", "grey_alpha.png", "rgb.webp", "rgba.webp",
                                  "rgb.tiff", "gif"])
@pytest.mark.parametrize("step", ["resize:width=100,height=100,fit=cover",
                                  "resize:width=90,height=50,fit=cover", "resize:width=100",
                                  "resize:width=70,height=70,fit=fill", "thumbnail:size=64",
                                  "thumbnail:size=48,crop=centre"])
def test_fused_load_through_a_source_gives_the_pixels_of_the_thumbnail_of_the_file(
    tmp_path: Path, kind: str, step: str
) -> None:
    path, fmt = _written(tmp_path, kind)
    bound = _bound(step)
    fused = bound.op.load(path, fmt, bound.params)
    assert fused is not None
    assert np.array_equal(to_array(fused), _thumbnail_of_the_file(path, fmt, step))


def test_fused_load_of_a_file_that_is_gone_is_a_decode_error(tmp_path: Path) -> None:
    from imgq.errors import DecodeError

    bound = _bound("resize:width=100,height=100,fit=cover")
    with pytest.raises(DecodeError, match="cannot decode jpeg image"):
        bound.op.load(tmp_path / "gone.jpg", "jpeg", bound.params)


@pytest.mark.parametrize("kind", ["jpeg", "rgb.png", "rgb.webp"])
def test_fused_load_of_a_truncated_file_is_a_decode_error(
    tmp_path: Path, kind: str
) -> None:
    from imgq.errors import DecodeError
    from imgq.ops.image import encode_to_file

    whole, fmt = _written(tmp_path, kind)
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    bound = _bound("resize:width=100,height=100,fit=cover")
    with pytest.raises(DecodeError, match="truncated or corrupt|cannot decode"):
        fused = bound.op.load(path, fmt, bound.params)  # a header cut short fails here
        assert fused is not None
        encode_to_file(fused, tmp_path / "out.jpg")  # pixels cut short, here
