"""Streaming multipart uploads: each file goes straight to a temporary file, never whole in
memory, and the limits (files, bytes per file, bytes of form fields, how fast the body must
arrive) are enforced while the bytes arrive."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from imgq.config import Settings
from imgq.domain.names import safe_name
from imgq.errors import FileTooLarge, FormTooLarge, InvalidRequest, RequestTimeout, TooManyFiles

FILE_FIELDS = frozenset({"files", "files[]", "file", "image", "images"})
MAX_FIELD_BYTES = 64 * 1024
MAX_BOUNDARY = 200  # RFC 2046 allows 70; python-multipart refuses more than 256


@dataclass(frozen=True)
class UploadLimits:
    max_files: int
    max_file_bytes: int
    max_form_bytes: int = 1024 * 1024
    idle_timeout: float = 15.0
    min_rate: int = 0
    file_fields: frozenset[str] = FILE_FIELDS
    max_name_bytes: int = 255

    @classmethod
    def from_settings(cls, s: Settings, max_files: int | None = None,
                      file_fields: frozenset[str] = FILE_FIELDS) -> UploadLimits:
        return cls(s.max_files if max_files is None else max_files, s.max_file_bytes,
                   s.max_form_bytes, s.upload_idle_timeout_seconds, s.upload_min_bytes_per_second,
                   file_fields,
                   s.max_filename_bytes)

    @property
    def max_body(self) -> int:
        return self.max_files * (self.max_file_bytes + 16 * 1024) + self.max_form_bytes


@dataclass
class StagedFile:
    field: str
    name: str
    path: Path
    size: int = 0


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[StagedFile] = field(default_factory=list)

    def discard(self) -> None:
        for f in self.files:
            f.path.unlink(missing_ok=True)


def _mb(n: int) -> str:
    return f"{n / 1_000_000:g} MB"


class _Collector:
    """Callbacks for python-multipart's streaming parser."""

    def __init__(self, upload: Upload, staging: Path | None, limits: UploadLimits) -> None:
        self.upload, self.staging, self.limits = upload, staging, limits
        self.max_files, self.max_bytes = limits.max_files, limits.max_file_bytes
        self.file_fields = limits.file_fields
        self.form_bytes = 0  # non-file bytes: every part's headers and the fields' values
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._field = ""
        self._value = bytearray()
        self._file: StagedFile | None = None
        self._fh: IO[bytes] | None = None

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.part_begin, "on_header_field": self.header_field,
            "on_header_value": self.header_value, "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def part_begin(self) -> None:
        self._headers = {}

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_form(end - start)
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_form(end - start)
        self._header_value += data[start:end]

    def _count_form(self, n: int) -> None:
        self.form_bytes += n
        if self.form_bytes > self.limits.max_form_bytes:
            raise FormTooLarge(f"the form fields are larger than the limit of "
                               f"{_mb(self.limits.max_form_bytes)} (IMGQ_MAX_FORM_BYTES)",
                               limit=self.limits.max_form_bytes)

    def header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._field = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._value = bytearray()
        if filename is None and self._field not in self.file_fields:
            return
        if len(self.upload.files) >= self.max_files:
            raise TooManyFiles(f"too many files: at most {self.max_files} per job",
                               limit=self.max_files)
        name = safe_name(filename.decode("utf-8", "replace") if filename else None,
                         max_bytes=self.limits.max_name_bytes)
        fd, tmp = tempfile.mkstemp(prefix="upload-", dir=self.staging)
        self._fh = os.fdopen(fd, "wb")
        self._file = StagedFile(self._field, name, Path(tmp))
        self.upload.files.append(self._file)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is None or self._fh is None:
            if len(self._value) + end - start > MAX_FIELD_BYTES:
                raise FormTooLarge(f"form field {self._field[:40]!r} is longer than "
                                   f"{MAX_FIELD_BYTES} bytes")
            self._count_form(end - start)
            self._value += data[start:end]
            return
        self._file.size += end - start
        if self._file.size > self.max_bytes:
            raise FileTooLarge(f"{self._file.name}: larger than the limit of "
                               f"{_mb(self.max_bytes)}", file=self._file.name,
                               limit=self.max_bytes)
        self._fh.write(data[start:end])

    def part_end(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh, self._file = None, None
        else:
            self.upload.fields[self._field] = self._value.decode("utf-8", "replace")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


async def receive_upload(request: Request, staging: Path | None,
                         limits: UploadLimits) -> Upload:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest("send the files as multipart/form-data")
    if len(boundary) > MAX_BOUNDARY:
        raise InvalidRequest(f"the multipart boundary is longer than {MAX_BOUNDARY} characters")
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limits.max_body:
        raise FileTooLarge(f"the request is {_mb(int(declared))}, more than "
                           f"{limits.max_files} files of at most {_mb(limits.max_file_bytes)} "
                           "each and the form fields")
    upload = Upload()
    collector = _Collector(upload, staging, limits)
    try:
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        received = 0
        async for chunk in read_body(request, limits):
            received += len(chunk)
            if received > limits.max_body:
                raise FileTooLarge(f"the request is larger than {_mb(limits.max_body)}, "
                                   f"{limits.max_files} files of at most "
                                   f"{_mb(limits.max_file_bytes)} each and the form fields")
            parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        collector.close()
        upload.discard()
        if isinstance(exc, FormParserError):
            raise InvalidRequest(f"malformed multipart body: {exc}") from None
        raise
    return upload


async def read_body(request: Request, limits: UploadLimits) -> AsyncIterator[bytes]:
    """The request body's chunks; 408 when it pauses longer than the idle timeout, or
    averages less than the minimum rate once the idle timeout has passed (a slow client
    must not hold a connection and a staging file for long)."""
    clock = anyio.current_time
    start, received = clock(), 0
    chunks = request.stream().__aiter__()
    while True:
        wait = limits.idle_timeout
        if limits.min_rate:
            deadline = start + limits.idle_timeout + received / limits.min_rate
            wait = min(wait, deadline - clock())
        try:
            with anyio.fail_after(max(wait, 0.0)):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _too_slow(limits, wait < limits.idle_timeout) from None
        received += len(chunk)
        yield chunk


def _too_slow(limits: UploadLimits, by_rate: bool) -> RequestTimeout:
    if by_rate:
        return RequestTimeout(f"the request body arrived slower than {limits.min_rate} bytes "
                              "per second (IMGQ_UPLOAD_MIN_BYTES_PER_SECOND)")
    return RequestTimeout(f"the request body paused for more than {limits.idle_timeout:g} s "
                          "(IMGQ_UPLOAD_IDLE_TIMEOUT_SECONDS)")
