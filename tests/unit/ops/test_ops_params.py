"""Parameters: validated when the pipeline is bound, errors name the step and the field."""

from __future__ import annotations

import json

import pytest

from imgq.domain.pipeline import parse_pipeline
from imgq.errors import InvalidParameters, InvalidPipeline
from imgq.ops.base import Registry

EXPECTED_OPERATIONS = {
    "blur",
    "brightness",
    "contrast",
    "crop",
    "edge_enhance",
    "edges",
    "encode",
    "flip",
    "flop",
    "grayscale",
    "resize",
    "rotate",
    "saturation",
    "sharpen",
    "smooth",
    "thumbnail",
}


def test_registry_holds_every_classic_operation(registry: Registry) -> None:
    assert EXPECTED_OPERATIONS <= {op.name for op in registry}


@pytest.mark.parametrize(
    "pipeline",
    [
        "resize:width=800,fit=cover|encode:format=webp",
        '[{"op": "resize", "width": 800, "fit": "cover"}, {"op": "encode", "format": "webp"}]',
        [
            {"op": "resize", "params": {"width": 800, "fit": "cover"}},
            {"op": "encode", "format": "webp"},
        ],
    ],
    ids=["compact", "json", "nested-params"],
)
def test_compact_and_json_forms_bind_to_the_same_typed_parameters(
    registry: Registry, pipeline: str | list[object]
) -> None:
    resize, encode = registry.bind(parse_pipeline(pipeline))
    assert (resize.name, resize.params.width, resize.params.fit) == ("resize", 800, "cover")  # type: ignore[attr-defined]
    assert resize.params.height is None and resize.params.enlarge is False  # type: ignore[attr-defined]
    assert (encode.name, encode.params.format) == ("encode", "webp")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("pipeline", "field"),
    [
        ("grayscale|resize:width=0", "width"),
        ("grayscale|resize:width=wide", "width"),
        ("grayscale|resize:width=10,fit=stretch", "fit"),
        ("grayscale|resize:width=10,kernel=box", "kernel"),
        ("grayscale|resize:fit=cover", "give a width, a height, or both"),
        ("grayscale|resize:width=10,colour=red", "colour: unknown parameter"),
        ("grayscale|blur:radius=-1", "radius"),
        ("grayscale|blur:sigma=2", "sigma: unknown parameter"),
        ("grayscale|sharpen:amount=0", "amount"),
        ("grayscale|edges:strength=2", "strength: unknown parameter"),
        ("grayscale|smooth:more=true", "more: unknown parameter"),
        ("grayscale|edge_enhance:more=maybe", "more"),
        ("grayscale|thumbnail:size=0", "size"),
        ("grayscale|thumbnail:crop=smart", "crop"),
        ("grayscale|crop:left=1,top=1", "width"),
        ("grayscale|crop:left=-1,width=2,height=2", "left"),
        ("grayscale|rotate", "angle"),
        ("grayscale|rotate:angle=400", "angle"),
        ("grayscale|rotate:angle=30,background=red", "background"),
        ("grayscale|flip:axis=x", "axis: unknown parameter"),
        ("grayscale|brightness", "factor"),
        ("grayscale|contrast:factor=-0.5", "factor"),
        ("grayscale|saturation:factor=lots", "factor"),
        ("grayscale|encode:format=bmp", "format"),
        ("grayscale|encode:format=png,quality=80", "quality"),
        ("grayscale|encode:format=jpeg,quality=0", "quality"),
        ("grayscale|encode:format=jpeg,lossless=true", "lossless"),
    ],
)
def test_invalid_parameters_name_the_step_and_the_field(
    registry: Registry, pipeline: str, field: str
) -> None:
    with pytest.raises(InvalidParameters) as caught:
        registry.bind(parse_pipeline(pipeline))
    error = caught.value
    op = pipeline.split("|")[1].split(":")[0]
    assert error.message.startswith(f"step 1 ({op}): ")
    assert field in error.message
    assert error.details == {"step": 1, "op": op}
    assert error.status_code == 422


def test_invalid_parameters_in_json_form_name_the_step_and_the_field(registry: Registry) -> None:
    pipeline = json.dumps([{"op": "crop", "left": 0, "top": 0, "width": 5, "height": 0}])
    with pytest.raises(InvalidParameters, match=r"^step 0 \(crop\): height: "):
        registry.bind(parse_pipeline(pipeline))


def test_unknown_operation_lists_the_known_ones(registry: Registry) -> None:
    with pytest.raises(InvalidPipeline, match="unknown operation 'emboss'.*resize"):
        registry.bind(parse_pipeline("emboss"))


def test_lossless_and_quality_are_allowed_when_the_format_is_left_to_the_input(
    registry: Registry,
) -> None:
    (step,) = registry.bind(parse_pipeline("encode:lossless=true,quality=90"))
    assert step.params.lossless is True  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(EXPECTED_OPERATIONS))
def test_operation_describes_itself_for_the_operations_listing(
    registry: Registry, name: str
) -> None:
    description = registry.get(name).describe()
    json.dumps(description)
    assert description["summary"] and description["resource"] == "cpu" and description["available"]
    schema = description["params"]
    assert schema.get("additionalProperties") is False
    for field, spec in schema.get("properties", {}).items():
        assert spec.get("description"), f"{name}.{field} has no description"
