"""A model-backed step run on the remote endpoint the operator configured for its model
(IMGQ_AI_REMOTE_ENDPOINTS; the protocols are in imgq/ai/remote.py).

The image goes out as PNG (lossless: alpha and 16 bits survive) and the result comes back
decoded, so the steps after it and the encode are the same as for a local model. Only an
endpoint of the settings is ever sent anything: a job names a model, never a URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyvips

from imgq.ai.remote import RemoteRequest, placeholders, run
from imgq.config import MODEL_CHOSEN_OPERATIONS, RemoteEndpoint, SettingsError
from imgq.errors import RemoteFailed
from imgq.ops.ai_support import AIConfig, stopping_as_the_item_asks
from imgq.ops.base import Operation, Registry, StepContext
from imgq.ops.image import Image


class AIOperation(Operation):
    """An operation backed by a model, which the AI settings may send to a remote endpoint."""

    def __init__(self, config: AIConfig | None = None) -> None:
        self._config = config

    @property
    def config(self) -> AIConfig:
        return self._config or AIConfig.from_environment()

    @property
    def remote_models(self) -> dict[str, str]:
        return where(self.config, self.name)


@dataclass(frozen=True)
class Served:
    """A model name and the endpoint that serves it."""

    name: str
    endpoint: RemoteEndpoint


def serving(config: AIConfig, operation: str, model: str | None) -> Served | None:
    """The endpoint a step of `operation` goes to, or None when it runs here. An operation
    whose `model` parameter picks it goes remote for the models named so; any other has at
    most one endpoint, which serves it whole."""
    endpoints = config.remote_for(operation)
    if operation in MODEL_CHOSEN_OPERATIONS:
        return Served(model, endpoints[model]) if model in endpoints else None
    return next((Served(n, e) for n, e in endpoints.items()), None)


def where(config: AIConfig, operation: str) -> dict[str, str]:
    """What GET /v1/operations shows: model name → where it runs (no secret)."""
    return {name: e.where() for name, e in config.remote_for(operation).items()}


def check_inputs(registry: Registry, config: AIConfig) -> None:
    """SettingsError at start-up for a Replicate `input` naming what the step does not have
    (the image, or a parameter of the operation)."""
    for name, endpoint in config.remote.items():
        if endpoint.operation not in registry:
            continue
        op = registry.get(endpoint.operation)
        known = set(op.params_model.model_fields) | ({"image"} if not op.makes_image else set())
        unknown = sorted(placeholders(endpoint.input) - known)
        if unknown:
            raise SettingsError(
                f"invalid settings: IMGQ_AI_REMOTE_ENDPOINTS.{name}.input: "
                f"{', '.join('{' + u + '}' for u in unknown)} is not something a "
                f"{endpoint.operation} step has; it has {{{'}, {'.join(sorted(known))}}}")


def encode_png(image: Image) -> bytes:
    return bytes(image.vips.pngsave_buffer(compression=1))


def decoded(data: bytes, served: Served) -> pyvips.Image:
    try:
        result = pyvips.Image.new_from_buffer(data, "", fail_on="error")
        return result.copy_memory()
    except pyvips.Error:
        raise RemoteFailed(f"{served.endpoint.where()} sent back something that is not an "
                           "image") from None


def run_remote(config: AIConfig, served: Served, operation: str, params: Mapping[str, Any],
               ctx: StepContext, image: Image | None = None,
               attachments: Mapping[str, str] | None = None) -> pyvips.Image:
    """The step's result from the endpoint. `attachments`: parameter → attachment name, for
    the parameters that name one of the job's attachments (a style picture, a face)."""
    files = {param: (name, encode_png(ctx.attachment(name)))
             for param, name in (attachments or {}).items()}
    request = RemoteRequest(
        name=served.name, endpoint=served.endpoint,
        token=config.remote_tokens.get(served.endpoint.token) if served.endpoint.token else None,
        operation=operation, params=dict(params),
        image=("image.png", encode_png(image)) if image is not None else None,
        attachments=files)
    ctx.progress(0.0, f"{served.name}: sending to {served.endpoint.where()}")
    with stopping_as_the_item_asks(ctx):
        data = run(request, config.remote_options, ctx.progress, ctx.should_abort)
    return decoded(data, served)
