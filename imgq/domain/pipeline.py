"""Pipeline specs: an ordered list of steps, from JSON or the compact `op:k=v,k=v|op` form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from imgq.errors import InvalidPipeline

MAX_STEPS = 32
#: How deeply lists and objects may nest in a pipeline or a parameter value.
MAX_DEPTH = 8


@dataclass(frozen=True)
class StepSpec:
    op: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, **self.params}


def parse_pipeline(text: str | list[Any]) -> list[StepSpec]:
    """Parse a pipeline given as a JSON list of steps or in the compact text form."""
    if isinstance(text, str):
        stripped = text.strip()
        if not stripped:
            raise InvalidPipeline("the pipeline is empty: give at least one step")
        raw = _parse_json(stripped) if stripped[0] in "[{" else _parse_compact(stripped)
    else:
        raw = text
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InvalidPipeline("the pipeline must be a non-empty list of steps")
    if len(raw) > MAX_STEPS:
        raise InvalidPipeline(f"the pipeline has {len(raw)} steps, more than {MAX_STEPS}")
    return [_step(i, s) for i, s in enumerate(raw)]


def _step(index: int, raw: Any) -> StepSpec:
    if not isinstance(raw, dict):
        raise InvalidPipeline(f"step {index}: must be an object like {{\"op\": \"blur\"}}")
    params = dict(raw)
    op = params.pop("op", None)
    if not isinstance(op, str) or not op:
        raise InvalidPipeline(f"step {index}: missing the \"op\" field naming the operation")
    nested = params.pop("params", None)
    if isinstance(nested, dict):
        params.update(nested)
    return StepSpec(op=op, params=params)


def _parse_json(text: str) -> Any:
    try:
        return load_json(text)
    except json.JSONDecodeError as exc:
        raise InvalidPipeline(f"the pipeline is not valid JSON: {exc.msg} at {exc.pos}") from None
    except ValueError as exc:
        raise InvalidPipeline(f"the pipeline {exc}") from None


def load_json(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads, refusing values nested deeper than `max_depth` (ValueError saying so)."""
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
        depth = max_depth + 1
    else:
        depth = nesting(value)
    if depth > max_depth:
        raise ValueError(f"is nested too deeply: at most {max_depth} levels of lists and objects")
    return value


def nesting(value: Any) -> int:
    """How deeply lists and dicts nest in `value` (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in node)
    return deepest


def _parse_compact(text: str) -> list[dict[str, Any]]:
    steps = []
    for index, chunk in enumerate(text.split("|")):
        name, _, args = chunk.strip().partition(":")
        step: dict[str, Any] = {"op": name.strip()}
        for pair in filter(None, (a.strip() for a in args.split(","))):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise InvalidPipeline(f"step {index}: expected key=value, got {pair!r}")
            step[key.strip()] = _scalar(value.strip())
        steps.append(step)
    return steps


def _scalar(value: str) -> Any:
    try:
        return load_json(value)
    except json.JSONDecodeError:
        return value
    except ValueError as exc:
        raise InvalidPipeline(f"the value {value[:20]!r}… {exc}") from None


def to_compact(steps: list[StepSpec]) -> str:
    def fmt(v: Any) -> str:
        return json.dumps(v) if not isinstance(v, str) else v

    return "|".join(
        s.op + (":" + ",".join(f"{k}={fmt(v)}" for k, v in s.params.items()) if s.params else "")
        for s in steps
    )
