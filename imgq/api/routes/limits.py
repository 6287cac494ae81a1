"""GET /v1/limits: what this server accepts, so clients can check before they upload."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from imgq.api.deps import RuntimeDep
from imgq.ops.image import INPUT_FORMATS, OUTPUT_FORMATS

router = APIRouter(tags=["operations"])


class LimitsOut(BaseModel):
    max_files: int = Field(description="Files per job.")
    max_file_bytes: int = Field(description="Bytes per uploaded file.")
    max_pixels: int = Field(description="Pixels per image (width × height).")
    max_frames: int = Field(description="Frames in an animated image.")
    animated: str = Field(description="first_frame or reject: what happens to animated images.")
    ttl_seconds: int = Field(description="Default lifetime of a job's files.")
    max_ttl_seconds: int = Field(description="Longest ttl_seconds a job may ask for.")
    input_formats: dict[str, str] = Field(description="Accepted formats and their media types.")
    output_formats: dict[str, str] = Field(description="Formats results can be written in.")
    webhooks: bool = Field(description="Whether callback_url is accepted (a secret is set).")


@router.get("/v1/limits", response_model=LimitsOut,
            summary="What this server accepts: file count and size, pixels, formats, TTL")
async def limits(rt: RuntimeDep) -> LimitsOut:
    s = rt.settings
    return LimitsOut(
        max_files=s.max_files, max_file_bytes=s.max_file_bytes, max_pixels=s.max_pixels,
        max_frames=s.max_frames, animated=s.animated.value, ttl_seconds=s.ttl_seconds,
        max_ttl_seconds=s.max_ttl_seconds,
        input_formats={name: spec[1] for name, spec in INPUT_FORMATS.items()},
        output_formats={name: spec[0] for name, spec in OUTPUT_FORMATS.items()},
        webhooks=bool(s.webhook_secret.get_secret_value()),
    )
