"""The BlobStore interface: where uploads and results live, by key."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
CHUNK = 256 * 1024


def check_key(key: str) -> str:
    """Keys are made by imgq, never from client input; refuse anything path-like anyway."""
    if not _KEY.match(key) or len(key) > 200:
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobStore(ABC):
    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Store a local file under `key`, atomically: readers see all of it or nothing.

        The file at `path` may be moved (it is the caller's temporary file)."""

    @abstractmethod
    def open_local(self, key: str) -> AbstractContextManager[Path]:
        """A local path with the blob's bytes, valid inside the `with` block."""

    @abstractmethod
    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """Stream the blob's bytes."""

    def read_bytes(self, key: str) -> bytes:
        """The blob's bytes at once (a small one: a download sent whole); KeyError when
        missing."""
        return b"".join(self.iter_bytes(key))

    def read_at_once(self, key: str, max_bytes: int) -> bytes | None:
        """The blob's bytes when it has at most `max_bytes` and the store reads it without
        waiting on a network (a local file), for a caller that must not wait long: the API's
        event loop. None otherwise: read it with `read_bytes` or `iter_bytes` in a thread.
        KeyError when missing (from a store that reads files at once; one that does not
        answers None without looking)."""
        return None

    @abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes; KeyError when missing."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Delete blobs; missing keys are ignored."""

    @abstractmethod
    def listing(self, prefix: str) -> list[tuple[str, float]]:
        """Every blob whose key starts with `prefix` (a job's id and a slash): its key and
        when it was last written (Unix time)."""

    def delete_under(self, prefix: str) -> int:
        """Delete every blob under `prefix`, recorded or not; return how many."""
        found = [key for key, _ in self.listing(prefix)]
        self.delete(found)
        return len(found)

    @abstractmethod
    def ping(self) -> None:
        """Raise when the store cannot be reached or written."""

    def sweep_staging(self, older_than_seconds: float) -> int:
        """Delete temporary files left behind by killed processes; return how many."""
        return 0

    def staging_dir(self) -> Path | None:
        """A folder on the same filesystem for temporary files (cheap renames), if any."""
        return None
