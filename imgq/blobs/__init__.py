"""Blob stores, chosen by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from imgq.blobs.base import BlobStore
from imgq.blobs.local import LocalBlobStore


def open_blob_store(url: str) -> BlobStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalBlobStore(Path(unquote(parsed.path)))
    raise ValueError(f"unsupported storage URL {url!r}: use file:///path")


__all__ = ["BlobStore", "LocalBlobStore", "open_blob_store"]
