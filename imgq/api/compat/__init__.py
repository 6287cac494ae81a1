"""The APIs of the five earlier systems imgq replaces, each served on ordinary imgq jobs.

Each module is one system's API, an APIRouter with its own OpenAPI tag, switched on or off by
its setting (IMGQ_COMPAT_SEED000 ... IMGQ_COMPAT_SEED004, all on by default).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imgq.api.compat import (
    seed000_upscaler,
    seed001_image_api,
    seed002_queue_demo,
    seed003_backend_ai,
    seed004_celery,
)
from imgq.config import Settings
from imgq.ops.base import Registry

#: setting name -> the module serving that system's API.
MODULES = {
    "compat_seed000": seed000_upscaler,
    "compat_seed001": seed001_image_api,
    "compat_seed002": seed002_queue_demo,
    "compat_seed003": seed003_backend_ai,
    "compat_seed004": seed004_celery,
}


def enabled(settings: Settings, registry: Registry) -> list[tuple[APIRouter, dict[str, Any]]]:
    """(router, OpenAPI tag) of every compatibility API the settings switch on."""
    if settings.compat_seed002:
        seed002_queue_demo.check_settings(settings, registry)
    return [(m.router, m.OPENAPI_TAG) for name, m in MODULES.items() if getattr(settings, name)]
