"""Blob stores, chosen by URL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from imgq.blobs.base import BlobStore
from imgq.blobs.local import LocalBlobStore

if TYPE_CHECKING:
    from imgq.config import Settings


def open_blob_store(url: str, settings: Settings | None = None) -> BlobStore:
    """`settings` gives an S3 store its endpoint and credentials (from the environment if None)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalBlobStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from imgq.blobs.s3 import S3BlobStore  # boto3 is only needed for S3
        from imgq.config import load_settings

        return S3BlobStore.from_settings(url, settings or load_settings())
    raise ValueError(f"unsupported storage URL {url!r}: use file:///path or s3://bucket/prefix")


__all__ = ["BlobStore", "LocalBlobStore", "open_blob_store"]
