"""GET /v1/models: the shipped models and what the models folder holds, including the files of
operations that run models the operator installs (face_swap: `operator`, each file with whether
it is installed, and what to install when it is not), and the models served by a remote
endpoint (`remote`: where, without secrets).

Each shipped upscaling model carries its cost on this server (seconds per input megapixel,
measured here once a worker has run it); GET /v1/estimate turns a pipeline and image sizes into
seconds, as the page does before an upload.

A file of the folder that cannot be used is listed with its error; nothing in the folder can
make this route fail. Server paths are not shown: a user model is named by its file name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter

from imgq.ai.cpu_nets import unavailable_reason
from imgq.ai.descriptors import SHIPPED, ModelDescriptor
from imgq.api.deps import RuntimeDep
from imgq.ai.costs import seconds_per_megapixel
from imgq.ops.ai_support import AIConfig
from imgq.ops.upscale import installed

log = logging.getLogger(__name__)
router = APIRouter()


def _size(descriptor: ModelDescriptor) -> int | None:
    try:
        location = descriptor.source.location()
    except Exception:  # noqa: BLE001 - the package is not installed
        return None
    files = ([location.with_suffix(".param"), location.with_suffix(".bin")]
             if descriptor.source.format == "ncnn" else [location])
    return sum(f.stat().st_size for f in files if f.is_file()) or None


def cost(descriptor: ModelDescriptor, config: AIConfig) -> dict[str, Any] | None:
    """What the model costs here, per input megapixel of a large image."""
    if descriptor.purpose != "sr":
        return None
    device = "cuda" if config.runs_on_cuda() else "cpu"
    per_mp = seconds_per_megapixel(config.costs(), descriptor, device, config.threads)
    return {"seconds_per_megapixel": round(per_mp.seconds, 2), "device": device,
            "basis": per_mp.basis}


def shipped(config: AIConfig) -> list[dict[str, Any]]:
    return [{**d.public(), "size": _size(d), "available": installed(d),
             "unavailable_reason": unavailable_reason(d), "cost": cost(d, config)}
            for d in SHIPPED]


def user_models(folder: Path | None) -> list[dict[str, Any]]:
    from imgq.ai.models_dir import scan_models_dir

    try:
        return [entry.public() for entry in scan_models_dir(folder)]
    except Exception:  # scan_models_dir lists bad files itself; this is for the unforeseen
        log.exception("the models folder could not be listed")
        return []


def operator_models(config: AIConfig) -> list[dict[str, Any]]:
    """Operations that run model files the operator installs in a folder of their own."""
    from imgq.ai.faces import listing

    return [listing(config.models_dir)]


def models(config: AIConfig) -> dict[str, Any]:
    folder = config.models_dir
    return {"shipped": shipped(config), "user": user_models(folder),
            "operator": operator_models(config),
            "remote": [{"name": name, "operation": e.operation, "kind": e.kind,
                        "where": e.where(), "available": True}
                       for name, e in config.remote.items()],
            "how_to_add": "put a .safetensors or .pth file in the server's IMGQ_AI_MODELS_DIR; "
                          "it is offered as a model of the upscale operation under its file name"}


@router.get("/v1/models", tags=["operations"],
            summary="Shipped AI models, the models found in the models folder, and those "
                    "served by remote endpoints")
async def list_models(rt: RuntimeDep) -> dict[str, Any]:
    # Inspecting a new file loads it (torch): off the event loop.
    return await anyio.to_thread.run_sync(models, AIConfig.from_settings(rt.settings))
