"""CDISC ODM 1.3.2: one ``odm/<trial code>.xml``, a Snapshot of the case report forms of ``exports.crf``.

* Study: GlobalVariables; BasicDefinitions (the forms' UCUM units); MetaDataVersion ``MDV.CRF`` with the
  Protocol, a StudyEventDef per protocol visit (``SE.<visit code>``, scheduled, repeating: one occurrence per
  infusion course, ``StudyEventRepeatKey`` = the course the record follows) holding the visit-bound forms
  (responses, lab draws, results), and ``SE.COMMON`` (type Common) holding every form; a FormDef
  (``F.<code>``) and an ItemGroupDef (``IG.<code>``, repeating: one ItemGroupData per record) per form;
  an ItemDef per column (``IT.<code>.<NAME>``: the timeline columns and the items, not the keys); code lists.
* AdminData: the users that the audit records and signatures name (``U.<user id>``; ``U.SYSTEM`` for writes
  with no recorded user), the sites in scope as Locations (``LOC.<site code>``) and a SignatureDef per
  signature meaning (``SD.<MEANING>``).
* ClinicalData: a SubjectData per subject (SubjectKey = the subject code, generated and never changed;
  SiteRef), its latest valid casebook signature; a record goes to its protocol visit's event when it has
  one, otherwise to ``SE.COMMON``; ``ItemGroupRepeatKey`` = the record id. Empty values are left out.
  Each ItemGroupData carries the AuditRecord of the record's creation (who, where, when) and the latest valid
  signature of that form; each ItemData changed after creation carries the AuditRecord of its latest change
  (with the reason for change). Audit times are the database's (UTC).

Streaming: the document is written with ``lxml.etree.xmlfile``, subject by subject; every form and every
audited table is read through one server-side cursor ordered by subject code, and the cursors are walked
side by side, so memory holds one subject's records and the number of queries does not depend on the
number of subjects. Signatures (a few per subject) are read in one query up front.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db import connection
from lxml import etree
from pghistory.models import Context

from audit.tables import table_for
from exports.crf import CHUNK_SIZE, KEY_ITEMS, Form, Item, forms, text
from exports.formats import ExportFile, register
from patients.models import Subject
from signatures.models import Meaning, Signature
from trials.models import Visit

if TYPE_CHECKING:
    from exports.scope import ExportScope

NS = "http://www.cdisc.org/ns/odm/v1.3"
MDV = "MDV.CRF"
COMMON = "SE.COMMON"
SYSTEM_USER = "U.SYSTEM"
FLUSH_BYTES = 256 * 1024
GROUPS_PER_FLUSH = 500
LEGAL_REASON = "The signer accepts responsibility for the data signed, under 21 CFR Part 11."


def _t(tag: str) -> str:
    return f"{{{NS}}}{tag}"


ITEM_DATA = _t("ItemData")


def _el(parent: etree._Element | None, tag: str, text_value: str | None = None, **attrib: str) -> etree._Element:
    element = etree.Element(_t(tag), attrib, nsmap={None: NS}) if parent is None \
        else etree.SubElement(parent, _t(tag), attrib)
    if text_value is not None:
        element.text = text_value
    return element


def _translated(parent: etree._Element, tag: str, value: str) -> etree._Element:
    element = _el(parent, tag)
    _el(element, "TranslatedText", value, **{"{http://www.w3.org/XML/1998/namespace}lang": "en"})
    return element


def _stamp(moment: dt.datetime) -> str:
    return text(moment)


def item_oid(form: Form, item: Item) -> str:
    return f"IT.{form.code}.{item.name.upper()}"


def data_items(form: Form) -> tuple[Item, ...]:
    return tuple(i for i in form.columns if all(i is not key for key in KEY_ITEMS))


# --- metadata -------------------------------------------------------------------------------------------

def _study(scope: ExportScope, visits: list[Visit]) -> etree._Element:
    trial = scope.trial
    study = _el(None, "Study", OID=f"ST.{trial.code}")
    variables = _el(study, "GlobalVariables")
    _el(variables, "StudyName", trial.code)
    _el(variables, "StudyDescription", trial.title)
    _el(variables, "ProtocolName", trial.code)
    units = sorted({i.unit for f in forms() for i in f.items if i.unit})
    basic = _el(study, "BasicDefinitions")
    for unit in units:
        _translated(_el(basic, "MeasurementUnit", OID=f"MU.{unit}", Name=unit), "Symbol", unit)
    mdv = _el(study, "MetaDataVersion", OID=MDV, Name=f"{trial.code} case report forms")
    events = [(COMMON, "Common forms (not tied to a protocol visit)", "Common", "No", forms())]
    events += [(f"SE.{v.code}", f"{v.name} (day {v.target_day})", "Scheduled", "Yes",
                tuple(f for f in forms() if f.visit_item)) for v in visits]
    protocol = _el(mdv, "Protocol")
    for number, (oid, *_rest) in enumerate(events, start=1):
        _el(protocol, "StudyEventRef", StudyEventOID=oid, OrderNumber=str(number), Mandatory="No")
    for oid, name, kind, repeating, event_forms in events:
        event = _el(mdv, "StudyEventDef", OID=oid, Name=name, Repeating=repeating, Type=kind)
        for number, form in enumerate(event_forms, start=1):
            _el(event, "FormRef", FormOID=f"F.{form.code}", OrderNumber=str(number), Mandatory="No")
    for form in forms():
        form_def = _el(mdv, "FormDef", OID=f"F.{form.code}", Name=form.label, Repeating="No")
        _el(form_def, "ItemGroupRef", ItemGroupOID=f"IG.{form.code}", Mandatory="No")
    for form in forms():
        group = _el(mdv, "ItemGroupDef", OID=f"IG.{form.code}", Name=form.name, Repeating="Yes")
        for number, item in enumerate(data_items(form), start=1):
            _el(group, "ItemRef", ItemOID=item_oid(form, item), OrderNumber=str(number), Mandatory="No")
    for form in forms():
        for item in data_items(form):
            _item_def(mdv, form, item)
    for form in forms():
        for item in data_items(form):
            if item.codelist:
                codelist = _el(mdv, "CodeList", OID=f"CL.{form.code}.{item.name.upper()}",
                               Name=f"{form.name}.{item.name}", DataType="text")
                for code, decode in item.codelist:
                    _translated(_el(codelist, "CodeListItem", CodedValue=code), "Decode", decode)
    return study


def _item_def(mdv: etree._Element, form: Form, item: Item) -> None:
    attrib = {"OID": item_oid(form, item), "Name": item.name, "DataType": "text" if item.multiple else item.type}
    if item.column == "":
        attrib["Origin"] = "Derived" if item.name in {"study_day", "cdisc_study_day", "course_number",
                                                       "course_day"} else "Related record"
    item_def = _el(mdv, "ItemDef", **attrib)
    _translated(item_def, "Question", item.label)
    if item.unit:
        _el(item_def, "MeasurementUnitRef", MeasurementUnitOID=f"MU.{item.unit}")
    if item.codelist:
        _el(item_def, "CodeListRef", CodeListOID=f"CL.{form.code}.{item.name.upper()}")


def _admin(scope: ExportScope, users: list[tuple[str, str, str, str]]) -> etree._Element:
    admin = _el(None, "AdminData", StudyOID=f"ST.{scope.trial.code}")
    system = _el(admin, "User", OID=SYSTEM_USER)
    _el(system, "FullName", "System (no user recorded)")
    for oid, login, first, last in users:
        user = _el(admin, "User", OID=oid)
        _el(user, "LoginName", login)
        full = " ".join(p for p in (first, last) if p)
        if full:
            _el(user, "FullName", full)
    effective = scope.trial.created_at.date().isoformat()
    for site in scope.sites():
        location = _el(admin, "Location", OID=f"LOC.{site.code}", Name=site.name)
        _el(location, "MetaDataVersionRef", StudyOID=f"ST.{scope.trial.code}", MetaDataVersionOID=MDV,
            EffectiveDate=effective)
    for meaning in Meaning:
        definition = _el(admin, "SignatureDef", OID=f"SD.{meaning.value.upper()}", Methodology="Electronic")
        _el(definition, "Meaning", str(meaning.label))
        _el(definition, "LegalReason", LEGAL_REASON)
    return admin


# --- reads ----------------------------------------------------------------------------------------------

def _subject_ids_sql(scope: ExportScope) -> tuple[str, tuple[Any, ...]]:
    sql, params = scope.subjects().order_by().values("pk").query.sql_with_params()
    return sql, tuple(params)


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _event_from(form_label: str, scope: ExportScope) -> tuple[str, tuple[Any, ...]] | None:
    """FROM/WHERE of a form's audit events in scope (joined to the subject ``sj`` and the context ``c``)."""
    table = table_for(form_label)
    if table is None:
        return None
    subjects, params = _subject_ids_sql(scope)
    context = "e.pgh_context_id" if table.has_context else "NULL::uuid"
    sql = (f"FROM {_q(table.event_table)} e {table.joins} "
           f"JOIN {_q(Subject._meta.db_table)} sj ON sj.id = ({table.subject_sql}) "
           f"LEFT JOIN {_q(Context._meta.db_table)} c ON c.id = {context} "
           f"WHERE sj.id IN ({subjects})")
    return sql, params


