"""What a signature signs, and its canonical serialisation and hash (21 CFR Part 11 §11.70 linking).

- A **form** is one record of a subject-level model together with its parts (an eligibility assessment
  and its answers, a lymphodepletion course and its doses, an adverse event and its CRS/ICANS
  assessments, a lab draw and its results), because they are entered and read as one page.
- The **casebook** is the subject row and every subject-level record (``SUBJECT_PATHS``).

Canonical serialisation, version 1 (UTF-8, one JSON document per line, keys sorted, no spaces):

    {"id":<record pk>,"record":"<app.model>","scope":"form","subject":<pk>,"version":1}   (header; a
    {"scope":"casebook","subject":<pk>,"version":1}                               casebook has no record)
    {"model":"<app.model>","row":{<attname>: <value>, ...}}    one line per row: models by label,
                                                                rows by pk

A row holds every concrete column except ``updated_at`` (bookkeeping: it changes when nothing else
does). Dates and times are ISO 8601 (times in UTC, as PostgreSQL returns them), decimals are their
exact text, foreign keys are ids. Any change of a clinical value changes the hash.

The same table list drives the invalidation triggers (migration 0002); tests check both against the
models, so a new subject-level table cannot be left out of either.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from typing import Any

from django.apps import apps
from django.db import models
from django.db.models import Q

from patients.record_paths import SUBJECT_PATHS

CANONICAL_VERSION = 1
EXCLUDED_COLUMNS = frozenset({"updated_at"})


# Rows that are parts of another record's form: label -> the foreign key to that record.
FORM_PARTS: dict[str, str] = {
    "patients.eligibilityanswer": "assessment",
    "patients.lymphodepletiondose": "course",
    "patients.crsassessment": "event",
    "patients.icansassessment": "event",
    "patients.saereport": "event",
    "assays.result": "draw",
}


def model_of(label: str) -> type[models.Model]:
    return apps.get_model(label)


def form_labels() -> list[str]:
    """The models whose records can be signed as a form, by label."""
    return [label for label in SUBJECT_PATHS if label not in FORM_PARTS]


@cache
def parts_of(label: str) -> tuple[tuple[str, str], ...]:
    """The (part label, foreign key name) pairs of a form model, e.g. adverse event -> CRS, ICANS."""
    return tuple((part, fk) for part, fk in sorted(FORM_PARTS.items()) if _target_label(part, fk) == label)


def _target_label(part: str, fk: str) -> str:
    """The label of the model that the foreign key ``fk`` of the model ``part`` points at."""
    target = model_of(part)._meta.get_field(fk).related_model
    assert target is not None and not isinstance(target, str), f"{part}.{fk} is not a resolved foreign key"
    return target._meta.label_lower


def subject_filter(label: str, subject_id: int) -> dict[str, int]:
    path = SUBJECT_PATHS[label]
    return {"pk": subject_id} if path == "pk" else {f"{path}_id": subject_id}


def _columns(model: type[models.Model]) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields if f.attname not in EXCLUDED_COLUMNS]


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"Cannot serialise {type(value).__name__} for a signature.")


def _line(document: dict[str, Any]) -> bytes:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    return (text + "\n").encode()


def _rows(label: str, *conditions: Q, **filters: Any) -> Iterator[bytes]:
    """One query: the rows of ``label`` matching the filters, pk-sorted, as canonical lines."""
    model = model_of(label)
    for row in model._default_manager.filter(*conditions, **filters).order_by("pk").values(*_columns(model)):
        yield _line({"model": label, "row": row})


def canonical_content(*, subject_id: int, record_label: str | None = None,
                      record_id: int | None = None) -> Iterator[bytes]:
    """The signed content as canonical lines: a form if ``record_label`` is given, else the casebook.
    One query per model, whatever the number of rows."""
    if record_label is None:
        yield _line({"scope": "casebook", "subject": subject_id, "version": CANONICAL_VERSION})
        for label in sorted(SUBJECT_PATHS):
            yield from _rows(label, **subject_filter(label, subject_id))
        return
    yield _line({"id": record_id, "record": record_label, "scope": "form", "subject": subject_id,
                 "version": CANONICAL_VERSION})
    yield from _rows(record_label, Q(pk=record_id), **subject_filter(record_label, subject_id))
    for part, fk in parts_of(record_label):
        yield from _rows(part, **{f"{fk}_id": record_id})


def content_hash(*, subject_id: int, record_label: str | None = None, record_id: int | None = None) -> str:
    digest = hashlib.sha256()
    for line in canonical_content(subject_id=subject_id, record_label=record_label, record_id=record_id):
        digest.update(line)
    return digest.hexdigest()
