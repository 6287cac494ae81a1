"""Streaming multipart uploads: each file goes straight to a temporary file, never whole in
memory, and the byte and count limits are enforced while the bytes arrive."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from imgq.domain.names import safe_name
from imgq.domain.units import describe_bytes
from imgq.errors import FileTooLarge, InvalidRequest, TooManyFiles

FILE_FIELDS = frozenset({"files", "files[]", "file", "image", "images"})
MAX_FIELD_BYTES = 64 * 1024


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


class _Collector:
    """Callbacks for python-multipart's streaming parser."""

    def __init__(self, upload: Upload, staging: Path | None, max_files: int, max_bytes: int,
                 file_fields: frozenset[str]) -> None:
        self.upload, self.staging = upload, staging
        self.max_files, self.max_bytes, self.file_fields = max_files, max_bytes, file_fields
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
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

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
        name = safe_name(filename.decode("utf-8", "replace") if filename else None)
        fd, tmp = tempfile.mkstemp(prefix="upload-", dir=self.staging)
        self._fh = os.fdopen(fd, "wb")
        self._file = StagedFile(self._field, name, Path(tmp))
        self.upload.files.append(self._file)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is None or self._fh is None:
            if len(self._value) + end - start > MAX_FIELD_BYTES:
                raise InvalidRequest(f"form field {self._field!r} is longer than "
                                     f"{MAX_FIELD_BYTES} bytes")
            self._value += data[start:end]
            return
        self._file.size += end - start
        if self._file.size > self.max_bytes:
            raise FileTooLarge(f"{self._file.name}: larger than the limit of "
                               f"{describe_bytes(self.max_bytes)}", file=self._file.name,
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


async def receive_upload(request: Request, staging: Path | None, max_files: int,
                         max_bytes: int, file_fields: frozenset[str] = FILE_FIELDS) -> Upload:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest("send the files as multipart/form-data")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_files * (max_bytes + 64 * 1024):
        raise FileTooLarge(f"the request is {describe_bytes(int(declared))}, more than "
                           f"{max_files} files of at most {describe_bytes(max_bytes)} each")
    upload = Upload()
    collector = _Collector(upload, staging, max_files, max_bytes, file_fields)
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        collector.close()
        upload.discard()
        if isinstance(exc, FormParserError):
            raise InvalidRequest(f"malformed multipart body: {exc}") from None
        raise
    return upload
