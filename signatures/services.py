"""Signing a subject's casebook or one form (21 CFR Part 11 §11.50, §11.70, §11.100, §11.200, §11.300).

Only an investigator of the subject's site signs, never a service account; the password is re-entered
at every signing (§11.200(a)); refused attempts are stored and logged (§11.300(d)). Invalidation of a
signature when signed data changes is done by database triggers, not here (migration 0002).
"""

from __future__ import annotations

import logging

import pghistory
from django.contrib.auth.models import AbstractBaseUser, User
from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.utils import timezone

from config.errors import DomainError, PermissionRefused, RuleViolation, StateConflict
from config.lockout import account_locked, lockout_message, record_signing_failure
from locking.services import check_writable
from patients.models import Subject
from signatures.content import SUBJECT_PATHS, content_hash, form_labels
from signatures.models import FailedSigningAttempt, Meaning, Scope, Signature
from trials.access import access_of
from trials.models import Membership, ServiceAccount

logger = logging.getLogger("signatures.security")


def check_signer(*, subject: Subject, by: User) -> None:
    """§11.100/§11.10(g): people sign, and only the investigators of the subject's site."""
    if ServiceAccount.objects.filter(user_id=by.pk).exists():
        raise PermissionRefused("service_account_cannot_sign", "A service account cannot sign.")
    if not access_of(by).has_role(trial_id=subject.trial_id, site_id=subject.site_id,
                                  role=Membership.Role.INVESTIGATOR):
        raise PermissionRefused("investigator_required",
                                f"Only an investigator of {subject.code}'s site may sign its case report forms.")


def check_not_locked_out(*, by: User) -> None:
    """§11.300(d): after repeated wrong passwords (signing or logging in) the account signs nothing until
    the cool-off has passed or a data manager unlocks it."""
    if account_locked(by.get_username()):
        raise StateConflict("account_locked", lockout_message())


def check_signature(*, subject: Subject, meaning: str, record: models.Model | None) -> None:
    """The meaning is one of the declared ones; a signed form is a record of this subject."""
    if meaning not in Meaning.values:
        raise RuleViolation("unknown_meaning", f"Choose the meaning: {', '.join(Meaning.values)}.", field="meaning")
    if record is None:
        return
    label = record._meta.label_lower
    if label not in form_labels():
        raise RuleViolation("not_a_form", f"A {record._meta.verbose_name} is not signed on its own.", field="record")
    path = SUBJECT_PATHS[label]
    owner = record.pk if path == "pk" else getattr(record, f"{path}_id")
    if owner != subject.pk:
        raise RuleViolation("record_not_of_subject", f"That record is not a form of {subject.code}.", field="record")


def printed_name(user: AbstractBaseUser) -> str:
    """The name shown with the signature (§11.50): the full name, else the username."""
    full_name = getattr(user, "get_full_name", lambda: "")()
    return full_name.strip() or user.get_username()


def record_failed_attempt(*, subject: Subject, by: User, code: str, meaning: str = "") -> None:
    """Store and log a refused signing. Runs in its own transaction so that the refusal's rollback
    cannot erase it (unless a caller's own transaction encloses it; the log line stays either way)."""
    meaning = meaning if meaning in Meaning.values else ""
    logger.warning("Refused signing (%s) by user %s (id %s) on subject %s (id %s)",
                   code, by.get_username(), by.pk, subject.code, subject.pk)
    with transaction.atomic():
        FailedSigningAttempt.objects.create(user_id=by.pk, subject=subject, attempted_at=timezone.now(), code=code,
                                            meaning=meaning)


def sign(*, subject: Subject, meaning: str, password: str, by: User,
         record: models.Model | None = None) -> Signature:
    """Sign the subject's casebook, or one form (``record``), with the given meaning.

    Refusals: 403 ``service_account_cannot_sign`` / ``investigator_required``; 400 ``unknown_meaning``,
    ``not_a_form``, ``record_not_of_subject``, ``wrong_password`` (field ``password``); 409
    ``account_locked`` when wrong passwords or failed logins have locked the account (the wrong password
    that reaches the limit says so too), and from ``locking.services.check_writable`` when the subject is
    locked for signatures.
    """
    try:
        check_signer(subject=subject, by=by)
    except DomainError as err:
        record_failed_attempt(subject=subject, by=by, code=err.code, meaning=meaning)
        raise
    check_signature(subject=subject, meaning=meaning, record=record)
    try:
        check_not_locked_out(by=by)
    except DomainError as err:
        record_failed_attempt(subject=subject, by=by, code=err.code, meaning=meaning)
        raise
    if not by.check_password(password):
        record_failed_attempt(subject=subject, by=by, code="wrong_password", meaning=meaning)
        if record_signing_failure(by.get_username()):
            raise StateConflict("account_locked", f"The password is not correct. {lockout_message()}")
        raise RuleViolation("wrong_password", "The password is not correct.", field="password")
    return _write_signature(subject=subject, meaning=meaning, by=by, record=record)


@transaction.atomic
def _write_signature(*, subject: Subject, meaning: str, by: User,
                     record: models.Model | None) -> Signature:
    # The lock makes signing and data changes take turns: the invalidation triggers take a KEY SHARE lock
    # on the changed subjects, so a change either commits before the hash is computed here, or waits
    # and then sees (and invalidates) this signature.
    subject = Subject.objects.select_for_update(of=("self",)).get(pk=subject.pk)
    check_writable(trial_id=subject.trial_id, site_id=subject.site_id, subject_id=subject.pk, activity="signature")
    label = None if record is None else record._meta.label_lower
    signature = Signature(
        subject=subject, scope=Scope.CASEBOOK if record is None else Scope.FORM,
        record_type=None if record is None else ContentType.objects.get_for_model(record),
        record_id=None if record is None else record.pk, meaning=meaning, signer=by,
        signer_name=printed_name(by), signed_at=timezone.now(),
        content_hash=content_hash(subject_id=subject.pk, record_label=label,
                                  record_id=None if record is None else record.pk),
    )
    signature.full_clean()
    with pghistory.context(action="sign", meaning=meaning):
        signature.save()
    return signature
