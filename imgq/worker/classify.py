"""Errors classified by cause, in one place.

The worker's retry policy asks one question of every failure: whose fault is it?

- the server's (database, storage, broker, a full or read-only disk): `infrastructure`,
  retried with backoff without spending the item's attempts, and never reported as the
  image's fault;
- a resource that ran out (memory) or a worker process that died: retried, spending an
  attempt, because the image may be what exhausts it;
- the image's or the pipeline's: permanent, with a message that says which.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from pathlib import Path

import httpx
from sqlalchemy import exc as sa_exc

from imgq.errors import (
    DatabaseUnavailable,
    ImgqError,
    OutOfMemory,
    StorageFull,
    StorageReadOnly,
    StorageUnavailable,
    TimeLimitExceeded,
    Unavailable,
)

log = logging.getLogger(__name__)

try:  # S3 storage is an optional part (the fleet extra)
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # pragma: no cover - the default install has no boto
    BotoCoreError = ClientError = ()

try:  # Celery's soft time limit, raised inside a prefork child
    from billiard.exceptions import SoftTimeLimitExceeded
except ImportError:  # pragma: no cover
    SoftTimeLimitExceeded = ()

#: OSError numbers that say the storage is in trouble, not the image.
_STORAGE_ERRNOS = {
    errno.ENOSPC: "file storage is full",
    errno.EDQUOT: "file storage's quota is exhausted",
    errno.EROFS: "file storage is read-only",
    errno.EIO: "file storage reported an input/output error",
    errno.EACCES: "file storage refused access",
    errno.EPERM: "file storage refused access",
    errno.ESTALE: "file storage's file handle went stale",
}

#: How much free space a write probe needs before storage counts as healthy.
PROBE_BYTES = 64 * 1024


def classify(exc: BaseException) -> ImgqError:
    """What an exception means for the item: an ImgqError that knows if it is transient and
    whether it is the server's trouble."""
    if isinstance(exc, ImgqError):
        return exc
    cause = infrastructure_cause(exc)
    if cause is not None:
        return cause
    if isinstance(exc, SoftTimeLimitExceeded):
        return TimeLimitExceeded()
    if isinstance(exc, MemoryError):
        return OutOfMemory("the worker ran out of memory processing this image")
    return ImgqError("internal error while processing the image; see the server log")


def infrastructure_cause(exc: BaseException) -> Unavailable | None:
    """The server's trouble behind `exc`, named by its cause (the database, file storage, a
    full or read-only disk, a service out of reach); None when it is not the server's. The API
    answers these with a 503, the worker retries them without spending an attempt."""
    if isinstance(exc, sa_exc.DBAPIError | sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return _database(exc)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "?"))
        return StorageUnavailable(f"file storage answered {code}")
    if isinstance(exc, BotoCoreError):
        return StorageUnavailable(f"file storage could not be reached ({type(exc).__name__})")
    if isinstance(exc, OSError):
        return _os_error(exc)
    if isinstance(exc, httpx.TransportError):  # a remote model endpoint, out of reach
        return Unavailable(f"a service could not be reached ({type(exc).__name__})")
    return None


def _database(exc: BaseException) -> Unavailable | None:
    if isinstance(exc, sa_exc.DBAPIError) and not _is_connection_trouble(exc):
        return None  # a constraint or a bad value: not the server being down
    text = str(getattr(exc, "orig", exc)).lower()
    if "disk is full" in text or "no space" in text:
        return StorageFull("the database's disk is full")
    if "readonly" in text or "read-only" in text:
        return StorageReadOnly("the database is read-only")
    return DatabaseUnavailable(f"the database could not be reached ({type(exc).__name__})")


def _is_connection_trouble(exc: sa_exc.DBAPIError) -> bool:
    # OperationalError covers disconnects, restarts, timeouts and SQLite's "database is
    # locked"; InterfaceError a closed connection. Constraint or programming errors are bugs.
    return exc.connection_invalidated or isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError)


def _os_error(exc: OSError) -> Unavailable:
    if isinstance(exc, ConnectionError | TimeoutError):
        return Unavailable(f"a service could not be reached ({type(exc).__name__})")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"{_STORAGE_ERRNOS[exc.errno]}")
    if exc.errno == errno.EROFS:
        return StorageReadOnly(f"{_STORAGE_ERRNOS[exc.errno]}")
    reason = _STORAGE_ERRNOS.get(exc.errno or 0)
    if reason is not None:
        return StorageUnavailable(reason)
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return StorageUnavailable(f"a file operation failed ({name})")


def storage_trouble(folder: Path | None) -> StorageUnavailable | None:
    """Can `folder` be written? A failed encode is the image's fault only when it can.

    libvips reports a full or read-only disk as "write error" or "unable to write to
    target", the same words it uses when a truncated input stops a lazy pipeline; a probe
    write tells the two apart."""
    where = str(folder) if folder is not None else tempfile.gettempdir()
    try:
        fd, name = tempfile.mkstemp(prefix="probe-", dir=where)
    except OSError as exc:
        return _as_storage(exc)
    try:
        os.write(fd, b"\0" * PROBE_BYTES)
        os.fsync(fd)
    except OSError as exc:
        return _as_storage(exc)
    finally:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
    return None


def _as_storage(exc: OSError) -> StorageUnavailable:
    error = _os_error(exc)
    return error if isinstance(error, StorageUnavailable) else StorageUnavailable(error.message)
