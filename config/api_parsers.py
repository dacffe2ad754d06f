"""The API's body parser: JSON only, with no NUL character in any string and a bounded depth.

Kept apart from config.api: DRF reads DEFAULT_PARSER_CLASSES while its views module is being imported.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, parsers

NUL_MESSAGE = "Null characters are not allowed."
MAX_JSON_DEPTH = 64


def nul_paths(value: Any, path: str = "", depth: int = 0) -> list[str]:
    """Paths (``subject``, ``doses[2].unit``) of the strings and keys in ``value`` holding a NUL character."""
    if isinstance(value, str):
        return [path or "non_field_errors"] if "\x00" in value else []
    if depth > MAX_JSON_DEPTH:
        raise exceptions.ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.")
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            found += [inner] if "\x00" in key else nul_paths(item, inner, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += nul_paths(item, f"{path}[{index}]", depth + 1)
    return found


class StrictJSONParser(parsers.JSONParser):
    """JSON only, and no string (key or value) with a NUL character anywhere: PostgreSQL cannot store one,
    and slug, code and custom fields do not all carry DRF's null-character validator. Nesting deeper
    than ``MAX_JSON_DEPTH`` is a 400, not a RecursionError."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as err:
            raise exceptions.ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.") from err
        if paths := nul_paths(data):
            raise exceptions.ValidationError({path: [NUL_MESSAGE] for path in paths})
        return data
