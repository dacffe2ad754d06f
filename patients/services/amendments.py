"""Corrections of saved clinical records: a changed value needs a reason, and passes the same rules.

A record, once saved, changes only through ``amend_record`` (the admin's change forms and the API's
PATCH both call it). The reason for change goes into the audit context, so the audit row holds the
old value, the new value, who, when and why (ALCOA+; ICH E6(R3) 4.2.4; ODM ReasonForChange). The
amended record is checked by the same protocol rule that admitted it, so a correction cannot store
what entry would have refused.

Only the fields listed in ``AMENDABLE`` change this way. Values that drove a calculation or a state
change (lymphodepletion doses, infusions, product lots, the kind of a follow-up) are not amended in
place: a dosing error is recorded as a deviation, and a transition is corrected by data management.
Records are never deleted.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import pghistory
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import models, transaction

from config.errors import RuleViolation
from patients.models import (
    AdverseEvent,
    ApheresisCollection,
    BridgingTherapy,
    ConcomitantMedication,
    FollowUp,
    ResponseAssessment,
)
from patients.services.ctcae import coded_values
from patients.services.enrolment import _lock, check_can_enter
from patients.services.outcome import check_follow_up_values, check_response
from patients.services.safety import (
    EventInput,
    _record_death,
    check_adverse_event,
    check_medication,
    sae_report_due_at,
)
from patients.services.treatment import check_bridging_dates

REASON_FIELD = "reason_for_change"


@dataclass(frozen=True)
class Amendable:
    fields: frozenset[str]
    check: Callable[[Any], None]  # the entry rule, run on the amended (unsaved) record


def _check_event(event: AdverseEvent) -> None:
    values = {f.name: getattr(event, f.name) for f in fields(EventInput)}
    if event.category != AdverseEvent.Category.CTCAE:
        saved = AdverseEvent.objects.values_list("grade", flat=True).get(pk=event.pk)
        if event.grade != saved:
            raise RuleViolation("grade_is_derived", "CRS and ICANS grades are derived from their assessments.",
                                field="grade")
        values["grade"] = None
    check_adverse_event(subject=event.subject, data=EventInput(**values))


RESPONSE_VALUES = ("marrow_blasts_pct", "mrd_flow_pct", "mrd_sensitivity_pct", "bcr_abl1_is_pct",
                   "extramedullary_status", "cns_status", "antigen_status")


def _check_response(response: ResponseAssessment) -> None:
    check_response(subject=response.subject, assessed_on=response.assessed_on, category=response.category,
                   visit=response.visit, values={name: getattr(response, name) for name in RESPONSE_VALUES})


def _check_medication(medication: ConcomitantMedication) -> None:
    check_medication(subject=medication.subject, drug=medication.drug, drug_name=medication.drug_name,
                     given_at=medication.given_at)


def _check_bridging(bridging: BridgingTherapy) -> None:
    check_bridging_dates(subject=bridging.subject, started_on=bridging.started_on, ended_on=bridging.ended_on)


def _check_follow_up(follow_up: FollowUp) -> None:
    check_follow_up_values(subject=follow_up.subject, kind=follow_up.kind, event_on=follow_up.event_on,
                           cause_of_death=follow_up.cause_of_death,
                           cause_of_death_unknown=follow_up.cause_of_death_unknown)


AMENDABLE: dict[type[models.Model], Amendable] = {
    AdverseEvent: Amendable(frozenset({
        "term", "ctcae_term", "system_organ_class", "meddra_code", "onset_on", "resolved_on", "grade", "serious",
        "sae_death", "sae_life_threatening",
        "sae_hospitalisation", "sae_disability", "sae_congenital", "sae_important", "site_aware_at",
        "related_to_product", "related_to_lymphodepletion", "outcome", "action_taken", "death_on"}), _check_event),
    ResponseAssessment: Amendable(frozenset({"assessed_on", "category", "visit", *RESPONSE_VALUES}), _check_response),
    ConcomitantMedication: Amendable(frozenset({"drug", "drug_name", "dose", "dose_unit", "route", "given_at",
                                                "indication"}), _check_medication),
    BridgingTherapy: Amendable(frozenset({"regimen", "started_on", "ended_on"}), _check_bridging),
    FollowUp: Amendable(frozenset({"event_on", "cause_of_death", "cause_of_death_unknown", "detail"}),
                        _check_follow_up),
    ApheresisCollection: Amendable(frozenset({"cd3_cells_1e9"}), lambda _collection: None),
}


def _code_event(event: AdverseEvent, changed: list[str]) -> None:
    """An event coded (or re-coded) later takes the MedDRA code and system organ class of its dictionary term."""
    if "ctcae_term" not in changed or event.ctcae_term is None:
        return
    values = coded_values(term=event.ctcae_term, reported_term=event.term,
                          system_organ_class=event.system_organ_class, meddra_code=event.meddra_code)
    for name, value in values.items():
        if getattr(event, name) != value:
            setattr(event, name, value)
            if name not in changed:
                changed.append(name)


def amendable_fields(model: type[models.Model]) -> frozenset[str]:
    spec = AMENDABLE.get(model)
    return spec.fields if spec else frozenset()


def check_record_amendment(*, record: models.Model, changes: Mapping[str, object], reason: str) -> list[str]:
    """The names of the fields that would change; refuses an unknown field, a missing reason, or an
    amended record that breaks its entry rule. ``record`` itself is left untouched."""
    spec = AMENDABLE.get(type(record))
    label = record._meta.verbose_name
    if spec is None:
        raise RuleViolation("not_amendable", f"A saved {label} is not changed in place.")
    if unknown := sorted(set(changes) - spec.fields):
        raise RuleViolation("not_amendable", f"{', '.join(unknown)} of a saved {label} cannot be changed.",
                            field=unknown[0])
    changed = [name for name, value in changes.items() if getattr(record, name) != value]
    if changed and not reason.strip():
        raise RuleViolation("reason_required", "Give a reason for the change.", field=REASON_FIELD)
    if not changed:
        return []
    amended = copy.copy(record)
    for name in changed:
        setattr(amended, name, changes[name])
    spec.check(amended)  # first: the rule names the field; model constraints only say "invalid"
    try:
        amended.full_clean()
    except ValidationError as err:
        field, messages = next(iter(err.message_dict.items()))
        raise RuleViolation("invalid", " ".join(messages), field=None if field == "__all__" else field) from err
    return changed


@transaction.atomic
def amend_record(*, record: models.Model, changes: Mapping[str, object], reason: str,
                 by: User) -> models.Model:
    """Apply a correction with its reason; the audit row keeps the old and new values."""
    model = type(record)
    subject = _lock(record.subject)  # type: ignore[attr-defined]
    check_can_enter(user=by, subject=subject)
    record = model._default_manager.select_for_update().get(pk=record.pk)
    record.subject = subject  # type: ignore[attr-defined]
    was_fatal = getattr(record, "grade", None) == 5
    changed = check_record_amendment(record=record, changes=changes, reason=reason)
    if not changed:
        return record
    for name in changed:
        setattr(record, name, changes[name])
    if isinstance(record, AdverseEvent):
        _code_event(record, changed)
        record.report_due_at = sae_report_due_at(record)
        changed.append("report_due_at")
    with pghistory.context(reason=reason, action="amend"):
        record.save(update_fields=[*changed, "updated_at"])
        if isinstance(record, AdverseEvent) and record.grade == 5 and not was_fatal:
            _record_death(subject=subject, event=record, by=by)
    return record
