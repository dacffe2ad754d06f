"""Reads of signatures: scoped lists, the subjects a user may sign, a subject's forms, and verification."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet

from config.compiled import compiled
from config.reads import shared
from patients.models import Subject
from signatures.content import content_hash, form_labels, model_of, subject_filter
from signatures.models import Signature
from trials.access import access_of
from trials.models import Membership


def list_signatures(*, user: AbstractBaseUser | AnonymousUser, subject_code: str | None = None,
                    valid: bool | None = None) -> QuerySet[Signature]:
    """Signatures of subjects at the user's sites, newest first; one query whatever the rows."""
    qs = (Signature.objects.filter(access_of(user).site_q(trial="subject__trial", site="subject__site"))
          .select_related("subject", "record_type").order_by("-signed_at", "-pk"))
    if subject_code:
        qs = qs.filter(subject__code=subject_code)
    if valid is not None:
        qs = qs.filter(invalidated_at__isnull=valid)
    return qs


def subject_signatures_of(subject: Subject) -> list[Signature]:
    """One subject's signatures, newest first, with what each signs: one query, read once within
    ``config.reads.shared_reads`` (the subject page lists them and counts the valid ones)."""
    def build(subject_id: int) -> QuerySet[Signature]:
        signatures = Signature.objects.filter(subject_id=subject_id).select_related("record_type", "subject")
        return signatures.order_by("-signed_at", "-pk")

    return shared(("signatures", subject.pk), lambda: compiled("signatures of a subject", build).rows(subject.pk))


def signable_subjects(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Subject]:
    """Subjects at the sites where the user is an investigator (a superuser is no investigator)."""
    access = access_of(user)
    q = Q(pk__in=[])
    for (trial_id, site_id), roles in access.site_roles.items():
        if Membership.Role.INVESTIGATOR in roles:
            q |= Q(trial_id=trial_id, site_id=site_id)
    return Subject.objects.filter(q).select_related("trial").order_by("trial__code", "code", "pk")


@dataclass(frozen=True)
class FormRef:
    label: str  # e.g. "patients.adverseevent"
    pk: int
    title: str  # e.g. "Adverse event #12: Febrile neutropenia grade 3 from 2025-01-04"

    @property
    def key(self) -> str:
        return f"{self.label}:{self.pk}"


def list_forms(subject: Subject) -> list[FormRef]:
    """The subject's signable forms, one query per form model."""
    forms = []
    for label in form_labels():
        model = model_of(label)
        # select_related(): some __str__ read a foreign key (e.g. a course's regimen)
        for record in model._default_manager.filter(**subject_filter(label, subject.pk)).select_related() \
                .order_by("pk"):
            name = str(model._meta.verbose_name).capitalize()
            forms.append(FormRef(label, record.pk, f"{name} #{record.pk}: {record}"))
    return forms


@dataclass(frozen=True)
class Verification:
    matches: bool
    stored_hash: str
    current_hash: str


def verify_signature(signature: Signature) -> Verification:
    """Recompute the hash of what the signature covers and compare it with the stored one (for inspection:
    invalidation itself is the triggers' job and does not depend on this)."""
    label = None
    if signature.record_type is not None:
        label = f"{signature.record_type.app_label}.{signature.record_type.model}"
    current = content_hash(subject_id=signature.subject_id, record_label=label, record_id=signature.record_id)
    return Verification(matches=current == signature.content_hash, stored_hash=signature.content_hash,
                        current_hash=current)
