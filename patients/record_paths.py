"""Every subject-level table, by model label, with the ORM path from its rows to their subject.

Signatures hash a casebook over these tables (and install their invalidation triggers on them);
data queries may target their records. A new subject-level model is added here.
"""

from __future__ import annotations

SUBJECT_PATHS: dict[str, str] = {
    "patients.subject": "pk",
    "patients.consent": "subject",
    "patients.bodymeasurement": "subject",
    "patients.eligibilityassessment": "subject",
    "patients.eligibilityanswer": "assessment__subject",
    "patients.subjecttransition": "subject",
    "patients.apheresiscollection": "subject",
    "patients.donorcollection": "subject",
    "patients.productlot": "subject",
    "patients.bridgingtherapy": "subject",
    "patients.lymphodepletioncourse": "subject",
    "patients.lymphodepletiondose": "course__subject",
    "patients.infusion": "subject",
    "patients.adverseevent": "subject",
    "patients.crsassessment": "event__subject",
    "patients.icansassessment": "event__subject",
    "patients.saereport": "event__subject",
    "patients.concomitantmedication": "subject",
    "patients.responseassessment": "subject",
    "patients.followup": "subject",
    "assays.labdraw": "subject",
    "assays.result": "subject",
}
