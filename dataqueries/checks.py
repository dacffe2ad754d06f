"""Automatic data checks (edit checks): each finds the records of a trial that break one consistency rule,
and ``run_checks`` keeps one automatic query per check, record and field in step with what it finds.

Checks
- ``lab_implausible``: a current numeric lab result (not superseded, not cancelled) whose canonical-unit
  value is below the analyte's ``physiological_low`` or above its ``physiological_high`` (field ``value``);
- ``ae_before_consent``: an adverse event whose onset precedes the subject's first consent, or whose
  subject has no consent at all (field ``onset_on``);
- ``response_without_sample``: a response assessment with no bone-marrow or peripheral-blood lab draw
  collected within ``RESPONSE_SAMPLE_WINDOW_DAYS`` days either side of the assessment date, the draw's
  date taken in the site's time zone (field ``assessed_on``);
- ``ld_dose_deviation``: a lymphodepletion dose whose administered mg differs from its planned mg by more
  than the regimen's ``dose_tolerance_pct`` (the boundary is inside, as ``patients.dosing.within_tolerance``)
  while its deviation reason is blank (field ``administered_mg``);
- ``crs_grade_mismatch``: a CRS assessment whose stored ``derived_grade``, or whose investigator
  ``override_grade``, differs from the ASTCT grade of its stored components (``patients.grading``).
  An override has a reason, but the disagreement is still shown to data management once: the site
  confirms, the data manager closes, and a closed query is not raised again;
- ``ae_uncoded``: an adverse event (not CRS or ICANS) whose reported term is not coded to a CTCAE v5.0
  dictionary term, e.g. one entered as free text before the dictionary (field ``ctcae_term``); coding it
  (a correction with a reason) closes the query.

Set-based: every check is one query whatever the number of records (the CRS grade is computed in
Python over one query's rows), and ``run_checks`` adds a constant number of reads and bulk writes.

Idempotent, one thread per (check, record, field), enforced by a unique constraint:
- the condition holds and no query exists: raise one (open, by the check);
- the condition holds and the query is open or answered: nothing to do;
- the condition holds and a person closed the query: nothing (the data manager accepted the data);
- the condition holds and the check had closed the query itself: re-open it (``reopen`` message);
- the condition no longer holds and the query is open or answered: close it with an ``auto_resolve``
  message (the data were corrected, e.g. a result superseded by a correction). A query a person
  closed stays as it is.
Subjects under a database lock (``locking.services.blocking_locks``, the batch form of ``check_writable``
with activity "query") are skipped and counted as such; a freeze does not stop queries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import pghistory
from django.contrib.contenttypes.models import ContentType
from django.db import connection, models, transaction
from django.db.models import DateField, Exists, ExpressionWrapper, F, Func, Min, OuterRef, Q
from django.db.models.functions import Abs
from django.utils import timezone

from assays.models import LabDraw, Result, Specimen
from config.errors import RuleViolation
from dataqueries.models import CheckCode, DataQuery, QueryMessage
from locking.services import blocking_locks
from patients import grading
from patients.models import AdverseEvent, CrsAssessment, LymphodepletionDose, ResponseAssessment, Subject
from patients.services.safety import crs_inputs
from trials.models import Trial

RESPONSE_SAMPLE_WINDOW_DAYS = 7  # a marrow or blood draw within ±7 days supports a response assessment
RESPONSE_SPECIMENS = (Specimen.BONE_MARROW, Specimen.PERIPHERAL_BLOOD)
AUDIT_REASON = "automatic data checks"
_LOCK_NAMESPACE = 0x44510001  # pg_advisory_xact_lock(namespace, trial id): one run per trial at a time


@dataclass(frozen=True)
class Finding:
    check: str
    model: type[models.Model]
    record_id: int
    subject_id: int
    site_id: int
    field: str
    text: str


@dataclass
class CheckSummary:
    trial: str
    findings: dict[str, int] = field(default_factory=dict)  # per check code
    raised: int = 0
    reopened: int = 0
    auto_resolved: int = 0
    unchanged: int = 0  # findings that already have their query (open, answered or closed by a person)
    skipped_locked: int = 0

    def __str__(self) -> str:
        per_check = ", ".join(f"{code} {n}" for code, n in self.findings.items())
        return (f"{self.trial}: {sum(self.findings.values())} finding(s) ({per_check}); raised {self.raised}, "
                f"re-opened {self.reopened}, auto-resolved {self.auto_resolved}, unchanged {self.unchanged}, "
                f"skipped (locked) {self.skipped_locked}")


class LocalDate(Func):
    """The calendar date of a timestamp in a named time zone (the site's local date)."""

    arg_joiner = " AT TIME ZONE "
    template = "((%(expressions)s)::date)"
    output_field = DateField()


def _limits(low: float | None, high: float | None, unit: str) -> str:
    if low is not None and high is not None:
        return f"{low:g}-{high:g} {unit}"
    return f"below {high:g} {unit}" if high is not None else f"above {low:g} {unit}"


def lab_implausible(trial: Trial) -> list[Finding]:
    rows = (Result.objects.filter(subject__trial=trial, superseded=False, value__isnull=False)
            .exclude(status=Result.Status.CANCELLED)
            .filter(Q(value__lt=F("analyte__physiological_low")) | Q(value__gt=F("analyte__physiological_high")))
            .order_by("pk")
            .values_list("pk", "subject_id", "subject__site_id", "value", "analyte__code", "analyte__canonical_unit",
                         "analyte__physiological_low", "analyte__physiological_high"))
    return [Finding(CheckCode.LAB_IMPLAUSIBLE, Result, pk, subject_id, site_id, "value",
                    f"{code} {value:g} {unit} is outside the physiological limits ({_limits(low, high, unit)}); "
                    "check the value and its unit against the source.")
            for pk, subject_id, site_id, value, code, unit, low, high in rows]


def ae_before_consent(trial: Trial) -> list[Finding]:
    rows = (AdverseEvent.objects.filter(subject__trial=trial)
            .annotate(first_consent=Min("subject__consents__consented_on"))
            .filter(Q(first_consent__isnull=True) | Q(onset_on__lt=F("first_consent")))
            .order_by("pk").values_list("pk", "subject_id", "subject__site_id", "term", "onset_on", "first_consent"))
    findings = []
    for pk, subject_id, site_id, term, onset, consent in rows:
        why = (f"before the first consent ({consent:%d %b %Y})" if consent is not None
               else "but the subject has no consent recorded")
        findings.append(Finding(CheckCode.AE_BEFORE_CONSENT, AdverseEvent, pk, subject_id, site_id, "onset_on",
                                f"{term}: onset {onset:%d %b %Y} is {why}. Check the onset date, or whether this "
                                "is a pre-existing condition (medical history) rather than an adverse event."))
    return findings


def response_without_sample(trial: Trial) -> list[Finding]:
    window = dt.timedelta(days=RESPONSE_SAMPLE_WINDOW_DAYS)
    sample = (LabDraw.objects.filter(subject=OuterRef("subject"), specimen__in=RESPONSE_SPECIMENS)
              .annotate(local_on=LocalDate(F("collected_at"), OuterRef("subject__site__time_zone")))
              .filter(local_on__gte=ExpressionWrapper(OuterRef("assessed_on") - window, output_field=DateField()),
                      local_on__lte=ExpressionWrapper(OuterRef("assessed_on") + window, output_field=DateField())))
    rows = (ResponseAssessment.objects.filter(subject__trial=trial).filter(~Exists(sample))
            .order_by("pk").values_list("pk", "subject_id", "subject__site_id", "category", "assessed_on"))
    labels = dict(ResponseAssessment.Category.choices)
    return [Finding(CheckCode.RESPONSE_WITHOUT_SAMPLE, ResponseAssessment, pk, subject_id, site_id, "assessed_on",
                    f"{labels.get(category, category)} assessed on {on:%d %b %Y} has no bone-marrow or "
                    f"peripheral-blood sample within ±{RESPONSE_SAMPLE_WINDOW_DAYS} days; record the sample "
                    "or check the assessment date.")
            for pk, subject_id, site_id, category, on in rows]


def ld_dose_deviation(trial: Trial) -> list[Finding]:
    tolerance = F("course__regimen__dose_tolerance_pct")
    rows = (LymphodepletionDose.objects.filter(course__subject__trial=trial, deviation_reason__regex=r"^\s*$")
            .annotate(difference=Abs(F("administered_mg") - F("planned_mg")),
                      allowed=F("planned_mg") * tolerance / 100)
            .filter(difference__gt=F("allowed"))
            .order_by("pk")
            .values_list("pk", "course__subject_id", "course__subject__site_id", "agent__agent", "day",
                         "administered_mg", "planned_mg", "course__regimen__dose_tolerance_pct"))
    return [Finding(CheckCode.LD_DOSE_DEVIATION, LymphodepletionDose, pk, subject_id, site_id, "administered_mg",
                    f"{agent.capitalize()} day {day}: {given} mg given, {planned} mg planned, outside "
                    f"±{tol.normalize():f}% with no deviation reason; correct the dose or give the reason.")
            for pk, subject_id, site_id, agent, day, given, planned, tol in rows]


CRS_COMPONENTS = ("max_temp_c", "fever_other_cause", "prior_antipyretic_or_anticytokine", "hypotension",
                  "hypotension_other_cause", "vasopressors", "o2_device", "o2_flow_lpm", "hypoxia_other_cause",
                  "death_due_to_crs")


def crs_grade_mismatch(trial: Trial) -> list[Finding]:
    rows = (CrsAssessment.objects.filter(event__subject__trial=trial).order_by("pk")
            .values("pk", "event__subject_id", "event__subject__site_id", "derived_grade", "override_grade",
                    *CRS_COMPONENTS))
    findings = []
    for row in rows:
        try:
            computed: int | None = grading.crs_grade(crs_inputs(row)).grade
            problem = ""
        except RuleViolation as err:  # components no form would accept (an import or raw SQL)
            computed, problem = None, err.message
        for name in ("derived_grade", "override_grade"):
            recorded = row[name]
            if recorded is None or recorded == computed:
                continue
            what = "Derived grade" if name == "derived_grade" else "Investigator override grade"
            text = (f"{what} {recorded} disagrees with the components, which give ASTCT grade {computed}; "
                    "check the temperature, hypotension, vasopressors and oxygen against the source."
                    if computed is not None else f"{what} {recorded}, but the components are invalid: {problem}")
            findings.append(Finding(CheckCode.CRS_GRADE_MISMATCH, CrsAssessment, row["pk"],
                                    row["event__subject_id"], row["event__subject__site_id"], name, text))
    return findings


def ae_uncoded(trial: Trial) -> list[Finding]:
    rows = (AdverseEvent.objects.filter(subject__trial=trial, category=AdverseEvent.Category.CTCAE,
                                        ctcae_term__isnull=True)
            .order_by("pk").values_list("pk", "subject_id", "subject__site_id", "term", "grade"))
    return [Finding(CheckCode.AE_UNCODED, AdverseEvent, pk, subject_id, site_id, "ctcae_term",
                    f"\"{term}\" (grade {grade}) is not coded to a CTCAE v5.0 term; choose the dictionary term "
                    "(or \"Other, specify\" with its system organ class), and check the grade is one it allows.")
            for pk, subject_id, site_id, term, grade in rows]


CHECKS: dict[str, Callable[[Trial], list[Finding]]] = {
    CheckCode.LAB_IMPLAUSIBLE: lab_implausible,
    CheckCode.AE_BEFORE_CONSENT: ae_before_consent,
    CheckCode.RESPONSE_WITHOUT_SAMPLE: response_without_sample,
    CheckCode.LD_DOSE_DEVIATION: ld_dose_deviation,
    CheckCode.CRS_GRADE_MISMATCH: crs_grade_mismatch,
    CheckCode.AE_UNCODED: ae_uncoded,
}
_CHECKED_MODELS = (Result, AdverseEvent, ResponseAssessment, LymphodepletionDose, CrsAssessment)


Key = tuple[str, int, int, str]  # check code, content type id, record id, field


@transaction.atomic
def run_checks(trial: Trial) -> CheckSummary:
    """Run every check on ``trial`` and bring its automatic queries in step with the findings."""
    with connection.cursor() as cursor:  # a second run of the same trial waits for this one
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_NAMESPACE, trial.pk])
    findings = [finding for check in CHECKS.values() for finding in check(trial)]
    summary = CheckSummary(trial=trial.code, findings={code: 0 for code in CHECKS})
    for finding in findings:
        summary.findings[finding.check] += 1
    types = ContentType.objects.get_for_models(*_CHECKED_MODELS)
    found = {(f.check, types[f.model].pk, f.record_id, f.field): f for f in findings}
    existing = {(q.check_code, q.content_type_id, q.object_id, q.field_name): q for q in
                DataQuery.objects.select_for_update(of=("self",)).filter(
                    trial=trial, origin=DataQuery.Origin.AUTOMATIC, check_code__in=list(CHECKS))
                .only("pk", "check_code", "content_type_id", "object_id", "field_name", "status", "auto_resolved",
                      "trial_id", "site_id", "subject_id")}
    # The batch form of locking.services.check_writable (one query): a database-locked subject's
    # queries are neither raised nor closed; a frozen one's are (queries stay open under a freeze).
    subject_ids = {f.subject_id for f in findings} | {q.subject_id for q in existing.values()}
    scopes = Subject.objects.filter(pk__in=subject_ids).order_by().values_list("pk", "site_id", "trial_id")
    locked = set(blocking_locks(list(scopes), activity="query"))
    plan = _plan(found=found, existing=existing, locked=locked, summary=summary)
    _apply(trial=trial, plan=plan, summary=summary)
    return summary


