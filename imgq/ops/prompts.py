"""Prompt refinement for text-to-image, as the Backend AI system described it ("beautiful sunset
over mountains" → "beautiful sunset over mountains, highly detailed, 8k", plus a negative
prompt), done by rules rather than by a model, so that the same prompt always gives the same
refined prompt and the operator can read and change what is added.

The rules are JSON (IMGQ_AI_PROMPT_RULES names a file; DEFAULT_RULES otherwise)::

    {"quality_terms": ["highly detailed", "8k"],
     "styles": [{"when": ["portrait", "face"], "add": ["sharp focus", "soft lighting"]}],
     "negative_prompt": "blurry, low quality, ..."}

Refinement: collapse whitespace; then, in order, each style rule whose `when` words occur in
the prompt as whole words (any case) adds its terms, then the quality terms; a term the prompt
already has (any case) is not added twice. The negative prompt is the caller's own when given,
else the rules' default.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgq.errors import InvalidRequest

DEFAULT_RULES: dict[str, Any] = {
    "quality_terms": ["highly detailed", "8k"],
    "styles": [
        {"when": ["portrait", "face", "person", "woman", "man", "girl", "boy"],
         "add": ["sharp focus", "soft lighting"]},
        {"when": ["anime", "manga", "cartoon"], "add": ["clean line art", "vibrant colors"]},
        {"when": ["photo", "photograph", "photography"], "add": ["photorealistic"]},
    ],
    "negative_prompt": "blurry, low quality, lowres, jpeg artifacts, deformed, disfigured, "
                       "bad anatomy, extra limbs, watermark, text, signature",
}


@dataclass(frozen=True)
class StyleRule:
    when: tuple[str, ...]
    add: tuple[str, ...]


@dataclass(frozen=True)
class PromptRules:
    quality_terms: tuple[str, ...]
    styles: tuple[StyleRule, ...]
    negative_prompt: str

    @classmethod
    def parse(cls, data: Any, where: str = "prompt rules") -> PromptRules:
        try:
            styles = tuple(StyleRule(tuple(map(str, s["when"])), tuple(map(str, s["add"])))
                           for s in data.get("styles", []))
            return cls(tuple(map(str, data.get("quality_terms", []))), styles,
                       str(data.get("negative_prompt", "")))
        except (AttributeError, KeyError, TypeError) as exc:
            raise InvalidRequest(f"{where}: expected quality_terms, styles (each with when and "
                                 f"add) and negative_prompt: {exc}") from None

    @classmethod
    def load(cls, path: Path | None) -> PromptRules:
        if path is None:
            return cls.parse(DEFAULT_RULES)
        try:
            return cls.parse(json.loads(path.read_text(encoding="utf-8")), str(path))
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"prompt rules {path}: {exc}") from None


@dataclass(frozen=True)
class Refined:
    prompt: str
    negative_prompt: str


def _has(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, re.IGNORECASE) is not None


def refine(prompt: str, negative: str | None, rules: PromptRules) -> Refined:
    text = " ".join(prompt.split())
    terms: list[str] = []
    for style in rules.styles:
        if any(_has(text, word) for word in style.when):
            terms.extend(style.add)
    terms.extend(rules.quality_terms)
    added: list[str] = []
    for term in terms:
        if not _has(text, term) and term.lower() not in (a.lower() for a in added):
            added.append(term)
    refined = ", ".join([text.rstrip(", "), *added]) if added else text
    return Refined(refined, negative if negative is not None else rules.negative_prompt)
