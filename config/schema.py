"""OpenAPI postprocessing (drf-spectacular hook): every operation documents the errors it can answer with,
in the API's error body, whose ``code`` is the closed enumeration of config.error_codes.

A hook rather than decorators on each view: an endpoint is documented the moment it is routed. Responses a
view declares itself (a more specific description) are kept.
"""

from __future__ import annotations

from typing import Any

from config.error_codes import ERROR_CODES, ROW_ERROR_CODES, describe

ERROR_REF = {"$ref": "#/components/schemas/Error"}

# Any operation: the middleware, authentication, content negotiation and the exception handler apply to all.
EVERY_OPERATION = {
    "400": "Invalid input: a query parameter the operation does not know, a bad filter or page size, a NUL "
           "character, or a body that breaks a rule (`code` says which; `field_errors` names the inputs).",
    "401": "Not authenticated (`not_authenticated`, `authentication_failed`).",
    "403": "The role does not allow this, or a session request without a valid CSRF token.",
    "404": "No such record in your scope, or no such page (`not_found`).",
    "406": "The Accept header does not allow JSON (`not_acceptable`).",
    "413": "The request body is over the API's size limit (`body_too_large`).",
    "429": "Locked after repeated failed authentications (`too_many_failures`).",
    "500": "Unexpected error, nothing stored: quote the request id (`server_error`).",
}
WRITES = {
    "409": "The record's state forbids this, or the Idempotency-Key was used for another request.",
    "415": "The body is not JSON (`unsupported_media_type`).",
}
WRITE_METHODS = ("post", "put", "patch", "delete")
METHODS = ("get", "head", "options", *WRITE_METHODS)


def error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Every error answer of the API.",
        "properties": {
            "code": {"type": "string", "enum": list(ERROR_CODES),
                     "description": "Stable, for programs to match:\n\n" + describe(ERROR_CODES)},
            "message": {"type": "string", "description": "For people."},
            "field_errors": {
                "type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                "description": "Messages by input; an input inside a list or object is named by its path, "
                               "e.g. `doses[0].unit` or `answers.I1`; `non_field_errors` for the whole body.",
            },
            "rows": {"type": "array", "items": {"$ref": "#/components/schemas/RowError"},
                     "description": "Laboratory results batches only: every refused row."},
        },
        "required": ["code", "message", "field_errors"],
    }


def row_error_schema() -> dict[str, Any]:
    codes = {**ROW_ERROR_CODES, **{code: ERROR_CODES[code] for code in ("data_frozen", "data_locked")}}
    return {
        "type": "object",
        "properties": {
            "index": {"type": "integer", "description": "The row's position in the batch, from 0."},
            "field": {"type": "string", "description": "e.g. `results[3].unit`."},
            "code": {"type": "string", "enum": list(codes), "description": describe(codes)},
            "message": {"type": "string"},
        },
        "required": ["index", "field", "code", "message"],
    }


def document_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Add the error answers to every operation and give the error body its enumeration of codes."""
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            statuses = {**EVERY_OPERATION, **(WRITES if method in WRITE_METHODS else {})}
            responses = operation.setdefault("responses", {})
            for status, description in statuses.items():
                responses.setdefault(status, {"description": description,
                                              "content": {"application/json": {"schema": ERROR_REF}}})
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = error_schema()
    schemas["RowError"] = row_error_schema()
    return result
