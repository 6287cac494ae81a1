"""Blobs in a local folder, written through a temporary file and a rename."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from imgq.blobs.base import CHUNK, BlobStore, check_key


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._tmp_real = self.tmp.resolve()
        self._folders: set[Path] = set()  # folders known to exist: no mkdir per file

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        self._ensure_folder(target.parent)
        if path.parent == self.tmp or path.parent.resolve() == self._tmp_real:
            self._move(path, target)
            return
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp)
        os.close(fd)
        try:
            shutil.copyfile(path, tmp_name)
            self._move(Path(tmp_name), target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _move(self, source: Path, target: Path) -> None:
        try:
            os.replace(source, target)
        except FileNotFoundError:
            if not source.exists():
                raise
            self._folders.discard(target.parent)  # pruned meanwhile by another process
            self._ensure_folder(target.parent)
            os.replace(source, target)

    def _ensure_folder(self, folder: Path) -> None:
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            if len(self._folders) > 10_000:
                self._folders.clear()
            self._folders.add(folder)

    def open_local(self, key: str) -> AbstractContextManager[Path]:
        path = self._path(key)
        if not path.is_file():
            raise KeyError(key)
        return nullcontext(path)

    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise KeyError(key)
        return _read_chunks(path, chunk_size)

    def read_bytes(self, key: str) -> bytes:
        try:  # one open and read: no check first, no chunks to join
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def read_at_once(self, key: str, max_bytes: int) -> bytes | None:
        try:  # one open and one read of at most max_bytes + 1: a longer file is not read
            with open(self._path(key), "rb", buffering=0) as fh:
                data = fh.read(max_bytes + 1)
        except FileNotFoundError:
            raise KeyError(key) from None
        return data if len(data) <= max_bytes else None

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            self._folders.discard(path.parent)
            _prune_empty(path.parent, self.root)

    def listing(self, prefix: str) -> list[tuple[str, float]]:
        folder = self._path(prefix.rstrip("/"))
        if not folder.is_dir():
            return []
        found = []
        for path in folder.rglob("*"):
            try:
                if path.is_file():
                    found.append((path.relative_to(self.root).as_posix(), path.stat().st_mtime))
            except FileNotFoundError:
                continue  # deleted meanwhile
        return found

    def ping(self) -> None:
        fd, name = tempfile.mkstemp(dir=self.tmp)
        os.close(fd)
        os.unlink(name)

    def staging_dir(self) -> Path:
        return self.tmp

    def sweep_staging(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        for entry in self.tmp.iterdir():
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # finished and moved meanwhile
        return removed


def _read_chunks(path: Path, chunk_size: int) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            yield chunk


def _prune_empty(folder: Path, root: Path) -> None:
    while folder != root and folder.is_dir():
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
