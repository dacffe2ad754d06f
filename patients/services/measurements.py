"""Dated height and weight, from which body surface area and weight-based doses are computed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.contrib.auth.models import User
from django.db import transaction

from config.errors import StateConflict
from patients.models import BodyMeasurement, Subject, SubjectStatus
from patients.services.enrolment import _lock, check_can_enter, check_consented, check_not_future


def check_body_measurement(*, subject: Subject, measured_on: dt.date) -> None:
    check_not_future(day=measured_on, site=subject.site, field="measured_on")
    check_consented(subject=subject, on=measured_on, field="measured_on")  # names a withdrawal first
    if subject.status in (SubjectStatus.SCREEN_FAILED, SubjectStatus.OFF_STUDY):
        raise StateConflict("subject_closed", f"{subject.code} is {subject.get_status_display().lower()}.")


@transaction.atomic
def record_body_measurement(*, subject: Subject, measured_on: dt.date, height_cm: Decimal, weight_kg: Decimal,
                            by: User) -> BodyMeasurement:
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_body_measurement(subject=subject, measured_on=measured_on)
    measurement = BodyMeasurement(subject=subject, measured_on=measured_on, height_cm=height_cm,
                                  weight_kg=weight_kg, recorded_by=by)
    measurement.full_clean()
    measurement.save()
    return measurement