@dataclass
class _Plan:
    raise_: list[tuple[Key, Finding]] = field(default_factory=list)
    reopen: list[tuple[DataQuery, Finding]] = field(default_factory=list)
    resolve: list[DataQuery] = field(default_factory=list)


def _plan(*, found: dict[Key, Finding], existing: dict[Key, DataQuery], locked: set[int],
          summary: CheckSummary) -> _Plan:
    plan = _Plan()
    for key, finding in found.items():
        query = existing.get(key)
        if finding.subject_id in locked:
            summary.skipped_locked += 1
        elif query is None:
            plan.raise_.append((key, finding))
        elif query.status == DataQuery.Status.CLOSED and query.auto_resolved:
            plan.reopen.append((query, finding))
        else:
            summary.unchanged += 1
    for key, query in existing.items():
        if key not in found and query.status in DataQuery.UNRESOLVED:
            if query.subject_id in locked:
                summary.skipped_locked += 1
            else:
                plan.resolve.append(query)
    return plan


def _apply(*, trial: Trial, plan: _Plan, summary: CheckSummary) -> None:
    """At most four statements: insert the new queries, re-open, resolve, insert every message."""
    now = timezone.now()
    messages: list[QueryMessage] = []
    with pghistory.context(reason=AUDIT_REASON):
        if plan.raise_:
            created = DataQuery.objects.bulk_create([
                DataQuery(trial=trial, site_id=f.site_id, subject_id=f.subject_id, content_type_id=key[1],
                          object_id=f.record_id, field_name=f.field, origin=DataQuery.Origin.AUTOMATIC,
                          check_code=f.check, raised_at=now, text=f.text)
                for key, f in plan.raise_])
            messages += [QueryMessage(query=q, kind=QueryMessage.Kind.RAISE, text=q.text, at=now) for q in created]
        if plan.reopen:
            DataQuery.objects.filter(pk__in=[q.pk for q, _f in plan.reopen]).update(
                status=DataQuery.Status.OPEN, auto_resolved=False, updated_at=now)
            messages += [QueryMessage(query=q, kind=QueryMessage.Kind.REOPEN, at=now,
                                      text=f"Found again by the automatic check: {f.text}") for q, f in plan.reopen]
        if plan.resolve:
            DataQuery.objects.filter(pk__in=[q.pk for q in plan.resolve]).update(
                status=DataQuery.Status.CLOSED, auto_resolved=True, updated_at=now)
            messages += [QueryMessage(query=q, kind=QueryMessage.Kind.AUTO_RESOLVE, at=now,
                                      text="The automatic check no longer finds this problem.") for q in plan.resolve]
        if messages:
            QueryMessage.objects.bulk_create(messages)
    summary.raised, summary.reopened, summary.auto_resolved = len(plan.raise_), len(plan.reopen), len(plan.resolve)
