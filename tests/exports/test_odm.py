"""The CDISC ODM 1.3.2 export: valid against the official schema, with hand-checked values, audit records
from the audit trail, electronic signatures, site scoping, bounded queries and identical bytes twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pghistory
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from lxml import etree

from exports.crf import text
from exports.formats import REGISTRY, load_all
from exports.formats.odm import ODM
from locking.services import lock_scope
from patients.services.amendments import amend_record
from signatures import services as signing
from tests.exports.conftest import D2, Course, day, files_of, scope_for
from tests.factories import PASSWORD, consented

pytestmark = pytest.mark.django_db

SCHEMA_DIR = Path("/work/shared/standards/odm-1.3.2")
NS = {"o": "http://www.cdisc.org/ns/odm/v1.3"}


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    # The main schema includes the foundation and imports xmldsig/xlink by relative path: load it from its folder.
    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / "ODM1-3-2.xsd")))


def export(course: Course, **kwargs: Any) -> bytes:
    files = files_of(ODM, scope_for(course.world, **kwargs))
    assert list(files) == [f"odm/{course.world.trial.code}.xml"]
    return files[f"odm/{course.world.trial.code}.xml"]


def parse(body: bytes) -> etree._Element:
    return etree.fromstring(body)


def group(doc: etree._Element, form: str, record: int) -> etree._Element:
    (found,) = doc.xpath(f"//o:ItemGroupData[@ItemGroupOID='IG.{form}'][@ItemGroupRepeatKey='{record}']",
                         namespaces=NS)
    return found


def values(element: etree._Element) -> dict[str, str]:
    return {i.get("ItemOID").split(".", 2)[2]: i.get("Value") for i in element.findall("o:ItemData", NS)}


@pytest.fixture
def amended_and_signed(course: Course) -> Course:
    """The CRS event's attribution corrected by the coordinator (as the admin would, with its user in the
    audit context), then the investigator signs the casebook and the event."""
    world = course.world
    with pghistory.context(user=world.coordinator.pk):
        amend_record(record=course.crs, changes={"related_to_product": "definite"}, reason="Source document review",
                     by=world.coordinator)
    signing.sign(subject=course.subject, meaning="approval", password=PASSWORD, by=world.investigator)
    course.crs.refresh_from_db()
    signing.sign(subject=course.subject, meaning="review", password=PASSWORD, by=world.investigator,
                 record=course.crs)
    return course


def test_the_document_validates_against_the_odm_1_3_2_schema(amended_and_signed, schema):
    load_all()
    assert REGISTRY["odm"] is ODM
    doc = parse(export(amended_and_signed))
    assert schema.validate(doc), schema.error_log
    assert doc.get("FileType") == "Snapshot" and doc.get("ODMVersion") == "1.3.2"
    assert doc.get("FileOID") == f"ODM.{amended_and_signed.world.trial.code}.SA.{doc.get('CreationDateTime')}"


def test_metadata_has_the_visit_schedule_forms_items_code_lists_and_units(course):
    doc = parse(export(course))
    events = doc.xpath("//o:StudyEventDef", namespaces=NS)
    assert [(e.get("OID"), e.get("Type")) for e in events] == [("SE.COMMON", "Common"), ("SE.D7", "Scheduled")]
    assert doc.xpath("//o:Protocol/o:StudyEventRef/@StudyEventOID", namespaces=NS) == ["SE.COMMON", "SE.D7"]
    (censored,) = doc.xpath("//o:ItemDef[@OID='IT.LR.CENSORED']", namespaces=NS)
    assert censored.find("o:CodeListRef", NS).get("CodeListOID") == "CL.LR.CENSORED"
    (codes,) = doc.xpath("//o:CodeList[@OID='CL.LR.CENSORED']", namespaces=NS)
    assert [c.get("CodedValue") for c in codes.findall("o:CodeListItem", NS)] == ["<", ">"]
    (weight,) = doc.xpath("//o:ItemDef[@OID='IT.VS.WEIGHT_KG']", namespaces=NS)
    assert (weight.get("DataType"), weight.find("o:MeasurementUnitRef", NS).get("MeasurementUnitOID")) == (
        "float", "MU.kg")
    assert doc.xpath("//o:ItemDef[@OID='IT.EX.INFUSED_AT']/@DataType", namespaces=NS) == ["datetime"]
    assert doc.xpath("//o:MeasurementUnit/@OID", namespaces=NS).count("MU.kg") == 1


def test_clinical_values_days_and_events(course):
    doc = parse(export(course))
    (subject,) = doc.xpath("//o:SubjectData", namespaces=NS)
    assert subject.get("SubjectKey") == course.subject.code
    assert subject.find("o:SiteRef", NS).get("LocationOID") == "LOC.SA"
    infusions = course.subject.infusions.order_by("course_number", "fraction_number")
    first, second, reinfused = (values(group(doc, "EX", i.pk)) for i in infusions)
    assert (first["STUDY_DAY"], first["CDISC_STUDY_DAY"], first["COURSE_NUMBER"], first["COURSE_DAY"]) == (
        "0", "1", "1", "0")
    assert (second["FRACTION_NUMBER"], second["PLANNED_FRACTIONS"], second["CELLS_PER_KG"]) == ("2", "2", "600000")
    assert (reinfused["STUDY_DAY"], reinfused["CDISC_STUDY_DAY"], reinfused["COURSE_NUMBER"],
            reinfused["COURSE_DAY"], reinfused["INFUSED_ON"]) == ("10", "11", "2", "0", str(D2))
    consent = values(group(doc, "IC", course.subject.consents.get().pk))
    assert (consent["STUDY_DAY"], consent["CDISC_STUDY_DAY"]) == ("-15", "-15")
    assert "COURSE_NUMBER" not in consent  # no course before day 0: left out, not null
    result = course.subject.results.get(source_ref="LIS-1")
    censored = values(group(doc, "LR", result.pk))
    assert (censored["VALUE_TEXT"], censored["CENSORED"], censored["VALUE"]) == ("<LLOQ", "<", "1.5")
    # The day-7 draw and result go to the D7 visit of course 1; the others to the common event.
    d7 = doc.xpath("//o:StudyEventData[@StudyEventOID='SE.D7']", namespaces=NS)
    assert [(e.get("StudyEventRepeatKey"), [f.get("FormOID") for f in e]) for e in d7] == [("1", ["F.LB", "F.LR"])]
    crs = [values(group(doc, "CR", a.pk)) for a in course.crs.crsassessments.order_by("assessed_at")]
    assert [(a["DERIVED_GRADE"], a["STUDY_DAY"], a["ASSESSED_AT"]) for a in crs] == [
        ("1", "2", f"{day(2)}T10:00:00Z"), ("2", "4", f"{day(3)}T20:00:00Z")]


def test_audit_records_and_signatures(amended_and_signed):
    course, world = amended_and_signed, amended_and_signed.world
    doc = parse(export(course))
    event = group(doc, "AE", course.crs.pk)
    created = event.find("o:AuditRecord", NS)
    assert created.find("o:LocationRef", NS).get("LocationOID") == "LOC.SA"
    assert created.find("o:DateTimeStamp", NS).text.endswith("Z")
    (related,) = event.xpath("o:ItemData[@ItemOID='IT.AE.RELATED_TO_PRODUCT']", namespaces=NS)
    assert related.get("Value") == "definite"
    change = related.find("o:AuditRecord", NS)
    assert change.find("o:UserRef", NS).get("UserOID") == f"U.{world.coordinator.pk}"
    assert change.find("o:ReasonForChange", NS).text == "Source document review"
    (term,) = event.xpath("o:ItemData[@ItemOID='IT.AE.TERM']", namespaces=NS)
    assert term.find("o:AuditRecord", NS) is None  # unchanged since entry: the record's audit record applies
    form_signature = event.find("o:Signature", NS)
    assert form_signature.find("o:SignatureRef", NS).get("SignatureOID") == "SD.REVIEW"
    assert form_signature.find("o:UserRef", NS).get("UserOID") == f"U.{world.investigator.pk}"
    (subject,) = doc.xpath("//o:SubjectData", namespaces=NS)
    assert subject.find("o:Signature/o:SignatureRef", NS).get("SignatureOID") == "SD.APPROVAL"
    users = {u.get("OID"): u for u in doc.xpath("//o:AdminData/o:User", namespaces=NS)}
    assert users[f"U.{world.coordinator.pk}"].find("o:LoginName", NS).text == "coord_a"
    assert users[f"U.{world.investigator.pk}"].find("o:LoginName", NS).text == "inv_a"
    assert "U.SYSTEM" in users
    meanings = doc.xpath("//o:SignatureDef/o:Meaning/text()", namespaces=NS)
    assert meanings == ["Review", "Approval", "Responsibility"]


def test_another_sites_subject_and_site_never_appear(course):
    body = export(course)
    assert course.other.code.encode() not in body
    assert parse(body).xpath("//o:Location/@OID", namespaces=NS) == ["LOC.SA"]
    b_only = parse(export(course, sites=(course.world.site_b,)))
    assert b_only.xpath("//o:SubjectData/@SubjectKey", namespaces=NS) == [course.other.code]
    assert course.subject.code not in etree.tostring(b_only).decode()


def test_selected_subjects_only(course, schema):
    world = course.world
    doc = parse(export(course, sites=(world.site_a, world.site_b), subjects=(course.other,)))
    assert doc.xpath("//o:SubjectData/@SubjectKey", namespaces=NS) == [course.other.code]
    assert schema.validate(doc), schema.error_log


def test_queries_do_not_grow_with_subjects(amended_and_signed):
    world = amended_and_signed.world

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            files_of(ODM, scope_for(world))
        return len(queries)

    one = count()
    for _ in range(4):
        consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    assert count() == one


def test_a_locked_trial_exported_twice_gives_identical_bytes(amended_and_signed):
    world = amended_and_signed.world
    lock_scope(trial=world.trial, level="lock", reason="Database lock for the final analysis", by=world.data_manager)
    first = export(amended_and_signed)
    assert export(amended_and_signed) == first
    # The creation time is the data's (the latest audited change in scope), never the clock's: here every
    # change was made in the test's one transaction, so it is that transaction's time.
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        (now,) = cursor.fetchone()
    assert parse(first).get("CreationDateTime") == text(now)


def test_a_scope_without_subjects_is_still_a_valid_document(world, schema):
    files = files_of(ODM, scope_for(world))
    doc = parse(files[f"odm/{world.trial.code}.xml"])
    assert schema.validate(doc), schema.error_log
    assert doc.xpath("//o:SubjectData", namespaces=NS) == []
    assert doc.get("CreationDateTime") == text(world.trial.created_at)  # no audited change: the trial's creation