def _audit_sources(scope: ExportScope) -> list[tuple[str, tuple[Any, ...]]]:
    labels = [f.model_label for f in forms()] + ["signatures.signature"]
    return [source for label in labels if (source := _event_from(label, scope)) is not None]


def _latest_change(scope: ExportScope) -> dt.datetime:
    """The time of the latest audited change to the data in scope: the file's creation time (see files())."""
    sources = _audit_sources(scope)
    sql = " UNION ALL ".join(f"SELECT max(e.pgh_created_at) AS at {s}" for s, _ in sources)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT max(at) FROM ({sql}) latest", [p for _, ps in sources for p in ps])
        latest = cursor.fetchone()[0]
    return latest or scope.trial.created_at


def _users(scope: ExportScope) -> list[tuple[str, str, str, str]]:
    """(OID, login, first name, last name) of everyone an audit record or a signature in scope names."""
    sources = _audit_sources(scope)
    named = " UNION ".join(f"SELECT c.metadata->>'user' AS ref {s}" for s, _ in sources)
    subjects, params = _subject_ids_sql(scope)
    signers = f"SELECT s.signer_id::text FROM {_q(Signature._meta.db_table)} s WHERE s.subject_id IN ({subjects})"
    sql = (f"SELECT r.ref, u.username, u.first_name, u.last_name FROM ({named} UNION {signers}) r "
           f"LEFT JOIN {_q(get_user_model()._meta.db_table)} u ON u.id::text = r.ref "
           f"WHERE r.ref IS NOT NULL ORDER BY r.ref")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*(p for _, ps in sources for p in ps), *params])
        return [(f"U.{ref}", username or f"#{ref}", first or "", last or "")
                for ref, username, first, last in cursor.fetchall()]


