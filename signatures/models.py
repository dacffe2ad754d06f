"""Electronic signatures of a subject's case report forms (21 CFR Part 11 §11.50, §11.70, §11.200).

A signature binds signer, time, meaning and a SHA-256 hash of the signed content (``signatures.content``).
It is never deleted and never edited, except once: PostgreSQL triggers on every subject-level table
(migration 0002) stamp ``invalidated_at`` and ``invalidated_reason`` when signed data changes, whatever
wrote it (admin, API, command or raw SQL). A changed record therefore shows "changed since signed" and
needs a new signature.
"""

from __future__ import annotations

import pgtrigger
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q

from config.audit import audited
from patients.models import Subject


class Meaning(models.TextChoices):
    """What the signer declares by signing (§11.50(a)(3))."""

    REVIEW = "review", "Review"
    APPROVAL = "approval", "Approval"
    RESPONSIBILITY = "responsibility", "Responsibility"


class Scope(models.TextChoices):
    CASEBOOK = "casebook", "Casebook (all of the subject's forms)"
    FORM = "form", "Form (one record)"


# Only the invalidation stamp may change, and only once; the trigger functions write it, nobody else needs to.
_EDITS_OTHER_THAN_INVALIDATION = (
    "OLD.invalidated_at IS NOT NULL OR (to_jsonb(OLD) - 'invalidated_at' - 'invalidated_reason') "
    "IS DISTINCT FROM (to_jsonb(NEW) - 'invalidated_at' - 'invalidated_reason')"
)


# Not a TimeStampedModel: signed_at is the creation time, and the only later change (the invalidation)
# is made by a database trigger, which an auto_now ``updated_at`` would never see.
@audited
class Signature(models.Model):
    """An investigator's signature of a subject's casebook or of one form (a record and its parts)."""

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="signatures")
    scope = models.CharField(max_length=8, choices=Scope.choices)
    record_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="+", help_text="The signed form's table (form scope only).")
    record_id = models.PositiveBigIntegerField(null=True, blank=True, help_text="The signed form's id.")
    meaning = models.CharField(max_length=15, choices=Meaning.choices)
    signer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signer_name = models.CharField(max_length=300, help_text="The signer's printed name at signing (§11.50).")
    signed_at = models.DateTimeField(help_text="UTC.")
    content_hash = models.CharField(max_length=64, help_text="SHA-256 (hex) of the canonical signed content.")
    invalidated_at = models.DateTimeField(null=True, blank=True, help_text="When signed data changed.")
    invalidated_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-signed_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(scope="casebook", record_type__isnull=True, record_id__isnull=True)
                | Q(scope="form", record_type__isnull=False, record_id__isnull=False),
                name="signature_scope_matches_record",
            ),
            models.CheckConstraint(condition=Q(meaning__in=Meaning.values), name="signature_known_meaning"),
            models.CheckConstraint(condition=Q(content_hash__regex=r"^[0-9a-f]{64}$"),
                                   name="signature_hash_is_sha256_hex"),
            models.CheckConstraint(
                condition=Q(invalidated_at__isnull=True, invalidated_reason="")
                | (Q(invalidated_at__isnull=False) & ~Q(invalidated_reason="")),
                name="signature_invalidation_has_reason",
            ),
        ]
        indexes = [
            # The invalidation triggers look up the still-valid signatures of the changed subjects.
            models.Index(fields=["subject"], condition=Q(invalidated_at__isnull=True), name="signature_valid_idx"),
        ]
        triggers = [
            pgtrigger.Protect(name="signature_never_deleted", operation=pgtrigger.Delete),
            pgtrigger.Protect(name="signature_only_invalidated", operation=pgtrigger.Update,
                              condition=pgtrigger.Condition(_EDITS_OTHER_THAN_INVALIDATION)),
        ]

    def __str__(self) -> str:
        return f"{self.get_meaning_display()} signature of {self.scope_label} by {self.signer_name}"

    @property
    def is_valid(self) -> bool:
        return self.invalidated_at is None

    @property
    def status(self) -> str:
        return "valid" if self.is_valid else "invalid"

    @property
    def record_label(self) -> str:
        """``patients.adverseevent`` for a form (needs ``record_type`` selected), else ''."""
        return "" if self.record_type is None else f"{self.record_type.app_label}.{self.record_type.model}"

    @property
    def scope_label(self) -> str:
        """'casebook of S-001' or 'adverse event #12 of S-001' (needs ``subject`` and ``record_type``)."""
        if self.scope == Scope.CASEBOOK:
            return f"casebook of {self.subject}"
        assert self.record_type is not None  # a form's signature names its form (Meta.constraints)
        return f"{self.record_type.name} #{self.record_id} of {self.subject}"


class FailedSigningAttempt(models.Model):
    """A refused attempt to sign: a wrong password or a user who may not sign (§11.300(d): detect them).

    Written outside the refused signing's transaction, and append-only (database triggers).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="+")
    attempted_at = models.DateTimeField()
    code = models.CharField(max_length=30, help_text="Why it was refused, e.g. wrong_password.")
    meaning = models.CharField(max_length=15, blank=True)

    class Meta:
        ordering = ["-attempted_at", "-pk"]
        triggers = [pgtrigger.Protect(name="failedsigningattempt_append_only",
                                      operation=pgtrigger.Update | pgtrigger.Delete)]

    def __str__(self) -> str:
        return f"{self.code} by {self.user} on {self.subject} at {self.attempted_at:%Y-%m-%d %H:%M}"
