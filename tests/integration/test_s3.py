"""S3BlobStore details beyond the contract, on a real S3 server (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from imgq.blobs import open_blob_store
from imgq.blobs.s3 import S3BlobStore
from imgq.config import load_settings


@pytest.fixture
def store(s3_server: Any, tmp_path: Path) -> S3BlobStore:
    settings = load_settings(data_dir=tmp_path, **s3_server.settings(),
                             s3_multipart_threshold_bytes=5 * 1024 * 1024, s3_presign_expiry_seconds=60)
    found = open_blob_store(f"s3://{s3_server.new_bucket()}/pre/fix", settings)
    assert isinstance(found, S3BlobStore)
    return found


def test_large_files_are_uploaded_in_parts(store: S3BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "big"
    source.write_bytes(b"z" * (11 * 1024 * 1024))
    store.put_file("job/results/0.png", source)
    head = store.client.head_object(Bucket=store.bucket, Key="pre/fix/job/results/0.png")
    assert "-" in head["ETag"]  # a multipart upload's ETag ends in -<parts>
    assert store.keys("job") == ["job/results/0.png"]


def test_a_presigned_url_downloads_the_blob_with_its_name(store: S3BlobStore,
                                                          tmp_path: Path) -> None:
    source = tmp_path / "small"
    source.write_bytes(b"result bytes")
    store.put_file("job/results/1.webp", source)
    url = store.presigned_url("job/results/1.webp", "photo été.webp", "image/webp")
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"result bytes"
    assert response.headers["content-type"] == "image/webp"
    assert "photo%20%C3%A9t%C3%A9.webp" in response.headers["content-disposition"]


def test_ping_fails_when_the_bucket_is_missing(s3_server: Any, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, **s3_server.settings())
    missing = open_blob_store("s3://imgq-no-such-bucket-here/x", settings)
    with pytest.raises(Exception):
        missing.ping()