class AuditMeta(NamedTuple):
    at: dt.datetime
    user: str  # a User OID
    reason: str
    source: str


@dataclass
class RecordAudit:
    """What a record's audit trail says in a snapshot: its creation, and each column's latest change."""

    created: AuditMeta | None = None
    changes: dict[str, AuditMeta] = field(default_factory=dict)


def _audit_events(form: Form, scope: ExportScope) -> Iterator[tuple[str, int, AuditMeta, dict[str, Any]]]:
    """(subject code, record id, event, stored row) of the form's table, ordered by subject, record and time."""
    source = _event_from(form.model_label, scope)
    if source is None:
        return
    sql = (f"SELECT sj.code, e.pgh_obj_id, e.pgh_created_at, c.metadata->>'user', c.metadata->>'reason', "
           f"c.metadata->>'source', row_to_json(e)::text {source[0]} ORDER BY sj.code, e.pgh_obj_id, e.pgh_id")
    server_side = not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    with connection.chunked_cursor() if server_side else connection.cursor() as cursor:
        cursor.execute(sql, source[1])
        while rows := cursor.fetchmany(CHUNK_SIZE):
            for code, obj_id, at, user, reason, origin, data in rows:
                meta = AuditMeta(at, f"U.{user}" if user else SYSTEM_USER, reason or "", origin or "")
                yield code, int(obj_id), meta, json.loads(data)


def _record_audits(form: Form, scope: ExportScope) -> Iterator[tuple[str, int, RecordAudit]]:
    """(subject code, record id, audit) per record, holding one record's stored rows at a time."""
    current: tuple[str, int] | None = None
    audit, previous = RecordAudit(), None
    for code, record, meta, data in _audit_events(form, scope):
        if (code, record) != current:
            if current is not None:
                yield *current, audit
            current, audit, previous = (code, record), RecordAudit(created=meta), None
        elif previous is not None:
            for column, value in data.items():
                if not column.startswith("pgh_") and previous.get(column) != value:
                    audit.changes[column] = meta
        previous = data
    if current is not None:
        yield *current, audit


