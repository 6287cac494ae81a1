"""A pipeline is validated once, at submit, and stored normalised: every parameter with its
default filled and aliases resolved, so what GET shows is what the worker runs, and a release
that changes a default never changes a queued job."""

from __future__ import annotations

from imgq.domain.pipeline import parse_pipeline
from imgq.ops import build_registry
from imgq.ops.encode import EncodeParams
from imgq.ops.resize import ResizeParams


def test_the_stored_pipeline_has_every_default_and_no_alias() -> None:
    registry = build_registry()
    steps = registry.bind(parse_pipeline("resize:width=800|encode:format=jpg"))
    stored = [s.to_dict() for s in steps]
    assert stored[0]["op"] == "resize" and stored[0]["width"] == 800
    assert set(stored[0]) == {"op", *ResizeParams.model_fields}
    assert stored[1]["format"] == "jpeg"
    assert set(stored[1]) == {"op", *EncodeParams.model_fields}


def test_the_worker_gets_back_the_same_steps_without_validating_again() -> None:
    registry = build_registry()
    steps = registry.bind(parse_pipeline("resize:width=800,fit=cover|sharpen|encode:format=webp"))
    restored = registry.restore([s.to_dict() for s in steps])
    assert [(s.name, s.params) for s in restored] == [(s.name, s.params) for s in steps]


def test_a_stored_value_is_trusted_not_checked_again() -> None:
    """A limit tightened by a later release does not fail a job queued under the old one."""
    registry = build_registry()
    (step,) = registry.restore([{"op": "encode", "format": "webp", "quality": 1000}])
    assert step.params.quality == 1000  # type: ignore[attr-defined]
