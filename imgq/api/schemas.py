"""Response models: what clients see, described for /docs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from imgq.domain.views import (
    ErrorInfo,
    ImageMeta,
    ItemOut,
    JobOut,
    JobUrls,
    Timings,
    job_out,
)


class ErrorResponse(BaseModel):
    error: ErrorInfo


class JobList(BaseModel):
    jobs: list[JobOut]
    total: int
    limit: int
    offset: int
    next: str | None = Field(None, description="URL of the next page, if any.")


class OperationOut(BaseModel):
    name: str
    summary: str
    resource: str
    available: bool
    unavailable_reason: str | None = None
    makes_image: bool = Field(False, description="Makes an image from nothing: the first step "
                              "of a job sent with no files (generate).")
    attachments: list[str] = Field(
        default_factory=list, description="Parameters whose value is the file name of an image "
        "sent in the job's 'attachments' field (a style picture, a source face).")
    remote: dict[str, str] = Field(
        default_factory=dict, description="Models of this operation served by a remote "
        "endpoint the operator configured: model name → where (kind, host, remote model).")
    params: dict[str, Any] = Field(description="JSON schema of the parameters.")


__all__ = ["ErrorInfo", "ErrorResponse", "ImageMeta", "ItemOut", "JobList", "JobOut", "JobUrls",
           "OperationOut", "Timings", "job_out"]
