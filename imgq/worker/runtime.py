"""What a process needs to do imgq's work, built once from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyvips

from imgq.blobs import BlobStore, open_blob_store
from imgq.config import Settings
from imgq.ops import build_registry
from imgq.ops.base import Registry
from imgq.store.db import make_engine, migrate
from imgq.store.repository import Repository
from imgq.worker.hooks import ItemHooks, default_hooks

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    repo: Repository
    blobs: BlobStore
    registry: Registry
    hooks: ItemHooks = field(default_factory=default_hooks)  # around each item's life

    @classmethod
    def from_settings(cls, settings: Settings, run_migrations: bool = False) -> Runtime:
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size,
                             max_overflow=settings.db_max_overflow)
        if run_migrations:
            migrate(engine)
        return cls(settings, Repository(engine), open_blob_store(settings.storage_url, settings),
                   build_registry(settings))

    def close(self) -> None:
        self.repo.engine.dispose()


def tune_libvips(threads: int) -> None:
    """One worker process per core works best with few libvips threads each, and no
    operation cache: every item is a different image, and the cache would hold files open."""
    pyvips.concurrency_set(max(1, threads))
    pyvips.cache_set_max(0)
