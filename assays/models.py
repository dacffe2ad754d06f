"""Assays: the analyte catalogue (LOINC, UCUM units and conversions, reference ranges, LLOQ/ULOQ), lab
draws and their results. Results keep what the site sent and the value normalised to the canonical
unit; a correction supersedes the previous row, which is kept (never overwritten)."""

from __future__ import annotations

import pghistory
import pgtrigger
from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from pghistory.models import Context

from config.audit import audited
from patients.models import Subject
from trials.models import Site, TimeStampedModel, Visit


class Specimen(models.TextChoices):
    PERIPHERAL_BLOOD = "pb", "Peripheral blood"
    BONE_MARROW = "bm", "Bone marrow"
    CSF = "csf", "Cerebrospinal fluid"
    SERUM = "serum", "Serum"
    PLASMA = "plasma", "Plasma"


class CtcaeLabTerm(models.TextChoices):
    NEUTROPHILS = "neutrophil_decreased", "Neutrophil count decreased"
    PLATELETS = "platelet_decreased", "Platelet count decreased"
    ANAEMIA = "anaemia", "Anemia"
    LYMPHOCYTES = "lymphocyte_decreased", "Lymphocyte count decreased"
    WBC = "wbc_decreased", "White blood cell decreased"
    ALT = "alt_increased", "Alanine aminotransferase increased"
    AST = "ast_increased", "Aspartate aminotransferase increased"
    BILIRUBIN = "bilirubin_increased", "Blood bilirubin increased"
    CREATININE = "creatinine_increased", "Creatinine increased"
    FIBRINOGEN = "fibrinogen_decreased", "Fibrinogen decreased"


class CatalogueVersion(models.Model):
    """One row numbering changes to the analyte catalogue (analytes, units, reference ranges), set by a
    statement trigger on each of those tables in the changing transaction: a process that caches the
    catalogue (assays.services) reloads it when the number it read differs from its copy's, whoever
    changed it (admin, a migration, raw SQL) and from whichever process."""

    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"catalogue version {self.version}"


def bump_catalogue_version(table: str) -> pgtrigger.Trigger:
    return pgtrigger.Trigger(
        name=f"bump_catalogue_version_{table}", level=pgtrigger.Statement, when=pgtrigger.After,
        operation=pgtrigger.Insert | pgtrigger.Update | pgtrigger.Delete,
        # A sequence, not version + 1: a rolled-back change must not leave a number that a later change
        # reuses (a process that read the catalogue inside the rolled-back transaction would keep it).
        func="UPDATE assays_catalogueversion SET version = nextval('assays_catalogue_version'); RETURN NULL;")


@audited
class Analyte(TimeStampedModel):
    class Kind(models.TextChoices):
        NUMERIC = "numeric", "Numeric"
        QUALITATIVE = "qualitative", "Qualitative (text)"

    code = models.CharField(max_length=30, unique=True, help_text="e.g. IL6, CAR_QPCR, ANC")
    name = models.CharField(max_length=200)
    loinc = models.CharField("LOINC", max_length=10, blank=True)
    canonical_unit = models.CharField(max_length=30, help_text="UCUM, e.g. pg/mL, 10*9/L, {copies}/ug")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.NUMERIC)
    lloq = models.FloatField("LLOQ", null=True, blank=True, help_text="In the canonical unit.")
    uloq = models.FloatField("ULOQ", null=True, blank=True, help_text="In the canonical unit.")
    physiological_low = models.FloatField(null=True, blank=True, help_text="Below this a value is implausible.")
    physiological_high = models.FloatField(null=True, blank=True, help_text="Above this a value is implausible.")
    positivity_cutoff = models.FloatField(null=True, blank=True, help_text="e.g. anti-CAR antibody OD450.")
    ctcae_term = models.CharField(max_length=25, choices=CtcaeLabTerm.choices, blank=True)
    specimens = ArrayField(models.CharField(max_length=6, choices=Specimen.choices), default=list, blank=True)
    qualitative_values = ArrayField(models.CharField(max_length=30), default=list, blank=True,
                                    help_text="Accepted texts for qualitative results, e.g. negative,positive.")

    class Meta:
        ordering = ["code"]
        triggers = [bump_catalogue_version("analyte")]

    def __str__(self) -> str:
        return f"{self.code} ({self.canonical_unit})"


@audited
class AnalyteUnit(models.Model):
    """A unit a laboratory may send, and the factor that converts it to the canonical unit."""

    analyte = models.ForeignKey(Analyte, on_delete=models.CASCADE, related_name="units")
    unit = models.CharField(max_length=30)
    factor = models.FloatField(help_text="canonical value = sent value × factor")

    class Meta:
        ordering = ["analyte", "unit"]
        constraints = [models.UniqueConstraint(fields=["analyte", "unit"], name="analyteunit_unique"),
                       models.CheckConstraint(condition=Q(factor__gt=0), name="analyteunit_positive_factor")]
        triggers = [bump_catalogue_version("unit")]

    def __str__(self) -> str:
        return f"{self.unit} × {self.factor:g}"


@audited
class ReferenceRange(models.Model):
    analyte = models.ForeignKey(Analyte, on_delete=models.CASCADE, related_name="ranges")
    sex = models.CharField(max_length=1, choices=Subject.Sex.choices, blank=True, help_text="Blank: any sex.")
    age_min_years = models.PositiveSmallIntegerField(default=0)
    age_max_years = models.PositiveSmallIntegerField(default=120, help_text="Inclusive.")
    low = models.FloatField(null=True, blank=True)
    high = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["analyte", "sex", "age_min_years"]
        triggers = [bump_catalogue_version("range")]

    def __str__(self) -> str:
        return f"{self.low}-{self.high} ({self.sex or 'any'}, {self.age_min_years}-{self.age_max_years} y)"


