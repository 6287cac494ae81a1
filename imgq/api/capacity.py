"""Free disk space: uploads are refused (503 storage_full, Retry-After) and /readyz says not
ready while the staging folder or local storage has less than IMGQ_MIN_FREE_BYTES free."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from imgq.errors import StorageFull
from imgq.worker.runtime import Runtime


def watched_folders(rt: Runtime) -> list[Path]:
    """Where uploads are staged, local blobs kept, and a SQLite database written."""
    folders = [rt.blobs.staging_dir() or Path(tempfile.gettempdir())]
    url = rt.settings.database_url
    if url.startswith("sqlite") and url.split("///", 1)[-1] not in ("", ":memory:"):
        folders.append(Path(url.split("///", 1)[-1]).parent)
    return folders


def low_space(rt: Runtime) -> str | None:
    """Why the disk is too full for new work, or None."""
    floor = rt.settings.min_free_bytes
    for folder in watched_folders(rt):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue  # an unreachable folder is storage's own check to report
        if free < floor:
            return (f"only {free / 1e6:,.0f} MB of disk space left, less than the "
                    f"{floor / 1e6:,.0f} MB kept free (IMGQ_MIN_FREE_BYTES)")
    return None


def refuse_when_full(rt: Runtime) -> None:
    """Before an upload's first file is staged, in the thread that stages it (no hand-off of
    its own): 503 storage_full rather than a disk filled to the last byte."""
    problem = low_space(rt)
    if problem:
        raise StorageFull(f"file storage is full: {problem}; try again later")
