"""Schemathesis over imgq's own OpenAPI document, with a fixed budget and seed: no request it
generates gets a 5xx, and every answer has a status code, content type and shape that the
document declares. The v1 API is held to its document; the older systems' APIs answer in
their own shapes, so for them only the absence of server errors is checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from imgq.compose import build_app
from imgq.config import load_settings

EXAMPLES = 12  # per operation: the whole run stays well under two minutes
DOCUMENTED = ("/v1/", "/healthz", "/readyz")
V1_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
             response_schema_conformance]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    data = tmp_path_factory.mktemp("fuzz")
    application, _ = build_app(load_settings(data_dir=Path(data), workers=1,
                                             allowed_hosts=["testserver", "localhost"]),
                               embedded_workers=False)
    yield application


def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(
    app: FastAPI,
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30, "the document lost its operations"
    for operation in operations:
        checks = V1_CHECKS if operation.path.startswith(DOCUMENTED) else [not_a_server_error]

        @given(case=st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                              operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)))
        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def run(case: schemathesis.Case) -> None:
            try:
                case.call_and_validate(checks=checks)
            except Exception as exc:  # noqa: BLE001 - every operation's failures, not the first
                failures.setdefault(f"{case.method} {case.path}", str(exc)[:600])

        run()
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())
