from __future__ import annotations

import pytest

from imgq.domain.names import safe_name, unique_names, with_extension


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("photo.jpg", "photo.jpg"), ("../../x.png", "x.png"), ("..\\..\\win.png", "win.png"),
     ("a\x00b.png", "a_b.png"), ("", "image"), (None, "image"), ("..", "image"),
     ("/etc/passwd", "passwd"), ("my photo (1).JPG", "my photo (1).JPG")],
)
def test_client_names_never_become_paths(raw: str | None, expected: str) -> None:
    assert safe_name(raw) == expected


def test_very_long_names_are_shortened_keeping_the_extension() -> None:
    name = safe_name("a" * 4096 + ".png")
    assert len(name) <= 120 and name.endswith(".png")


def test_result_name_takes_the_output_extension() -> None:
    assert with_extension("photo.jpg", "webp") == "photo.webp"
    assert with_extension("noext", "png") == "noext.png"


def test_archive_names_are_unique_regardless_of_case() -> None:
    assert unique_names(["a.png", "A.png", "a.png", "b"]) == ["a.png", "A (2).png", "a (3).png", "b"]


@pytest.mark.parametrize(("raw", "expected"), [
    ("invoice\u202egpj.exe", "invoicegpj.exe"),  # right-to-left override
    ("a\u2066b\u2069c\u200b.png", "abc.png"),  # isolates and a zero-width space
    ("\ufeffbom.png", "bom.png"), ("line\u2028break.png", "linebreak.png"),
    ("c1\x85control.png", "c1_control.png"),
])
def test_bidi_and_invisible_characters_never_reach_a_name(raw: str, expected: str) -> None:
    assert safe_name(raw) == expected


def test_the_byte_limit_counts_utf8_and_never_cuts_a_character() -> None:
    name = safe_name("é" * 300 + ".png", max_bytes=255)
    assert len(name.encode()) <= 255 and name.endswith(".png")
    assert name.removesuffix(".png") == "é" * len(name.removesuffix(".png"))
