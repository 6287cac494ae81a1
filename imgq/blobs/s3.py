"""Blobs in an S3-compatible bucket (AWS S3, MinIO, R2, SeaweedFS) through boto3.

An S3 PUT is atomic (a multipart upload too, once completed): readers see a whole object or
none, which is what `BlobStore.put_file` promises.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from imgq.blobs.base import CHUNK, BlobStore, check_key

if TYPE_CHECKING:
    from imgq.config import Settings

_MISSING = {"404", "NoSuchKey", "NotFound"}
_DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes


class S3BlobStore(BlobStore):
    def __init__(self, client: Any, bucket: str, prefix: str = "",
                 multipart_threshold: int = 16 * 1024 * 1024, presign_expiry: int = 300) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.presign_expiry = presign_expiry
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                       multipart_chunksize=max(multipart_threshold // 2,
                                                               5 * 1024 * 1024))

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> S3BlobStore:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"invalid S3 storage URL {url!r}: use s3://bucket/prefix")
        secret = settings.s3_secret_access_key.get_secret_value()
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or None,
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=secret or None,
            config=Config(s3={"addressing_style": settings.s3_addressing_style},
                          signature_version="s3v4", max_pool_connections=32,
                          retries={"max_attempts": 5, "mode": "standard"}),
        )
        return cls(client, parsed.netloc, parsed.path, settings.s3_multipart_threshold_bytes,
                   settings.s3_presign_expiry_seconds)

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(key), Config=self.transfer)

    @contextmanager
    def _download(self, key: str) -> Iterator[Path]:
        full = self._key(key)
        with tempfile.TemporaryDirectory(prefix="imgq-s3-") as tmp:
            target = Path(tmp) / "blob"
            try:
                self.client.download_file(self.bucket, full, str(target), Config=self.transfer)
            except ClientError as exc:
                raise _missing_or(exc, key) from None
            yield target

    def open_local(self, key: str) -> Any:
        return self._download(key)

    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        try:  # ask now, so that a missing blob fails before a response has started
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as exc:
            raise _missing_or(exc, key) from None
        return _chunks(body, chunk_size)

    def size(self, key: str) -> int:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            raise _missing_or(exc, key) from None
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except KeyError:
            return False
        return True

    def delete(self, keys: list[str]) -> None:
        full = [self._key(k) for k in keys]
        for start in range(0, len(full), _DELETE_BATCH):
            batch = full[start:start + _DELETE_BATCH]
            self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in batch], "Quiet": True})

    def listing(self, prefix: str) -> list[tuple[str, float]]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix.rstrip("/")) + "/")
        return [(obj["Key"][strip:], obj["LastModified"].timestamp())
                for page in pages for obj in page.get("Contents", [])]

    def ping(self) -> None:
        probe = self._key("imgq-ping")
        self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
        self.client.delete_object(Bucket=self.bucket, Key=probe)

    def keys(self, under: str = "") -> list[str]:
        """Every key below `under` (for tests and tools; the service never lists)."""
        start = self._key(under) if under else self.prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=start)
        return [obj["Key"][strip:] for page in pages for obj in page.get("Contents", [])]

    def presigned_url(self, key: str, filename: str, media_type: str) -> str:
        """A URL that downloads the blob straight from S3 for a while, named for the client."""
        ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
        disposition = (f"attachment; filename=\"{ascii_name}\"; "
                       f"filename*=UTF-8''{quote(filename)}")
        return str(self.client.generate_presigned_url(
            "get_object", ExpiresIn=self.presign_expiry,
            Params={"Bucket": self.bucket, "Key": self._key(key),
                    "ResponseContentDisposition": disposition,
                    "ResponseContentType": media_type},
        ))


def _chunks(body: Any, chunk_size: int) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(chunk_size)
    finally:
        body.close()


def _missing_or(exc: ClientError, key: str) -> Exception:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return KeyError(key) if code in _MISSING else exc
