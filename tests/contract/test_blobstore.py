"""The BlobStore contract, written once; every backend runs it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgq.blobs import BlobStore, open_blob_store
from imgq.blobs.local import LocalBlobStore


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "s3":  # a real S3 server, a fresh bucket and prefix per test
        from imgq.config import load_settings

        server = request.getfixturevalue("s3_server")
        settings = load_settings(data_dir=tmp_path, **server.settings(),
                                 s3_multipart_threshold_bytes=5 * 1024 * 1024)
        yield open_blob_store(f"s3://{server.new_bucket()}/some/prefix", settings)
        return
    yield open_blob_store((tmp_path / "blobs").as_uri())


def _file(tmp_path: Path, data: bytes, name: str = "src") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_put_then_read_back_the_same_bytes(store: BlobStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    store.put_file("job/inputs/0.png", _file(tmp_path, data))
    assert store.exists("job/inputs/0.png")
    assert store.size("job/inputs/0.png") == len(data)
    assert b"".join(store.iter_bytes("job/inputs/0.png", chunk_size=1000)) == data
    assert store.read_bytes("job/inputs/0.png") == data
    with store.open_local("job/inputs/0.png") as path:
        assert path.read_bytes() == data


def test_put_replaces_an_existing_blob_whole(store: BlobStore, tmp_path: Path) -> None:
    store.put_file("a/b", _file(tmp_path, b"first", "one"))
    store.put_file("a/b", _file(tmp_path, b"second", "two"))
    assert b"".join(store.iter_bytes("a/b")) == b"second"


def test_readers_never_see_a_partial_blob(store: BlobStore, tmp_path: Path) -> None:
    big = _file(tmp_path, b"x" * 4_000_000, "big")
    small = _file(tmp_path, b"y" * 10, "small")
    store.put_file("k/v", small)
    seen: set[int] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add(len(b"".join(store.iter_bytes("k/v"))))

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(5):
        store.put_file("k/v", big)
        store.put_file("k/v", small)
    stop.set()
    thread.join()
    assert seen <= {10, 4_000_000}


def test_a_blob_is_read_at_once_whole_or_not_at_all(store: BlobStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    store.put_file("job/results/0.png", _file(tmp_path, data))
    at_once = store.read_at_once("job/results/0.png", len(data))
    assert at_once in (data, None)  # None: a store that reads over a network never does
    assert store.read_at_once("job/results/0.png", len(data) - 1) is None  # never cut short
    if isinstance(store, LocalBlobStore):  # local files are read at once, and looked for
        assert at_once == data
        with pytest.raises(KeyError):
            store.read_at_once("no/such", 100)


def test_missing_blobs_raise_key_error(store: BlobStore) -> None:
    assert not store.exists("no/such")
    with pytest.raises(KeyError):
        store.size("no/such")
    with pytest.raises(KeyError):
        list(store.iter_bytes("no/such"))
    with pytest.raises(KeyError):
        store.read_bytes("no/such")
    with pytest.raises(KeyError):
        with store.open_local("no/such"):
            pass


def test_delete_ignores_missing_keys(store: BlobStore, tmp_path: Path) -> None:
    store.put_file("d/1", _file(tmp_path, b"1"))
    store.delete(["d/1", "d/2"])
    assert not store.exists("d/1")


def test_listing_finds_every_blob_under_a_job_and_delete_under_removes_them(
    store: BlobStore, tmp_path: Path
) -> None:
    before = time.time() - 5
    for key in ("job1/inputs/0.png", "job1/results/0-aa.png", "job1/results/0-bb.png",
                "job10/inputs/0.png", "job2/results/0-cc.png"):
        store.put_file(key, _file(tmp_path, key.encode(), key.replace("/", "_")))
    found = dict(store.listing("job1/"))
    assert set(found) == {"job1/inputs/0.png", "job1/results/0-aa.png", "job1/results/0-bb.png"}
    assert all(before < written < time.time() + 5 for written in found.values())
    assert [k for k, _ in store.listing("job1/results")] != []
    assert store.listing("nothing-here/") == []
    assert store.delete_under("job1/") == 3
    assert store.listing("job1/") == []
    assert store.exists("job10/inputs/0.png") and store.exists("job2/results/0-cc.png")


@pytest.mark.parametrize("key", ["../x", "/abs", "a/../b", "a//b", "", "a\x00b", ".hidden"])
def test_path_like_keys_are_refused(store: BlobStore, tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        store.put_file(key, _file(tmp_path, b"1"))


def test_ping_succeeds_on_a_working_store(store: BlobStore) -> None:
    store.ping()


def test_a_file_larger_than_one_upload_part_round_trips(store: BlobStore, tmp_path: Path) -> None:
    data = bytes(range(251)) * (12 * 1024 * 1024 // 251)  # over S3's multipart threshold
    store.put_file("big/blob", _file(tmp_path, data))
    assert store.size("big/blob") == len(data)
    with store.open_local("big/blob") as path:
        assert path.read_bytes() == data


def test_stale_staging_files_are_swept_and_fresh_ones_kept(store: BlobStore, tmp_path: Path) -> None:
    staging = store.staging_dir()
    if staging is None:
        assert store.sweep_staging(0) == 0  # nothing staged locally: nothing to sweep
        return
    old, fresh = staging / "result-old", staging / "result-fresh"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"in progress")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert store.sweep_staging(3600) == 1
    assert not old.exists() and fresh.exists()
