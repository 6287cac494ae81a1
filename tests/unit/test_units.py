"""Sizes are written one way for people: binary byte units, megapixels."""

from __future__ import annotations

import pytest

from imgq.domain.units import describe_bytes, describe_megapixels


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (512, "512 B"), (1024, "1 KiB"), (100_000, "97.7 KiB"),
    (50 * 1024 * 1024, "50 MiB"), (1536 * 1024 * 1024, "1.5 GiB"), (1023 * 1024, "1023 KiB")])
def test_bytes_are_written_in_binary_units(n: int, text: str) -> None:
    assert describe_bytes(n) == text


@pytest.mark.parametrize(("pixels", "text"), [
    (16_000_000, "16 MP"), (307_200, "0.307 MP"), (12_192_768, "12.2 MP")])
def test_pixels_are_written_in_megapixels(pixels: int, text: str) -> None:
    assert describe_megapixels(pixels) == text
