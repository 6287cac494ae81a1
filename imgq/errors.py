"""One exception tree. Each error knows its HTTP status, a stable code, and a message safe to show.

The docstring of a class is its default message.
"""

from __future__ import annotations

from typing import Any


class ImgqError(Exception):
    """Something went wrong."""

    status_code = 500
    code = "internal_error"
    #: Whether retrying the same work could succeed (used by the worker's retry policy).
    transient = False
    #: Seconds a client should wait before trying again (the Retry-After header), if any.
    retry_after: int | None = None
    #: The server's trouble (database, storage, broker), never the image's: retried without
    #: spending the item's attempts.
    infrastructure = False

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or " ".join((self.__doc__ or "").split())
        self.details = details
        super().__init__(self.message)

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the body."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after else {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class NotFound(ImgqError):
    """Not found."""

    status_code = 404
    code = "not_found"


class Conflict(ImgqError):
    """The resource is not in a state that allows this."""

    status_code = 409
    code = "conflict"


class Gone(ImgqError):
    """The files of this job have expired and were removed."""

    status_code = 410
    code = "expired"


class ResultMissing(Gone):
    """The result file is no longer in storage."""

    code = "result_missing"


class InvalidRequest(ImgqError):
    """The request is invalid."""

    status_code = 400
    code = "invalid_request"


class InvalidPipeline(ImgqError):
    """The pipeline is invalid."""

    status_code = 422
    code = "invalid_pipeline"


class InvalidParameters(InvalidPipeline):
    """An operation's parameters are invalid."""

    code = "invalid_parameters"


class TooManyFiles(ImgqError):
    """Too many files in one job."""

    status_code = 413
    code = "too_many_files"


class FileTooLarge(ImgqError):
    """A file is larger than allowed."""

    status_code = 413
    code = "file_too_large"


class ImageTooLarge(ImgqError):
    """An image has more pixels than allowed."""

    status_code = 413
    code = "image_too_large"


class OutputTooLarge(ImgqError):
    """The pipeline would make an image with more pixels than allowed."""

    status_code = 413
    code = "output_too_large"


class FormTooLarge(ImgqError):
    """The form fields of the request are larger than allowed."""

    status_code = 413
    code = "form_too_large"


class RequestTimeout(ImgqError):
    """The request body did not arrive in time."""

    status_code = 408
    code = "request_timeout"


class TooBusy(ImgqError):
    """Too many requests of this kind at once; try again shortly."""

    status_code = 429
    code = "too_busy"
    retry_after = 2


class UnsupportedFormat(ImgqError):
    """The file is not an image in a supported format."""

    status_code = 415
    code = "unsupported_format"


class AnimatedRefused(UnsupportedFormat):
    """Animated images are not accepted by this server."""

    code = "animated_refused"


class DecodeError(ImgqError):
    """The image could not be decoded."""

    status_code = 422
    code = "decode_error"


class ProcessingError(ImgqError):
    """The image could not be processed."""

    status_code = 422
    code = "processing_error"


class TransientError(ImgqError):
    """A temporary failure; the work will be retried."""

    status_code = 503
    code = "transient_error"
    transient = True


class Cancelled(ImgqError):
    """The item was cancelled."""

    status_code = 409
    code = "cancelled"


class TimeLimitExceeded(ImgqError):
    """The item took longer than its time limit."""

    status_code = 504
    code = "time_limit"


class InvalidTransition(ImgqError):
    """A state change was refused because the item was not in a state it may come from."""

    status_code = 409
    code = "invalid_transition"


class Unavailable(ImgqError):
    """A backing service is unavailable."""

    status_code = 503
    code = "unavailable"
    transient = True
    infrastructure = True
    retry_after = 5


class DatabaseUnavailable(Unavailable):
    """The database could not be reached; the work will be retried."""

    code = "database_unavailable"


class StorageUnavailable(Unavailable):
    """The file storage could not be read or written; the work will be retried."""

    code = "storage_unavailable"


class StorageFull(StorageUnavailable):
    """File storage is full; try again later."""

    code = "storage_full"
    retry_after = 30


class StorageReadOnly(StorageUnavailable):
    """File storage is read-only; try again later."""

    code = "storage_read_only"
    retry_after = 30


class RemoteUnavailable(Unavailable):
    """A remote model endpoint could not be reached or did not serve the request; the work
    will be retried."""

    code = "remote_unavailable"


class RemoteFailed(ProcessingError):
    """A remote model endpoint refused or failed this image."""

    code = "remote_failed"


class BrokerUnavailable(Unavailable):
    """The message broker could not be reached; the work will be retried."""

    code = "broker_unavailable"


class InputMissing(ImgqError):
    """The uploaded file of this item is no longer in storage."""

    status_code = 410
    code = "input_missing"


class OutOfMemory(ImgqError):
    """The worker ran out of memory processing this image."""

    status_code = 503
    code = "out_of_memory"
    transient = True  # another try (less load) may fit; it spends an attempt


class WorkerCrashed(ImgqError):
    """The worker process died while processing this image."""

    status_code = 503
    code = "worker_crashed"
    transient = True




class Unauthorized(ImgqError):
    """This server needs an API key: send it as `Authorization: Bearer <key>` or
    `X-API-Key: <key>` (an administrator creates keys with `imgq keys create NAME`)."""

    status_code = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="imgq"'}


class Forbidden(ImgqError):
    """This needs an admin key."""

    status_code = 403
    code = "forbidden"


class TooManyRequests(ImgqError):
    """Too many requests: try again later."""

    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str | None = None, retry_after: float = 1.0,
                 **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = max(1, int(retry_after + 0.999))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class QuotaExceeded(TooManyRequests):
    """A quota of this API key is used up."""

    code = "quota_exceeded"


class RateLimited(TooManyRequests):
    """Too many submissions from this address."""

    code = "rate_limited"