class _Stream:
    """Items of an iterator ordered by subject code, taken one subject at a time."""

    def __init__(self, rows: Iterator[Any], key: Callable[[Any], str]) -> None:
        self.rows, self.key = rows, key
        self.head: Any = next(rows, None)

    def take(self, code: str) -> list[Any]:
        taken = []
        while self.head is not None and self.key(self.head) == code:
            taken.append(self.head)
            self.head = next(self.rows, None)
        return taken


@dataclass
class Signed:
    casebook: Signature | None = None
    forms: dict[tuple[str, int], Signature] = field(default_factory=dict)


def _signatures(scope: ExportScope) -> dict[int, Signed]:
    """The latest valid signature of each subject's casebook and of each signed form (one query)."""
    signed: dict[int, Signed] = defaultdict(Signed)
    rows = (Signature.objects.filter(subject__in=scope.subjects().order_by().values("pk"), invalidated_at=None)
            .select_related("record_type").order_by("signed_at", "pk"))
    for signature in rows:
        entry = signed[signature.subject_id]
        record_type = signature.record_type
        if record_type is None:
            entry.casebook = signature
        else:
            entry.forms[(f"{record_type.app_label}.{record_type.model}", signature.record_id or 0)] = signature
    return signed


# --- clinical data -------------------------------------------------------------------------------------

@dataclass
class _Subject:
    """One subject's part of the document: its records per form and their audit."""

    code: str
    location: str
    signed: Signed
    rows: dict[Form, list[dict[str, Any]]]
    audits: dict[Form, dict[int, RecordAudit]]


def _audit_record(parent: etree._Element, meta: AuditMeta, location: str) -> None:
    record = _el(parent, "AuditRecord")
    _el(record, "UserRef", UserOID=meta.user)
    _el(record, "LocationRef", LocationOID=location)
    _el(record, "DateTimeStamp", _stamp(meta.at))
    if meta.reason:
        _el(record, "ReasonForChange", meta.reason)
    if meta.source:
        _el(record, "SourceID", meta.source)


def _signature(parent: etree._Element, signature: Signature, location: str) -> None:
    element = _el(parent, "Signature")
    _el(element, "UserRef", UserOID=f"U.{signature.signer_id}")
    _el(element, "LocationRef", LocationOID=location)
    _el(element, "SignatureRef", SignatureOID=f"SD.{signature.meaning.upper()}")
    _el(element, "DateTimeStamp", _stamp(signature.signed_at))


def _item_group(form: Form, row: dict[str, Any], audit: RecordAudit | None, subject: _Subject) -> etree._Element:
    group = _el(None, "ItemGroupData", ItemGroupOID=f"IG.{form.code}", ItemGroupRepeatKey=str(row["record"]))
    if audit is not None and audit.created is not None:
        _audit_record(group, audit.created, subject.location)
    signature = subject.signed.forms.get((form.model_label, row["record"]))
    if signature is not None:
        _signature(group, signature, subject.location)
    changes = audit.changes if audit is not None else {}
    for item, oid in _data_items(form):
        value = text(row[item.name])
        if value == "":
            continue
        data = etree.SubElement(group, ITEM_DATA, {"ItemOID": oid, "Value": value})
        if item.column in changes:
            _audit_record(data, changes[item.column], subject.location)
    return group


@cache
def _data_items(form: Form) -> tuple[tuple[Item, str], ...]:
    return tuple((item, item_oid(form, item)) for item in data_items(form))


def _event_key(form: Form, row: dict[str, Any], visits: list[str]) -> tuple[str, str | None]:
    visit = row.get(form.visit_item) if form.visit_item else None
    if visit in visits:
        return f"SE.{visit}", str(row.get("course_number") or 1)
    return COMMON, None


