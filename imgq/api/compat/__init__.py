"""The APIs of the five earlier systems imgq replaces, each served on ordinary imgq jobs.

Each module is one system's API, an APIRouter with its own OpenAPI tag, switched on or off by
its setting (IMGQ_COMPAT_AI_UPSCALER ... IMGQ_COMPAT_CELERY_DEMO, all on by default).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imgq.api.compat import (
    ai_upscaler,
    backend_ai,
    celery_demo,
    image_api,
    processed,
    queue_demo,
)
from imgq.config import Settings
from imgq.ops.base import Registry

#: setting name -> the module serving that system's API.
MODULES = {
    "compat_ai_upscaler": ai_upscaler,
    "compat_image_api": image_api,
    "compat_queue_demo": queue_demo,
    "compat_backend_ai": backend_ai,
    "compat_celery_demo": celery_demo,
}


def enabled(settings: Settings, registry: Registry) -> list[tuple[APIRouter, dict[str, Any]]]:
    """(router, OpenAPI tag) of every compatibility API the settings switch on."""
    if settings.compat_queue_demo:
        queue_demo.check_settings(settings, registry)
    found = [(m.router, m.OPENAPI_TAG) for name, m in MODULES.items() if getattr(settings, name)]
    if settings.compat_queue_demo or settings.compat_celery_demo:
        tag = (queue_demo if settings.compat_queue_demo else celery_demo).OPENAPI_TAG
        found.append((processed.router, tag))
    return found