@audited
class LabDraw(TimeStampedModel):
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="lab_draws")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+", editable=False)
    accession_number = models.CharField(max_length=40)
    specimen = models.CharField(max_length=6, choices=Specimen.choices)
    collected_at = models.DateTimeField()
    visit = models.ForeignKey(Visit, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["subject", "collected_at", "pk"]
        constraints = [models.UniqueConstraint(fields=["site", "accession_number"], name="labdraw_unique_accession"),
                       # The target of the results' composite foreign key (draw, subject, site).
                       models.UniqueConstraint(fields=["id", "subject", "site"], name="labdraw_id_subject_site")]
        # Results by collection time (``?collected_after=&collected_before=``): without it every draw is read
        # (a sequential scan in bench/scale.py's plans).
        indexes = [models.Index(fields=["collected_at"], name="labdraw_collected_at")]

    def __str__(self) -> str:
        return f"{self.accession_number} ({self.get_specimen_display()}, {self.collected_at:%Y-%m-%d %H:%M})"


# Results arrive by the thousand and are never rewritten (a correction is a new row): a result's row is
# its own insert record (who: recorded_by and the audit context; when: recorded_at; which request: the
# context), the database refuses to rewrite or delete it, and the audit trail reads its insert from the
# row itself (the view assays_resulttrail). Updates (superseding) and deletes stay audited row by row.
# See README, "Results and the audit trail".
@pghistory.track(pghistory.UpdateEvent(), pghistory.DeleteEvent(), exclude=["audit_context"])
class Result(models.Model):
    """One assay result as sent (value and unit text) and normalised (canonical unit)."""

    # The audit trail reads this view instead of the event table: the inserts from the rows themselves,
    # the updates and deletes from assays_resultevent (audit.tables).
    AUDIT_TRAIL_TABLE = "assays_resulttrail"

    class Status(models.TextChoices):
        PRELIMINARY = "preliminary", "Preliminary"
        FINAL = "final", "Final"
        CORRECTED = "corrected", "Corrected"
        CANCELLED = "cancelled", "Cancelled"

    class Flag(models.TextChoices):
        LOW = "L", "Below reference range"
        NORMAL = "N", "Within reference range"
        HIGH = "H", "Above reference range"

    # Referential integrity of draw, subject, site, analyte and recorded_by is checked by the database
    # once per statement, not per row (migration 0007: a statement trigger over the inserted rows locks
    # the distinct draws (id, subject, site), analytes and users FOR KEY SHARE; triggers on the draws,
    # analytes and users refuse to delete or re-key a referenced row). So no field here has its own
    # constraint; Django's on_delete (PROTECT) still applies. See README, "Results and the audit trail".
    draw = models.ForeignKey(LabDraw, on_delete=models.PROTECT, related_name="results", db_constraint=False)
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="results", editable=False,
                                db_constraint=False)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+", editable=False,
                             db_index=False, db_constraint=False)
    # No index: results by analyte alone read every page of the table whatever the index (bench/scale.py's
    # plans); the reads that filter by analyte also filter by subject (its index). README, "Benchmarks".
    analyte = models.ForeignKey(Analyte, on_delete=models.PROTECT, related_name="+", db_constraint=False,
                                db_index=False)
    source_ref = models.CharField(max_length=80, help_text="The sending system's reference for this result.")
    value_text = models.CharField(max_length=40, help_text="As sent: a number, '<LLOQ', '>ULOQ' or a text.")
    unit_text = models.CharField(max_length=30, blank=True, help_text="As sent.")
    value = models.FloatField(null=True, blank=True, help_text="Normalised to the analyte's canonical unit.")
    censored = models.CharField(max_length=1, blank=True, choices=[("<", "below LLOQ"), (">", "above ULOQ")])
    flag = models.CharField(max_length=1, choices=Flag.choices, blank=True)
    ctcae_grade = models.SmallIntegerField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.FINAL)
    superseded = models.BooleanField(default=False)
    correction_reason = models.TextField(blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+",
                                    db_index=False, db_constraint=False)
    recorded_at = models.DateTimeField()
    # The audit context of the request that wrote the row (user, service account, request id, source);
    # empty for a write outside the application. No constraint: the context row is written first, in
    # the same transaction, and context rows are never deleted.
    audit_context = models.ForeignKey(Context, on_delete=models.DO_NOTHING, null=True, blank=True, editable=False,
                                      db_constraint=False, db_index=False, related_name="+")

    class Meta:
        ordering = ["draw", "analyte", "pk"]
        constraints = [
            # One current result per reference and site: a repost is found, a correction supersedes.
            models.UniqueConstraint(fields=["site", "source_ref"], condition=Q(superseded=False),
                                    name="result_unique_current_ref"),
        ]
        triggers = [
            # Append-only: the row is its own insert record. The one permitted change is superseding it.
            pgtrigger.Protect(name="result_no_delete", operation=pgtrigger.Delete),
            pgtrigger.Protect(name="result_no_rewrite", operation=pgtrigger.Update,
                              condition=pgtrigger.AnyChange(exclude=["superseded"])),
            pgtrigger.Protect(name="result_no_unsupersede", operation=pgtrigger.Update,
                              condition=pgtrigger.Q(old__superseded=True, new__superseded=False)),
        ]

    def __str__(self) -> str:
        return f"{self.analyte_id}: {self.value_text} {self.unit_text}"
