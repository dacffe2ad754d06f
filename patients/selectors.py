"""Reads reused by services, the admin and the API."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from config.compiled import compiled
from config.reads import shared
from patients.models import (
    AdverseEvent,
    BodyMeasurement,
    Consent,
    EligibilityAnswer,
    EligibilityAssessment,
    LymphodepletionCourse,
    LymphodepletionDose,
    SaeReport,
    Subject,
)
from patients.timeline import local_date_of
from trials.access import access_of
from trials.models import Site


def site_today(site: Site) -> dt.date:
    """Today's date at the site: dates coordinators enter are the site's local dates."""
    return local_date_of(timezone.now(), site.tzinfo)


def list_subjects(*, user: AbstractBaseUser) -> QuerySet[Subject]:
    qs = Subject.objects.select_related("trial", "site", "cohort").order_by("trial__code", "code", "pk")
    return access_of(user).filter(qs)


def consents_of(subject: Subject) -> list[Consent]:
    """The subject's consents in the order they were signed, with who recorded them (one query; read once
    within ``shared_reads``, where the subject page lists the same rows its rules read)."""
    return shared(("consents", subject.pk),
                  lambda: _own_rows(subject, "consents", ("recorded_by",), ("consented_on", "pk")))


def records_of(subject: Subject, relation: str, *related: str) -> list[Any]:
    """All the subject's records of one kind (``relation``: a reverse relation such as "lots" or
    "adverse_events"), in the model's order, with the ``related`` rows joined: one query, read once within
    ``shared_reads`` (where the subject page's course list and its desk both read them)."""
    return shared(("records", relation, related, subject.pk), lambda: _own_rows(subject, relation, related))


def _own_rows(subject: Subject, relation: str, related: tuple[str, ...], order: tuple[str, ...] = ()) -> list[Any]:
    """``list(getattr(subject, relation).select_related(*related).order_by(*order))``, in the model's order less
    its leading "subject" by default, by SQL compiled once (``config.compiled``: the subject page makes a dozen
    such reads, and compiling one cost several times running it); each row's ``subject`` is ``subject``, as the
    reverse relation sets it."""
    model = getattr(subject, relation).model

    def build(subject_id: int) -> QuerySet[Any]:
        # Ordering by "subject", one subject here, would join the subject and its trial (Subject's own order).
        # Only the joins asked for: select_related() with no name would join every non-null foreign key, and
        # theirs (the subject, its trial and site, who recorded the row...), on every read.
        return (model._default_manager.filter(subject_id=subject_id).select_related(*related)
                .order_by(*(order or within_subject(model))))

    rows = compiled(("own rows", model, related, order), build).rows(subject.pk)
    for row in rows:
        row.subject = subject
    return rows


def eligibility_of(subject: Subject) -> list[tuple[EligibilityAssessment, list[EligibilityAnswer]]]:
    """The subject's eligibility assessments, newest first, with who assessed and confirmed them, each with its
    answers (criteria by kind and number): two queries, one when there is no assessment (SQL compiled once)."""
    assessments = _own_rows(subject, "eligibility_assessments", ("assessed_by", "confirmed_by"))
    if not assessments:
        return []

    def build(subject_id: int) -> QuerySet[EligibilityAnswer]:
        return (EligibilityAnswer.objects.filter(assessment__subject_id=subject_id).select_related("criterion")
                .order_by("assessment_id", "criterion__kind", "criterion__number"))

    answers: dict[int, list[EligibilityAnswer]] = {}
    for answer in compiled("eligibility answers of a subject", build).rows(subject.pk):
        answers.setdefault(answer.assessment_id, []).append(answer)
    return [(assessment, answers.get(assessment.pk, [])) for assessment in assessments]


def ld_courses_of(subject: Subject) -> list[LymphodepletionCourse]:
    """The subject's lymphodepletion courses by number, with their regimens (``records_of``)."""
    return records_of(subject, "ld_courses", "regimen")


def doses_of(subject: Subject) -> list[LymphodepletionDose]:
    """The lymphodepletion doses of all the subject's courses, by course, day given and agent, with their agents
    and courses: one query, read once within ``shared_reads``."""
    def build(subject_id: int) -> QuerySet[LymphodepletionDose]:
        doses = LymphodepletionDose.objects.filter(course__subject_id=subject_id).select_related("agent", "course")
        return doses.order_by("course__course_number", "given_on", "agent__agent")  # (no join of the subject)

    return shared(("doses", subject.pk), lambda: compiled("doses of a subject", build).rows(subject.pk))


def within_subject(model: Any) -> list[str]:
    """``model``'s default order for the records of one subject: its ``Meta.ordering`` without "subject"."""
    return [name for name in model._meta.ordering if name != "subject"]


def first_consent(subject: Subject) -> Consent | None:
    consents = consents_of(subject)
    return consents[0] if consents else None


def consent_withdrawn(subject: Subject) -> Consent | None:
    """The first withdrawal of consent, if any."""
    withdrawn = [c for c in consents_of(subject) if c.withdrawn_on is not None]
    return min(withdrawn, key=lambda c: (c.withdrawn_on, c.consented_on, c.pk)) if withdrawn else None


def latest_eligibility(subject: Subject) -> EligibilityAssessment | None:
    return subject.eligibility_assessments.order_by("-assessed_on", "-pk").first()


def latest_confirmed_eligibility(subject: Subject) -> EligibilityAssessment | None:
    return (
        subject.eligibility_assessments.filter(confirmed_at__isnull=False)
        .order_by("-confirmed_at", "-pk")
        .first()
    )


def latest_measurement(subject: Subject, *, on: dt.date) -> BodyMeasurement | None:
    """The latest height and weight measured on or before ``on``."""
    return subject.measurements.filter(measured_on__lte=on).order_by("-measured_on", "-pk").first()


def sae_report_pending(*, now: dt.datetime | None = None) -> Q:
    """Serious events past their report due time with no initial report to the sponsor (``AdverseEvent`` filter)."""
    sent = SaeReport.objects.filter(event=OuterRef("pk"), kind=SaeReport.Kind.INITIAL,
                                    recipient=SaeReport.Recipient.SPONSOR)
    return Q(serious=True, report_due_at__lt=now or timezone.now()) & ~Q(Exists(sent))


def list_overdue_saes(*, user: AbstractBaseUser | AnonymousUser,
                      subject: Subject | None = None) -> QuerySet[AdverseEvent]:
    """Serious adverse events whose expedited report is overdue, at the user's sites, by site and due time."""
    qs = AdverseEvent.objects.filter(sae_report_pending()).filter(
        access_of(user).site_q(trial="subject__trial", site="subject__site"))
    if subject is not None:
        qs = qs.filter(subject=subject)
    return qs.select_related("subject__site", "subject__trial").order_by("subject__site__code", "report_due_at", "pk")
