"""The invalidation triggers cover every subject-level table, and the hashed content covers the same tables.

A new model in patients or assays that reaches a subject (a ``subject`` foreign key, or a foreign key to a
record that has one) fails here until it is added to ``signatures.content`` and given the triggers.
"""

from __future__ import annotations

import pghistory.models
import pytest
from django.apps import apps
from django.db import connection, models

from patients.models import Subject
from signatures.content import FORM_PARTS, SUBJECT_PATHS, form_labels, model_of

pytestmark = pytest.mark.django_db

EVENTS = ("insert", "update", "delete", "truncate")


def clinical_models() -> list[type[models.Model]]:
    return [m for app in ("patients", "assays") for m in apps.get_app_config(app).get_models()
            if not issubclass(m, pghistory.models.Event) and not m._meta.proxy]


def subject_link(model: type[models.Model]) -> str | None:
    """The ORM path from the model to its subject: itself, a ``subject`` FK, or an FK to a record with one."""
    if model is Subject:
        return "pk"
    fks = [f for f in model._meta.concrete_fields if isinstance(f, models.ForeignKey)]
    if any(f.name == "subject" and f.related_model is Subject for f in fks):
        return "subject"
    parents = [f for f in fks if any(g.name == "subject" and g.related_model is Subject
                                     for g in f.related_model._meta.concrete_fields)]
    return f"{parents[0].name}__subject" if parents else None


def installed_triggers() -> dict[str, dict[str, tuple[int, list[str]]]]:
    """table -> trigger name -> (tgtype, arguments), for the signatures_invalidate_* triggers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname, t.tgname, t.tgtype, t.tgnargs, t.tgargs FROM pg_trigger t "
                       "JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname LIKE 'signatures_invalidate_%%'")
        found: dict[str, dict[str, tuple[int, list[str]]]] = {}
        for table, name, tgtype, nargs, raw in cursor.fetchall():
            args = bytes(raw).decode().split("\x00")[:nargs]
            found.setdefault(table, {})[name] = (tgtype, args)
        return found


def test_every_model_reaching_a_subject_is_part_of_the_signed_content():
    linked = {m._meta.label_lower: subject_link(m) for m in clinical_models() if subject_link(m)}
    assert linked == SUBJECT_PATHS
    assert {"patients.subject", "patients.adverseevent", "assays.result"} <= set(linked)


def test_every_subject_level_table_has_the_four_statement_level_triggers():
    installed = installed_triggers()
    for label in SUBJECT_PATHS:
        table = model_of(label)._meta.db_table
        triggers = installed.get(table, {})
        assert set(triggers) == {f"signatures_invalidate_{event}" for event in EVENTS}, table
        for tgtype, _args in triggers.values():
            assert not tgtype & 1, f"{table}: statement-level, not per row (COPY of 10,000 results)"


def test_no_other_table_carries_the_triggers():
    tables = {model_of(label)._meta.db_table for label in SUBJECT_PATHS}
    assert set(installed_triggers()) == tables


def test_each_trigger_names_the_form_its_rows_belong_to():
    installed = installed_triggers()
    for label in SUBJECT_PATHS:
        model = model_of(label)
        form = model._meta.get_field(FORM_PARTS[label]).related_model if label in FORM_PARTS else model
        form_col = model._meta.get_field(FORM_PARTS[label]).column if label in FORM_PARTS else "id"
        subject_col = "id" if model is Subject else (
            model._meta.get_field("subject").column if SUBJECT_PATHS[label] == "subject" else "")
        expected = [form._meta.app_label, form._meta.model_name, form_col, subject_col, form._meta.db_table,
                    model._meta.label]
        for name, (_tgtype, args) in installed[model._meta.db_table].items():
            assert args == expected, (label, name)


def test_forms_and_their_parts_are_consistent():
    assert set(FORM_PARTS) <= set(SUBJECT_PATHS)
    for part, fk in FORM_PARTS.items():
        parent = model_of(part)._meta.get_field(fk).related_model._meta.label_lower
        assert parent in form_labels(), part
    assert not set(FORM_PARTS) & set(form_labels())
