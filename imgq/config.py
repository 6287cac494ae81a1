"""Settings: every one has a default, a description and a group, read from IMGQ_* variables."""

from __future__ import annotations

import os
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "IMGQ_"


def _setting(default: Any, description: str, group: str, **kw: Any) -> Any:
    return Field(default, description=description, json_schema_extra={"group": group}, **kw)


class AnimatedPolicy(str, Enum):
    first_frame = "first_frame"
    reject = "reject"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # server
    host: str = _setting("127.0.0.1", "Address the HTTP server listens on.", "server")
    port: int = _setting(8000, "Port the HTTP server listens on.", "server", ge=1, le=65535)
    public_url: str = _setting(
        "", "Base URL used in links given to clients; empty means the request's own.", "server"
    )
    log_level: str = _setting("INFO", "Logging level (DEBUG, INFO, WARNING, ERROR).", "server")

    # storage
    data_dir: Path = _setting(Path("imgq-data"), "Folder for the SQLite database and files.", "storage")
    database_url: str = _setting(
        "", "SQLAlchemy URL of the job store; empty means SQLite in the data folder.", "storage"
    )
    storage_url: str = _setting(
        "", "Where files are kept: file:///path; empty means <data_dir>/blobs.", "storage"
    )

    # workers
    workers: int = _setting(
        0, "Worker processes run by `imgq serve`; 0 means one per CPU core.", "workers", ge=0
    )
    lease_seconds: float = _setting(
        60.0, "How long a claimed item stays ours without a heartbeat.", "workers", gt=0
    )
    item_time_limit: float = _setting(
        600.0, "Seconds one item may process before it fails as timed out.", "workers", gt=0
    )
    max_attempts: int = _setting(
        3, "Attempts per item, counting the first, before a transient error fails it.", "workers", ge=1
    )
    retry_backoff: float = _setting(
        2.0, "Base seconds of the exponential retry backoff (with jitter).", "workers", gt=0
    )
    stuck_after: float = _setting(
        3600.0, "Seconds after which a queued item that never ran is failed.", "workers", gt=0
    )

    # limits
    max_files: int = _setting(10, "Files per job.", "limits", ge=1)
    max_file_bytes: int = _setting(50 * 1024 * 1024, "Bytes per uploaded file.", "limits", ge=1)
    max_pixels: int = _setting(16_000_000, "Pixels per image (width × height).", "limits", ge=1)
    max_frames: int = _setting(100, "Frames in an animated image.", "limits", ge=1)
    animated: AnimatedPolicy = _setting(
        AnimatedPolicy.first_frame,
        "Animated GIF/WebP inputs: first_frame processes the first frame, reject refuses them.",
        "limits",
    )
    max_filename_bytes: int = _setting(255, "Longest original file name kept.", "limits", ge=16)

    # expiry
    ttl_seconds: int = _setting(3600, "Default lifetime of a job's files.", "expiry", ge=1)
    max_ttl_seconds: int = _setting(7 * 24 * 3600, "Longest ttl_seconds a client may ask.", "expiry", ge=1)
    sweep_interval: float = _setting(300.0, "Seconds between two sweeps.", "expiry", gt=0)

    @model_validator(mode="after")
    def _fill_paths(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'imgq.db').resolve()}"
        if not self.storage_url:
            self.storage_url = (self.data_dir / "blobs").resolve().as_uri()
        if self.ttl_seconds > self.max_ttl_seconds:
            raise ValueError("ttl_seconds must not exceed max_ttl_seconds")
        return self

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def describe_settings() -> str:
    """Text listing every setting, its variable and default, grouped (for --help)."""
    groups: dict[str, list[str]] = {}
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        group = str(extra.get("group", "other"))
        default = field.default.value if isinstance(field.default, Enum) else field.default
        groups.setdefault(group, []).append(
            f"{env_name(name)} (default {default!s:.40}): {field.description}"
        )
    lines = []
    for group, rows in groups.items():
        lines.append(f"[{group}]")
        lines.extend(f"  {row}" for row in rows)
    return "\n".join(lines)


class SettingsError(Exception):
    pass


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; a bad value raises SettingsError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            name = env_name(loc) if loc else "settings"
            problems.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