def _write_subject(xf: Any, subject: _Subject, visits: list[str]) -> Iterator[None]:
    """Write one SubjectData, ItemGroupData by ItemGroupData; pauses after each form (and every
    ``GROUPS_PER_FLUSH`` records of a long one) for the caller to flush."""
    placed: dict[tuple[str, str | None], dict[Form, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for form, form_rows in subject.rows.items():
        for row in form_rows:
            placed[_event_key(form, row, visits)][form].append(row)
    order = {COMMON: -1, **{f"SE.{v}": n for n, v in enumerate(visits)}}
    with xf.element(_t("SubjectData"), {"SubjectKey": subject.code}):
        if subject.signed.casebook is not None:
            element = _el(None, "SubjectData")
            _signature(element, subject.signed.casebook, subject.location)
            xf.write(element[0])
        xf.write(_el(None, "SiteRef", LocationOID=subject.location))
        for (oid, repeat), by_form in sorted(placed.items(), key=lambda kv: (order[kv[0][0]], int(kv[0][1] or 0))):
            attrib = {"StudyEventOID": oid} | ({"StudyEventRepeatKey": repeat} if repeat else {})
            with xf.element(_t("StudyEventData"), attrib):
                for form, form_rows in by_form.items():
                    with xf.element(_t("FormData"), {"FormOID": f"F.{form.code}"}):
                        for number, row in enumerate(form_rows, start=1):
                            xf.write(_item_group(form, row, subject.audits[form].get(row["record"]), subject))
                            if number % GROUPS_PER_FLUSH == 0:
                                yield
                    yield


def _subjects(scope: ExportScope) -> Iterator[_Subject]:
    signed = _signatures(scope)
    row_streams = {form: _Stream(form.rows(scope), lambda r: r["subject"]) for form in forms()}
    audit_streams = {form: _Stream(_record_audits(form, scope), lambda r: r[0]) for form in forms()}
    for subject in scope.subjects().select_related("site").iterator(chunk_size=500):
        yield _Subject(
            code=subject.code, location=f"LOC.{subject.site.code}", signed=signed.get(subject.pk, Signed()),
            rows={form: stream.take(subject.code) for form, stream in row_streams.items()},
            audits={form: {record: audit for _code, record, audit in stream.take(subject.code)}
                    for form, stream in audit_streams.items()})


# --- the document --------------------------------------------------------------------------------------

class _Sink:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))
        self.size += len(data)

    def take(self) -> bytes:
        data, self.parts, self.size = b"".join(self.parts), [], 0
        return data


def _file_oid(scope: ExportScope, created: str) -> str:
    """Names the trial, the sites, the selected subjects (a digest of their ids) and the data's time."""
    sites = "-".join(site.code for site in scope.sites())
    selected = "" if scope.subject_ids is None else "." + hashlib.sha256(
        ",".join(str(pk) for pk in sorted(scope.subject_ids)).encode()).hexdigest()[:12]
    return f"ODM.{scope.trial.code}.{sites}{selected}.{created}"


def document_chunks(scope: ExportScope) -> Iterator[bytes]:
    # CreationDateTime (and the FileOID) come from the data, not the clock: the time of the latest audited
    # change to the records in scope (or the trial's creation if there is none). A locked trial exported twice
    # therefore gives the same bytes, and a file's stamp still moves whenever its data change.
    created = _stamp(_latest_change(scope))
    visits = list(Visit.objects.filter(trial=scope.trial).order_by("target_day", "code"))
    visit_codes = [v.code for v in visits]
    sink = _Sink()
    attrib = {"FileType": "Snapshot", "FileOID": _file_oid(scope, created), "CreationDateTime": created,
              "ODMVersion": "1.3.2", "Granularity": "All", "Originator": "CAR-T trial data backend"}
    with etree.xmlfile(sink, encoding="UTF-8") as xf:
        xf.write_declaration()
        with xf.element(_t("ODM"), attrib, nsmap={None: NS}):
            xf.write(_study(scope, visits))
            xf.write(_admin(scope, _users(scope)))
            with xf.element(_t("ClinicalData"), {"StudyOID": f"ST.{scope.trial.code}", "MetaDataVersionOID": MDV}):
                for subject in _subjects(scope):
                    for _form in _write_subject(xf, subject, visit_codes):
                        xf.flush()
                        if sink.size >= FLUSH_BYTES:
                            yield sink.take()
    yield sink.take()


class OdmFormat:
    code = "odm"
    label = "CDISC ODM 1.3.2 XML (metadata, clinical data, audit records and signatures)"

    def files(self, scope: ExportScope) -> list[ExportFile]:
        return [ExportFile(f"odm/{scope.trial.code}.xml", partial(document_chunks, scope), "application/xml")]


ODM = register(OdmFormat())
