"""signatures.services.sign: who may sign, the password, the meaning, what is stored (§11.50, §11.200, §11.300)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from config.errors import PermissionRefused, RuleViolation, StateConflict
from locking.services import lock_scope
from patients.models import CrsAssessment
from patients.services import safety
from signatures import services
from signatures.content import content_hash
from signatures.models import FailedSigningAttempt, Signature, SignatureEvent
from signatures.selectors import verify_signature
from tests.factories import PASSWORD, at, consented, days_ago
from tests.signatures.conftest import record_event, sign
from trials.services import issue_service_account

pytestmark = pytest.mark.django_db


def test_signing_the_casebook_stores_signer_time_meaning_and_hash(world, subject):
    before = timezone.now()
    signature = sign(world, subject, meaning="responsibility")
    signature.refresh_from_db()
    assert signature.subject == subject
    assert signature.scope == "casebook" and signature.record_type is None and signature.record_id is None
    assert signature.meaning == "responsibility"
    assert signature.signer == world.investigator
    assert signature.signer_name == world.investigator.get_full_name()
    assert before <= signature.signed_at <= timezone.now()
    assert signature.signed_at.utcoffset() == dt.timedelta(0)
    assert signature.content_hash == content_hash(subject_id=subject.pk)
    assert len(signature.content_hash) == 64
    assert signature.is_valid and signature.invalidated_reason == ""
    assert verify_signature(signature).matches
    assert not FailedSigningAttempt.objects.exists()


def test_the_audit_trail_records_the_signing_with_its_meaning(world, subject):
    signature = sign(world, subject, meaning="review")
    event = SignatureEvent.objects.select_related("pgh_context").get(pgh_obj=signature, pgh_label="insert")
    assert event.pgh_context.metadata["action"] == "sign"
    assert event.pgh_context.metadata["meaning"] == "review"


def test_signing_a_form_hashes_that_record_and_its_parts_only(world, subject):
    event = subject.adverse_events.get()
    signature = sign(world, subject, record=event, meaning="review")
    assert signature.scope == "form"
    assert signature.record_type.model_class()._meta.label == "patients.AdverseEvent"
    assert signature.record_id == event.pk
    assert signature.content_hash == content_hash(subject_id=subject.pk, record_label="patients.adverseevent",
                                                  record_id=event.pk)
    assert signature.content_hash != content_hash(subject_id=subject.pk)


def test_the_subject_row_itself_can_be_signed_as_a_form(world, subject):
    signature = sign(world, subject, record=subject)
    assert signature.scope == "form" and signature.record_id == subject.pk
    assert verify_signature(signature).matches


def test_a_wrong_password_is_refused_and_only_the_attempt_is_stored(world, subject):
    with pytest.raises(RuleViolation) as err:
        services.sign(subject=subject, meaning="approval", password="not-my-password", by=world.investigator)
    assert (err.value.code, err.value.field, err.value.http_status) == ("wrong_password", "password", 400)
    assert not Signature.objects.exists()
    attempt = FailedSigningAttempt.objects.get()
    assert (attempt.user, attempt.subject, attempt.code, attempt.meaning) == (
        world.investigator, subject, "wrong_password", "approval")


def test_a_wrong_password_is_logged_for_detection(world, subject, caplog):
    with pytest.raises(RuleViolation):
        services.sign(subject=subject, meaning="approval", password="guess", by=world.investigator)
    assert any(r.name == "signatures.security" and "wrong_password" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("role", ["coordinator", "monitor", "data_manager", "investigator_b", "coordinator_b"])
def test_only_an_investigator_of_the_subjects_site_signs(world, subject, role):
    with pytest.raises(PermissionRefused) as err:
        services.sign(subject=subject, meaning="approval", password=PASSWORD, by=getattr(world, role))
    assert (err.value.code, err.value.http_status) == ("investigator_required", 403)
    assert not Signature.objects.exists()
    assert FailedSigningAttempt.objects.get().code == "investigator_required"


def test_a_service_account_never_signs(world, subject):
    account, _token = issue_service_account(trial=world.trial, sites=[world.site_a], name="Site A system",
                                            by=world.data_manager)
    with pytest.raises(PermissionRefused) as err:
        services.sign(subject=subject, meaning="approval", password="", by=account.user)
    assert err.value.code == "service_account_cannot_sign"
    assert not Signature.objects.exists()


def test_the_meaning_must_be_review_approval_or_responsibility(world, subject):
    with pytest.raises(RuleViolation) as err:
        sign(world, subject, meaning="authorship")
    assert (err.value.code, err.value.field) == ("unknown_meaning", "meaning")
    assert not Signature.objects.exists()


def test_a_form_of_another_subject_is_refused(world, subject):
    other = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    others_event = record_event(world, other)
    with pytest.raises(RuleViolation) as err:
        sign(world, subject, record=others_event)
    assert (err.value.code, err.value.field) == ("record_not_of_subject", "record")
    assert not Signature.objects.exists()


def test_a_part_of_a_form_is_signed_with_its_form_not_alone(world, subject):
    event = record_event(world, subject, category="crs", term="Cytokine release syndrome", grade=None,
                         related_to_product="definite")
    assessment = safety.record_crs_assessment(event=event, assessed_at=at(days_ago(2)), by=world.coordinator,
                                              components={"max_temp_c": Decimal("39.0")})
    assert isinstance(assessment, CrsAssessment)
    with pytest.raises(RuleViolation) as err:
        sign(world, subject, record=assessment)
    assert (err.value.code, err.value.field) == ("not_a_form", "record")


def test_a_database_lock_refuses_signing_and_a_freeze_does_not(world, subject):
    lock_scope(trial=world.trial, level="freeze", reason="Interim analysis", by=world.data_manager, subject=subject)
    assert sign(world, subject).is_valid
    lock_scope(trial=world.trial, level="lock", reason="Final database lock", by=world.data_manager, subject=subject)
    with pytest.raises(StateConflict) as err:
        sign(world, subject)
    assert (err.value.code, err.value.http_status) == ("data_locked", 409)
    assert Signature.objects.count() == 1


def test_signing_asks_the_lock_service_with_the_subjects_scope(world, subject, monkeypatch):
    """The call locking.services.check_writable receives, and that its refusal stops the signing."""
    calls: list[dict[str, Any]] = []

    def locked(**kwargs: Any) -> None:
        calls.append(kwargs)
        raise StateConflict("subject_locked", "Locked.")

    monkeypatch.setattr(services, "check_writable", locked)
    with pytest.raises(StateConflict):
        sign(world, subject)
    assert calls == [{"trial_id": subject.trial_id, "site_id": subject.site_id, "subject_id": subject.pk,
                      "activity": "signature"}]
    assert not Signature.objects.exists()
