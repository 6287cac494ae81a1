from __future__ import annotations

import pytest

from imgq.domain.pipeline import StepSpec, parse_pipeline, to_compact
from imgq.errors import InvalidPipeline


def test_json_and_compact_forms_parse_to_the_same_steps() -> None:
    as_json = parse_pipeline(
        '[{"op": "resize", "width": 800, "fit": "cover"}, {"op": "encode", "format": "webp"}]'
    )
    compact = parse_pipeline("resize:width=800,fit=cover|encode:format=webp")
    assert as_json == compact == [
        StepSpec("resize", {"width": 800, "fit": "cover"}), StepSpec("encode", {"format": "webp"})
    ]


def test_compact_values_keep_their_json_types() -> None:
    (step,) = parse_pipeline("x:a=1,b=1.5,c=true,d=text,e=null")
    assert step.params == {"a": 1, "b": 1.5, "c": True, "d": "text", "e": None}


def test_nested_params_object_is_accepted() -> None:
    assert parse_pipeline('[{"op": "blur", "params": {"radius": 3}}]') == [
        StepSpec("blur", {"radius": 3})
    ]


def test_compact_form_round_trips() -> None:
    steps = parse_pipeline("resize:width=800,enlarge=true|grayscale")
    assert parse_pipeline(to_compact(steps)) == steps


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("", "empty"), ("[]", "non-empty"), ("[1]", "step 0"), ('[{"width": 3}]', '"op"'),
     ("[{", "not valid JSON"), ("resize:width", "key=value"), ("|".join(["grayscale"] * 40),
                                                                 "more than")],
)
def test_bad_pipelines_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(InvalidPipeline) as info:
        parse_pipeline(text)
    assert fragment in info.value.message
    assert info.value.status_code == 422
