"""Reads reused by services, the admin and the API."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone

from patients.models import Consent, EligibilityAssessment, Subject
from trials.access import access_of
from trials.models import Site


def site_today(site: Site) -> dt.date:
    """Today's date at the site: dates coordinators enter are the site's local dates."""
    return timezone.now().astimezone(site.tzinfo).date()


def list_subjects(*, user: AbstractBaseUser) -> QuerySet[Subject]:
    qs = Subject.objects.select_related("trial", "site", "cohort").order_by("trial__code", "code", "pk")
    return access_of(user).filter(qs)


def first_consent(subject: Subject) -> Consent | None:
    return subject.consents.order_by("consented_on", "pk").first()


def consent_withdrawn(subject: Subject) -> Consent | None:
    return subject.consents.filter(withdrawn_on__isnull=False).order_by("withdrawn_on").first()


def latest_eligibility(subject: Subject) -> EligibilityAssessment | None:
    return subject.eligibility_assessments.order_by("-assessed_on", "-pk").first()


def latest_confirmed_eligibility(subject: Subject) -> EligibilityAssessment | None:
    return (
        subject.eligibility_assessments.filter(confirmed_at__isnull=False)
        .order_by("-confirmed_at", "-pk")
        .first()
    )


def day_zero(subject: Subject) -> dt.date | None:
    """Day 0: the date of the subject's first CAR-T infusion (first fraction of the first course)."""
    first = subject.infusions.order_by("infused_on", "pk").values_list("infused_on", flat=True).first()
    return first


def study_day(day: dt.date | None, day0: dt.date | None) -> int | None:
    """Study day as CAR-T teams count it: day 0 is the infusion, the day before is -1 (no SDTM shift)."""
    if day is None or day0 is None:
        return None
    return (day - day0).days


def latest_measurement(subject: Subject, *, on: dt.date):
    """The latest height and weight measured on or before ``on``."""
    return subject.measurements.filter(measured_on__lte=on).order_by("-measured_on", "-pk").first()
