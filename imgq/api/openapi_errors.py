"""Make the OpenAPI document true about errors: FastAPI declares its own 422 body
(`{"detail": [...]}`), but imgq answers every error, request validation included, with
`{"error": {"code", "message"}}`; and any route that reads the database or storage may
answer 503 (with Retry-After) while they are down."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

DOCUMENTED = ("/v1/", "/healthz", "/readyz")
ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
UNAVAILABLE = "The database or storage cannot be reached, or the disk is full; the code says " \
              "which, Retry-After says when to try again."


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def install(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_errors(original())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _document_errors(schema: dict[str, Any]) -> None:
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith(DOCUMENTED) or path == "/healthz":
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = _error("A parameter or the pipeline is invalid (the message "
                                          "names it).")
            responses.setdefault("503", _error(UNAVAILABLE))
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorResponse" not in schemas:
        schemas["ErrorResponse"] = {
            "type": "object", "required": ["error"], "title": "ErrorResponse",
            "properties": {"error": {"type": "object", "required": ["code", "message"],
                                     "properties": {"code": {"type": "string"},
                                                    "message": {"type": "string"}}}}}
