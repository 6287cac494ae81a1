"""encode: choose the output format and its options; the pixels are not touched."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from imgq.ops.base import Operation, Params, StepContext
from imgq.ops.image import EncodeOptions, Image

OutputFormat = Literal["jpeg", "png", "webp", "avif", "gif", "tiff"]
_ALIASES = {"jpg": "jpeg", "tif": "tiff"}
_WITH_QUALITY = frozenset({"jpeg", "webp", "avif"})
_WITH_LOSSLESS = frozenset({"webp", "avif"})


class EncodeParams(Params):
    format: OutputFormat | None = Field(
        None,
        description="Output format. Left out: the input's format where it can be written, "
        "PNG otherwise. png and tiff keep 16-bit samples; jpeg flattens alpha onto white.",
    )
    quality: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Quality of lossy formats (jpeg, webp, avif), 1–100. Left out: jpeg 85, "
        "webp 80, avif 50.",
    )
    lossless: bool = Field(False, description="Lossless compression (webp and avif only).")
    keep_metadata: bool = Field(
        False,
        description="Keep EXIF, XMP, IPTC and the ICC profile. By default they are stripped "
        "(colours are converted to sRGB first).",
    )

    @field_validator("format", mode="before")
    @classmethod
    def _alias(cls, value: Any) -> Any:
        return _ALIASES.get(value.lower(), value.lower()) if isinstance(value, str) else value

    @classmethod
    def restore(cls, stored: dict[str, Any]) -> Params:
        # Jobs queued before pipelines were stored normalised may still say "jpg".
        return super().restore({**stored, "format": cls._alias(stored.get("format"))})

    @field_validator("quality")
    @classmethod
    def _lossy_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        fmt = info.data.get("format")
        if value is not None and fmt is not None and fmt not in _WITH_QUALITY:
            raise ValueError(
                f"{fmt} has no quality setting; only {', '.join(sorted(_WITH_QUALITY))}"
            )
        return value

    @field_validator("lossless")
    @classmethod
    def _lossless_formats(cls, value: bool, info: ValidationInfo) -> bool:
        fmt = info.data.get("format")
        if value and fmt is not None and fmt not in _WITH_LOSSLESS:
            raise ValueError(f"lossless is for {' and '.join(sorted(_WITH_LOSSLESS))}, not {fmt}")
        return value


class Encode(Operation):
    name = "encode"
    summary = "Choose the output format (jpeg, png, webp, avif, gif, tiff), quality and metadata."
    params_model = EncodeParams

    def apply(self, image: Image, params: EncodeParams, ctx: StepContext) -> Image:
        options = EncodeOptions(
            format=params.format,
            quality=params.quality,
            lossless=params.lossless,
            keep_metadata=params.keep_metadata,
        )
        return replace(image, encode=options)


OPERATIONS = [Encode()]
