"""Prompt refinement: deterministic rules, as the Backend AI document shows them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgq.errors import InvalidRequest
from imgq.ops.prompts import DEFAULT_RULES, PromptRules, refine


def test_the_documents_example_gets_the_documents_refined_prompt() -> None:
    refined = refine("beautiful sunset over mountains", None, PromptRules.load(None))
    assert refined.prompt == "beautiful sunset over mountains, highly detailed, 8k"
    assert refined.negative_prompt == DEFAULT_RULES["negative_prompt"]


def test_style_terms_follow_keywords_and_nothing_is_added_twice() -> None:
    rules = PromptRules.load(None)
    refined = refine("  A PORTRAIT of an old man,  highly detailed ", "ugly", rules)
    assert refined.prompt == "A PORTRAIT of an old man, highly detailed, sharp focus, " \
                             "soft lighting, 8k"
    assert refined.negative_prompt == "ugly"  # the caller's own negative prompt wins
    assert refine("a portraiture study", None, rules).prompt == \
        "a portraiture study, highly detailed, 8k"  # whole words only
    assert refine(refined.prompt, None, rules).prompt == refined.prompt  # idempotent


def test_the_operator_rules_file_replaces_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"quality_terms": ["masterpiece"],
                                "styles": [{"when": ["cat"], "add": ["fluffy"]}],
                                "negative_prompt": "dogs"}))
    refined = refine("a cat on a mat", None, PromptRules.load(path))
    assert (refined.prompt, refined.negative_prompt) == ("a cat on a mat, fluffy, masterpiece",
                                                         "dogs")
    path.write_text(json.dumps({"styles": [{"add": ["x"]}]}))
    with pytest.raises(InvalidRequest, match="when"):
        PromptRules.load(path)
