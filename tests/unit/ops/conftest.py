"""Shared fixtures of the operation tests: a null step context and pipelines run in memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from imgq.domain.pipeline import parse_pipeline
from imgq.ops import build_registry
from imgq.ops.base import NullContext, Registry
from imgq.ops.image import Image

RunPipeline = Callable[[str | list[Any], Image], Image]


@pytest.fixture
def ctx() -> NullContext:
    return NullContext()


@pytest.fixture(scope="session")
def registry() -> Registry:
    return build_registry()


@pytest.fixture
def run(registry: Registry, ctx: NullContext) -> RunPipeline:
    """Bind a pipeline (JSON or compact form) and apply its steps one after another."""

    def run_pipeline(pipeline: str | list[Any], image: Image) -> Image:
        for step in registry.bind(parse_pipeline(pipeline)):
            image = step.op.apply(image, step.params, ctx)
        return image

    return run_pipeline
