"""Operations on files as `decode` opens them: sequential access, computed at encode time."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgq.domain.pipeline import parse_pipeline
from imgq.ops.base import NullContext, Registry
from imgq.ops.image import decode, encode_to_file
from tests.fixtures.images import SAMPLES, write_jpeg
from tests.unit.ops.test_ops_keep_formats import STEPS

# Large enough that libvips' sequential read-ahead cannot hide an out-of-order read.
SIZE = (800, 600)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("streaming")
    return {
        "jpeg": write_jpeg(folder / "photo.jpg", *SIZE),
        "png": SAMPLES["rgba16"].write_png(folder / "deep.png", *SIZE),
    }


@pytest.mark.parametrize("step", list(STEPS.values()), ids=list(STEPS))
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_operation_works_on_a_sequentially_decoded_file(
    registry: Registry, files: dict[str, Path], tmp_path: Path, fmt: str, step: str
) -> None:
    image = decode(files[fmt], fmt)
    for bound in registry.bind(parse_pipeline(step)):
        image = bound.op.apply(image, bound.params, NullContext())
    info = encode_to_file(image, tmp_path / "out.png")
    assert (info.width, info.height) == (image.width, image.height)
