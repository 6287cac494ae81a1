"""The AI Upscaler's upload options (method, scale, convert's format and quality) as imgq
pipelines, with the old system's own refusal messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imgq.config import Settings
from imgq.errors import InvalidRequest

#: Every method its upload page offers (and the words standard/detailed imgq also took).
METHODS = ("real_esrgan", "swinir", "esrgan", "real_esrgan_anime", "background_remove",
           "convert")
ALIASES = {"standard": "real_esrgan", "detailed": "swinir"}
UPSCALE_METHODS = frozenset({"real_esrgan", "swinir", "esrgan", "real_esrgan_anime"})
SCALES = (2, 4)
CONVERT_FORMATS = ("webp", "png", "jpeg")


@dataclass(frozen=True)
class Options:
    method: str
    scale: int
    target_format: str | None = None
    quality: int | None = None

    @property
    def operation(self) -> str:
        """The imgq operation that does the work."""
        if self.method in UPSCALE_METHODS:
            return "upscale"
        return "remove_background" if self.method == "background_remove" else "encode"

    @property
    def result_format(self) -> str:
        return self.target_format or "png"

    def download_name(self, original: str) -> str:
        stem = original.rsplit(".", 1)[0] if "." in original else original
        if self.method == "convert":
            return f"{stem}_converted.{self.result_format}"
        return f"{stem}_upscaled.png"


def parse_options(fields: dict[str, str]) -> Options:
    """The form fields as the old system read them, refused with its own messages."""
    method = fields.get("method", "real_esrgan").strip().lower()
    method = ALIASES.get(method, method)
    if method not in METHODS:
        raise InvalidRequest(f"method must be one of: {', '.join(METHODS)}")
    scale = _scale(fields.get("scale", "4"))
    if method == "convert":
        return _convert_options(fields)
    if method == "background_remove":
        if scale != 1:
            raise InvalidRequest("scale must be 1 for background remove")
    elif scale not in SCALES:
        raise InvalidRequest("scale must be 2 or 4")
    return Options(method, scale)


def _scale(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise InvalidRequest("scale must be a whole number: 2 or 4, or 1 for background "
                             "remove") from None


def _convert_options(fields: dict[str, str]) -> Options:
    target = (fields.get("target_format") or "").strip().lower()
    if target not in CONVERT_FORMATS:
        raise InvalidRequest(f"target_format required for convert, one of: "
                             f"{', '.join(CONVERT_FORMATS)}")
    raw_quality = (fields.get("quality") or "").strip()
    quality = None
    if raw_quality:
        try:
            quality = int(raw_quality)
        except ValueError:
            raise InvalidRequest("quality must be a number between 1 and 100") from None
        if not 1 <= quality <= 100:
            raise InvalidRequest("quality must be between 1 and 100")
    return Options("convert", 1, target, quality)


def model_for(settings: Settings, method: str, scale: int) -> str:
    """The upscale model each upscaling method runs (settings, see docs/compat.md)."""
    name = {
        "real_esrgan": settings.compat_ai_upscaler_standard_model,
        "swinir": settings.compat_ai_upscaler_detailed_model,
        "esrgan": settings.compat_ai_upscaler_esrgan_model,
        "real_esrgan_anime": settings.compat_ai_upscaler_anime_model,
    }[method]
    return name.replace("{scale}", str(scale))


def pipeline_for(settings: Settings, options: Options,
                 model_choice: bool = True) -> list[dict[str, Any]]:
    """imgq steps for the options; model_choice is False when the installed upscale
    operation takes no model parameter."""
    step: dict[str, Any]
    if options.operation == "upscale":
        step = {"op": "upscale", "scale": options.scale}
        if model_choice:
            step["model"] = model_for(settings, options.method, options.scale)
        return [step, {"op": "encode", "format": "png"}]
    if options.operation == "remove_background":
        return [{"op": "remove_background", "mode": "rgba"}, {"op": "encode", "format": "png"}]
    step = {"op": "encode", "format": options.result_format}
    if options.quality is not None and options.result_format != "png":
        step["quality"] = options.quality
    return [step]
