import pytest

from patients.models import SubjectStatus
from tests.factories import enrolled_subject

pytestmark = pytest.mark.django_db


def test_enrolment_path_through_services(world):
    subject = enrolled_subject(coordinator=world.coordinator, investigator=world.investigator,
                               trial=world.trial, site=world.site_a)
    assert subject.status == SubjectStatus.ENROLLED
    assert subject.code == "SA-0001"
    assert [t.to_status for t in subject.transitions.order_by("pk")] == ["screening", "eligible", "enrolled"]
