"""OpenAPI: the Idempotency-Key header on every POST and PATCH (a drf-spectacular postprocessing hook)."""

from __future__ import annotations

from typing import Any

from idempotency.models import MAX_KEY_LENGTH

PARAMETER = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    "description": "Makes a retry safe: the first response (2xx or 4xx) to this key is stored for 24 hours and "
                   "returned again, with `Idempotent-Replayed: true`, to a retry of the same request, which then "
                   "writes nothing. The same key with another method, path or body is a 409 "
                   "`idempotency_key_reused`; while its first request still runs, a 409 `idempotency_key_in_use`. "
                   "Keys are per user.",
}


def add_idempotency_key_header(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    for operations in result.get("paths", {}).values():
        for method in ("post", "patch"):
            if method in operations:
                operations[method].setdefault("parameters", []).append(dict(PARAMETER))
    return result
