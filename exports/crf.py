"""The catalogue of case report forms that exports write: each form's items (name, label, type, unit, code
list) and its rows, read from the subject-level tables (``patients.record_paths``).

Every form has a row per record, keyed by ``subject`` (code), ``site`` (code) and ``record`` (the record's
id, which never changes). A form whose record has a clinical date also carries where that date falls on the
subject's timeline, from ``patients.timeline`` only: ``study_day`` (day 0 = first CAR-T infusion),
``cdisc_study_day`` (SDTM --DY: no day 0), ``course_number`` and ``course_day`` (day 0 = that course's first
fraction). A clinical time is placed by the site's local date.

Values are exported as stored: codes (not their labels: the code list gives the decode), decimals with their
recorded scale, floats in their shortest exact form, dates as ISO 8601 dates and times as ISO 8601 in UTC
(``2025-01-03T08:00:00Z``), booleans as ``true``/``false``, lists joined by ``"; "``. A censored laboratory
result keeps the text as sent (``value_text``, e.g. ``<LLOQ``), the censor mark (``censored``: ``<`` or
``>``) and the number it stands for in the canonical unit (``value``: the LLOQ or ULOQ).

``Form.rows(scope)`` streams a form's rows ordered by subject code, then date, then record: one query per
form (a server-side cursor read in chunks) whatever the number of subjects.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from django.apps import apps
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import QuerySet

from patients.timeline import Timeline, local_date, with_timeline

if TYPE_CHECKING:
    from exports.scope import ExportScope

ItemType = Literal["text", "integer", "float", "date", "datetime", "boolean"]
CHUNK_SIZE = 2000


@dataclass(frozen=True)
class Item:
    name: str
    label: str
    type: ItemType = "text"
    unit: str = ""  # UCUM
    codelist: tuple[tuple[str, str], ...] = ()  # (code, decode)
    column: str = ""  # the stored column of the form's table it comes from ("" for a derived or related value)
    multiple: bool = False  # a list of values (joined by "; "), each from the code list if there is one


KEY_ITEMS = (
    Item("subject", "Subject code"),
    Item("site", "Site code"),
    Item("record", "Record id (unique within the form, never reused)", "integer"),
)
TIMELINE_ITEMS = (
    Item("study_day", "Study day of the record's date (day 0 = first CAR-T infusion; day before = -1)", "integer"),
    Item("cdisc_study_day", "CDISC study day (SDTM --DY: no day 0; first infusion = 1, day before = -1)",
         "integer"),
    Item("course_number", "Infusion course the date follows (its day 0 on or before the date)", "integer"),
    Item("course_day", "Course day (day 0 = first fraction of that course)", "integer"),
)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: forms are built once
class Form:
    code: str  # short code for identifiers, e.g. "AE"
    name: str  # file name, e.g. "adverse_events"
    label: str
    model_label: str  # "patients.adverseevent"
    subject_path: str  # from a row to its subject: "subject", "event__subject", "pk" for subjects
    date_path: str | None  # the record's clinical date or time, placed on the timeline
    items: tuple[Item, ...]
    paths: tuple[str, ...]  # the ORM path of each item, in order
    visit_item: str | None = None  # the item holding the protocol visit code, if the form has one
    filters: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> type[models.Model]:
        return apps.get_model(self.model_label)

    @property
    def columns(self) -> tuple[Item, ...]:
        """Every column of the form's rows: keys, timeline (for a dated form), then the items."""
        return KEY_ITEMS + (TIMELINE_ITEMS if self.date_path else ()) + self.items

    def _subject(self, suffix: str) -> str:
        return suffix if self.subject_path == "pk" else f"{self.subject_path}__{suffix}"

    def queryset(self, scope: ExportScope) -> QuerySet[Any]:
        subject_id = "pk" if self.subject_path == "pk" else f"{self.subject_path}_id"
        qs = self.model._default_manager.filter(
            scope.site_q(site=self._subject("site"), subject=subject_id),
            **{self._subject("trial"): scope.trial}, **self.filters)
        qs = with_timeline(qs, subject=subject_id) if self.date_path else qs
        order = [self._subject("code"), *([self.date_path] if self.date_path else []), "pk"]
        extra = [self._subject("code"), self._subject("site__code"), self._subject("site__time_zone")]
        return qs.order_by(*order).values("pk", *extra, *self.paths,
                                          *((self.date_path, "course_day0s") if self.date_path else ()))

    def rows(self, scope: ExportScope) -> Iterator[dict[str, Any]]:
        """Rows as dicts of the ``columns``' names to stored Python values (``text`` formats them)."""
        code, site, zone = self._subject("code"), self._subject("site__code"), self._subject("site__time_zone")
        for raw in self.queryset(scope).iterator(chunk_size=CHUNK_SIZE):
            row: dict[str, Any] = {"subject": raw[code], "site": raw[site], "record": raw["pk"]}
            if self.date_path:
                timeline = Timeline.of(raw["course_day0s"])
                day = local_date(raw[self.date_path], _zone(raw[zone]))
                position = timeline.position(day)
                row.update(study_day=position.study_day, cdisc_study_day=timeline.cdisc_study_day(day),
                           course_number=position.course_number, course_day=position.course_day)
            for item, path in zip(self.items, self.paths, strict=True):
                row[item.name] = raw[path]
            yield row


@cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def text(value: Any) -> str:
    """A stored value as exported text ('' for none); see the module docstring."""
    formatter = _FORMATTERS.get(type(value))
    return formatter(value) if formatter is not None else _text_of_subclass(value)


def _datetime(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _list(value: list[Any] | tuple[Any, ...]) -> str:
    return "; ".join(text(v) for v in value)


# Looked up by exact type: the export formats every value of every row through here.
_FORMATTERS: dict[type, Callable[[Any], str]] = {
    str: str, int: str, Decimal: str, type(None): lambda _v: "", bool: lambda v: "true" if v else "false",
    float: repr, dt.datetime: _datetime, dt.date: dt.date.isoformat, list: _list, tuple: _list,
}


def _text_of_subclass(value: Any) -> str:
    for kind, formatter in _FORMATTERS.items():
        if kind is not bool and isinstance(value, kind):
            return formatter(value)
    return str(value)


# --- building forms from the models -----------------------------------------------------------------

_TYPES: tuple[tuple[type[models.Field[Any, Any]], ItemType], ...] = (
    (models.BooleanField, "boolean"),
    (models.DateTimeField, "datetime"),
    (models.DateField, "date"),
    (models.DecimalField, "float"),
    (models.FloatField, "float"),
    (models.IntegerField, "integer"),  # and the small, big and positive kinds
    (models.ForeignKey, "integer"),
)


def _resolve(model: type[models.Model], path: str) -> models.Field[Any, Any]:
    current: Any = model
    model_field: Any = None
    for part in path.split("__"):
        model_field = current._meta.get_field(part)
        current = model_field.related_model
    return model_field


def _item(model: type[models.Model], spec: str | tuple[str, str] | tuple[str, str, str]) -> tuple[Item, str]:
    """An item from a model field: ``"field"``, ``("name", "path")`` or ``("name", "path", "unit")``."""
    name, path, unit = (spec, spec, "") if isinstance(spec, str) else (*spec, "")[:3]
    model_field = _resolve(model, path)
    base = model_field.base_field if isinstance(model_field, ArrayField) else model_field
    kind: ItemType = next((t for cls, t in _TYPES if isinstance(base, cls)), "text")
    if isinstance(model_field, ArrayField):
        kind = "text"
    label = str(model_field.verbose_name)
    if "__" in path:
        owner = _resolve(model, path.rsplit("__", 1)[0])
        label = f"{owner.verbose_name}: {label}"
    codelist = tuple((str(code), str(decode)) for code, decode in (base.flatchoices or ()))
    column = model_field.column if "__" not in path else ""
    multiple = isinstance(model_field, ArrayField)
    label = f"{label} (list, '; '-separated)" if multiple else label
    label = f"{label} (ISO 8601, UTC)" if kind == "datetime" else label
    return Item(name, label[:1].upper() + label[1:], kind, unit, codelist, column, multiple), path


def form(code: str, name: str, label: str, model_label: str, *, subject: str = "subject",
         date: str | None = None, visit: str | None = None, filters: dict[str, Any] | None = None,
         items: tuple[str | tuple[str, str] | tuple[str, str, str], ...]) -> Form:
    model = apps.get_model(model_label)
    built = [_item(model, spec) for spec in items]
    return Form(code=code, name=name, label=label, model_label=model_label, subject_path=subject, date_path=date,
                items=tuple(i for i, _ in built), paths=tuple(p for _, p in built), visit_item=visit,
                filters=filters or {})


def _forms() -> tuple[Form, ...]:
    return (
        form("DM", "subjects", "Subjects", "patients.subject", subject="pk", date="screened_on", items=(
            "screening_number", "status", "screened_on", "sex", "age_at_consent", ("cohort", "cohort__code"),
            "diagnosis", "fusion_genes", "mutations", ("marrow_blasts_pct", "marrow_blasts_pct", "%"),
            "extramedullary_disease", "cns_status", "prior_allo_hsct", "prior_cart", "prior_cart_target",
            "prior_cart_scfv_origin", "prior_lines", "enrolled_on", "off_study_on", "off_study_reason",
            "off_study_detail")),
        form("SS", "status_changes", "Subject status changes", "patients.subjecttransition", date="effective_on",
             items=("from_status", "to_status", "effective_on", "reason", "recorded_at")),
        form("IC", "consents", "Informed consent", "patients.consent", date="consented_on",
             items=("version", "consented_on", "withdrawn_on", "withdrawal_reason")),
        form("IE", "eligibility", "Eligibility assessments", "patients.eligibilityassessment", date="assessed_on",
             items=("assessed_on", "eligible", ("assessed_by", "assessed_by__username"),
                    ("confirmed_by", "confirmed_by__username"), "confirmed_at")),
        form("IA", "eligibility_answers", "Eligibility answers", "patients.eligibilityanswer",
             subject="assessment__subject", date="assessment__assessed_on", items=(
                 ("assessment", "assessment"), ("criterion_kind", "criterion__kind"),
                 ("criterion_number", "criterion__number"), ("criterion_text", "criterion__text"), "met")),
        form("VS", "body_measurements", "Body measurements", "patients.bodymeasurement", date="measured_on",
             items=("measured_on", ("height_cm", "height_cm", "cm"), ("weight_kg", "weight_kg", "kg"))),
        form("AP", "apheresis_collections", "Apheresis collections", "patients.apheresiscollection",
             date="collected_on", items=("collection_id", "collected_on", "cd3_cells_1e9")),
        form("DC", "donor_collections", "Donor collections", "patients.donorcollection", date="collected_on",
             items=("collection_id", "collected_on", "donor_code", "donor_type", "hla_matched", "hla_total")),
        form("PL", "lots", "Product lots", "patients.productlot", date="release_date", items=(
            "lot_number", ("product", "product__code"), "source", ("collection", "collection__collection_id"),
            ("donor_collection", "donor_collection__collection_id"), "donor_type", "status", "release_date",
            ("viability_pct", "viability_pct", "%"), ("car_positive_pct", "car_positive_pct", "%"),
            "total_viable_car_cells", "qc_pass", "failure_reason", "failed_on")),
        form("BT", "bridging", "Bridging therapy", "patients.bridgingtherapy", date="started_on",
             items=("regimen", "started_on", "ended_on")),
        form("LC", "lymphodepletion_courses", "Lymphodepletion courses", "patients.lymphodepletioncourse",
             date="planned_infusion_on", items=(
                 ("ld_course_number", "course_number"), ("regimen", "regimen__code"), "planned_infusion_on",
                 ("measured_on", "measurement__measured_on"), "bsa_formula", ("bsa_m2", "bsa_m2", "m2"))),
        form("LD", "lymphodepletion_doses", "Lymphodepletion doses", "patients.lymphodepletiondose",
             subject="course__subject", date="given_on", items=(
                 ("ld_course_number", "course__course_number"), ("agent", "agent__agent"),
                 ("planned_day", "day"), "given_on", ("planned_mg", "planned_mg", "mg"),
                 ("administered_mg", "administered_mg", "mg"), "deviation_reason")),
        form("EX", "infusions", "CAR-T infusions (one row per fraction)", "patients.infusion", date="infused_on",
             items=(("infusion_course", "course_number"), "fraction_number", "planned_fractions",
                    ("lot_number", "lot__lot_number"), ("dose_level", "dose_level__code"), "infused_at",
                    "infused_on", ("cells_per_kg", "cells_per_kg", "/kg"), ("weight_kg", "weight_kg", "kg"),
                    "total_cells")),
        form("AE", "adverse_events", "Adverse events", "patients.adverseevent", date="onset_on", items=(
            "category", "term", "meddra_code", "onset_on", "resolved_on", "grade", "grade_scale", "serious",
            "sae_death", "sae_life_threatening", "sae_hospitalisation", "sae_disability", "sae_congenital",
            "sae_important", "site_aware_at", "report_due_at", "related_to_product", "related_to_lymphodepletion",
            "outcome", "action_taken", "death_on")),
        form("CR", "crs_assessments", "CRS assessments (ASTCT 2019)", "patients.crsassessment",
             subject="event__subject", date="assessed_at", items=(
                 ("adverse_event", "event"), "assessed_at", ("max_temp_c", "max_temp_c", "Cel"),
                 "fever_other_cause", "prior_antipyretic_or_anticytokine", "hypotension",
                 "hypotension_other_cause", "vasopressors", "o2_device", ("o2_flow_lpm", "o2_flow_lpm", "L/min"),
                 "hypoxia_other_cause", "death_due_to_crs", "derived_grade", "algorithm", "flags",
                 "override_grade", "override_reason")),
        form("IN", "icans_assessments", "ICANS assessments (ASTCT 2019)", "patients.icansassessment",
             subject="event__subject", date="assessed_at", items=(
                 ("adverse_event", "event"), "assessed_at", "orientation_year", "orientation_month",
                 "orientation_city", "orientation_hospital", "objects_named", "follows_commands",
                 "writes_sentence", "counts_backwards", "ice_unable_awake_aphasic", "ice_score", "capd_total",
                 "capd_unable", "developmental_delay", "consciousness", "consciousness_other_cause", "seizure",
                 "motor", "cerebral_oedema", "death_due_to_icans", "derived_grade", "algorithm", "flags",
                 "override_grade", "override_reason")),
        form("CM", "medications", "Concomitant medications", "patients.concomitantmedication", date="given_at",
             items=(("adverse_event", "adverse_event"), "drug", "drug_name", "dose", "dose_unit", "route",
                    "given_at", "indication")),
        form("RS", "responses", "Response assessments", "patients.responseassessment", date="assessed_on",
             visit="visit", items=(
                 ("visit", "visit__code"), "assessed_on", ("marrow_blasts_pct", "marrow_blasts_pct", "%"),
                 ("mrd_flow_pct", "mrd_flow_pct", "%"), ("mrd_sensitivity_pct", "mrd_sensitivity_pct", "%"),
                 ("bcr_abl1_is_pct", "bcr_abl1_is_pct", "%"), "extramedullary_status", "cns_status", "category",
                 "antigen_status")),
        form("FU", "follow_up", "Follow-up", "patients.followup", date="event_on",
             items=("kind", "event_on", "cause_of_death", "cause_of_death_unknown", "detail")),
        form("LB", "lab_draws", "Laboratory draws (specimens)", "assays.labdraw", date="collected_at",
             visit="visit", items=(("visit", "visit__code"), "accession_number", "specimen", "collected_at")),
        form("LR", "results", "Laboratory results (corrected results kept, marked superseded)", "assays.result",
             date="draw__collected_at", visit="visit", items=(
                 ("visit", "draw__visit__code"), ("draw", "draw"), ("accession_number", "draw__accession_number"),
                 ("analyte", "analyte__code"), ("loinc", "analyte__loinc"), "source_ref", "value_text",
                 "unit_text", "censored", "value", ("canonical_unit", "analyte__canonical_unit"), "flag",
                 "ctcae_grade", "status", "superseded", "correction_reason", "recorded_at")),
    )


@cache
def forms() -> tuple[Form, ...]:
    """Every form, in casebook order (built once: the models must be loaded)."""
    return _forms()


def form_named(name: str) -> Form:
    return next(f for f in forms() if f.name == name)
