"""Invalidate signatures when signed data changes: statement-level PostgreSQL triggers on the subject table
and every subject-level table, so the admin, the API, management commands and raw SQL all count.

After each INSERT, UPDATE, DELETE (one trigger per event: PostgreSQL allows transition tables only on
single-event triggers) the still-valid signatures of the changed subjects whose scope is the casebook,
or the form whose record (or one of its parts) changed, get ``invalidated_at`` and a reason. An UPDATE
that changes nothing but ``updated_at`` invalidates nothing, like the content hash. A TRUNCATE (no
transition table) invalidates every casebook signature and every signature of that form type.

Before invalidating, the trigger takes a KEY SHARE lock on the changed subjects' rows; signing holds
the subject row FOR UPDATE, so a change and a signing of the same subject take turns (see
``signatures.services._write_signature``).

Migrations import no app code, so the tables are listed here; ``tests/signatures/test_triggers.py``
checks the list against the models (``signatures.content.SUBJECT_PATHS`` and ``FORM_PARTS``).
"""

from django.db import migrations

# table, (form app label, form model), column holding the form's id, column holding the subject's id
# ('' = look it up in the form's table), the form's table, the label named in the reason.
TABLES = [
    ("patients_subject", ("patients", "subject"), "id", "id", "patients_subject", "patients.Subject"),
    ("patients_consent", ("patients", "consent"), "id", "subject_id", "patients_consent", "patients.Consent"),
    ("patients_bodymeasurement", ("patients", "bodymeasurement"), "id", "subject_id", "patients_bodymeasurement",
     "patients.BodyMeasurement"),
    ("patients_eligibilityassessment", ("patients", "eligibilityassessment"), "id", "subject_id",
     "patients_eligibilityassessment", "patients.EligibilityAssessment"),
    ("patients_eligibilityanswer", ("patients", "eligibilityassessment"), "assessment_id", "",
     "patients_eligibilityassessment", "patients.EligibilityAnswer"),
    ("patients_subjecttransition", ("patients", "subjecttransition"), "id", "subject_id",
     "patients_subjecttransition", "patients.SubjectTransition"),
    ("patients_apheresiscollection", ("patients", "apheresiscollection"), "id", "subject_id",
     "patients_apheresiscollection", "patients.ApheresisCollection"),
    ("patients_productlot", ("patients", "productlot"), "id", "subject_id", "patients_productlot",
     "patients.ProductLot"),
    ("patients_bridgingtherapy", ("patients", "bridgingtherapy"), "id", "subject_id", "patients_bridgingtherapy",
     "patients.BridgingTherapy"),
    ("patients_lymphodepletioncourse", ("patients", "lymphodepletioncourse"), "id", "subject_id",
     "patients_lymphodepletioncourse", "patients.LymphodepletionCourse"),
    ("patients_lymphodepletiondose", ("patients", "lymphodepletioncourse"), "course_id", "",
     "patients_lymphodepletioncourse", "patients.LymphodepletionDose"),
    ("patients_infusion", ("patients", "infusion"), "id", "subject_id", "patients_infusion", "patients.Infusion"),
    ("patients_adverseevent", ("patients", "adverseevent"), "id", "subject_id", "patients_adverseevent",
     "patients.AdverseEvent"),
    ("patients_crsassessment", ("patients", "adverseevent"), "event_id", "", "patients_adverseevent",
     "patients.CrsAssessment"),
    ("patients_icansassessment", ("patients", "adverseevent"), "event_id", "", "patients_adverseevent",
     "patients.IcansAssessment"),
    ("patients_concomitantmedication", ("patients", "concomitantmedication"), "id", "subject_id",
     "patients_concomitantmedication", "patients.ConcomitantMedication"),
    ("patients_responseassessment", ("patients", "responseassessment"), "id", "subject_id",
     "patients_responseassessment", "patients.ResponseAssessment"),
    ("patients_followup", ("patients", "followup"), "id", "subject_id", "patients_followup", "patients.FollowUp"),
    ("assays_labdraw", ("assays", "labdraw"), "id", "subject_id", "assays_labdraw", "assays.LabDraw"),
    ("assays_result", ("assays", "labdraw"), "draw_id", "subject_id", "assays_labdraw", "assays.Result"),
]

FUNCTION = r"""
CREATE OR REPLACE FUNCTION signatures_invalidate() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    form_app     text := TG_ARGV[0];
    form_model   text := TG_ARGV[1];
    form_col     text := TG_ARGV[2];
    subject_col  text := TG_ARGV[3];
    form_table   text := TG_ARGV[4];
    what         text := TG_ARGV[5];
    verb         text := CASE TG_OP WHEN 'INSERT' THEN 'inserted' WHEN 'UPDATE' THEN 'updated'
                                    WHEN 'DELETE' THEN 'deleted' ELSE 'truncated' END;
    form_type    integer;
    rows_sql     text;
    changed_sql  text;
BEGIN
    SELECT id INTO form_type FROM django_content_type WHERE app_label = form_app AND model = form_model;
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE signatures_signature
           SET invalidated_at = clock_timestamp(), invalidated_reason = format('%s: all rows truncated', what)
         WHERE invalidated_at IS NULL AND (scope = 'casebook' OR record_type_id = form_type);
        RETURN NULL;
    END IF;

    -- The changed rows. An UPDATE counts a row only if a value other than updated_at changed.
    IF TG_OP = 'INSERT' THEN
        rows_sql := 'SELECT r.* FROM new_rows r';
    ELSIF TG_OP = 'DELETE' THEN
        rows_sql := 'SELECT r.* FROM old_rows r';
    ELSE
        rows_sql := 'SELECT r.* FROM new_rows r LEFT JOIN old_rows o ON o.id = r.id '
                 || 'WHERE o.id IS NULL OR (to_jsonb(r) - ''updated_at'') IS DISTINCT FROM (to_jsonb(o) - ''updated_at'') '
                 || 'UNION ALL SELECT r.* FROM old_rows r LEFT JOIN new_rows n ON n.id = r.id '
                 || 'WHERE n.id IS NULL OR (to_jsonb(r) - ''updated_at'') IS DISTINCT FROM (to_jsonb(n) - ''updated_at'')';
    END IF;
    -- (row id, form id, subject id) of each changed row.
    changed_sql := format('SELECT c.id AS row_id, c.%I AS form_id, %s AS subject_id FROM (%s) c', form_col,
        CASE WHEN subject_col <> '' THEN format('c.%I', subject_col)
             ELSE format('(SELECT f.subject_id FROM %I f WHERE f.id = c.%I)', form_table, form_col) END,
        rows_sql);

    -- Take turns with signing (which holds the subject row FOR UPDATE); the UPDATE below is a new
    -- statement, so it sees a signature committed while this waited.
    EXECUTE format('SELECT 1 FROM patients_subject s WHERE s.id IN (SELECT subject_id FROM (%s) x) '
                   'ORDER BY s.id FOR KEY SHARE OF s', changed_sql);

    EXECUTE format($q$
        WITH changed AS (%s),
        hit AS (
            SELECT s.id, count(DISTINCT c.row_id) AS n, min(c.row_id) AS first_row
              FROM signatures_signature s JOIN changed c ON c.subject_id = s.subject_id
             WHERE s.invalidated_at IS NULL
               AND (s.scope = 'casebook' OR (s.record_type_id = $1 AND s.record_id = c.form_id))
             GROUP BY s.id)
        UPDATE signatures_signature s
           SET invalidated_at = clock_timestamp(),
               invalidated_reason = CASE WHEN hit.n = 1 THEN format('%%s #%%s %%s', $2, hit.first_row, $3)
                                         ELSE format('%%s: %%s rows %%s', $2, hit.n, $3) END
          FROM hit
         WHERE s.id = hit.id$q$, changed_sql)
    USING form_type, what, verb;
    RETURN NULL;
END
$fn$;
"""


def _arguments(spec: tuple) -> str:
    _table, (app, model), form_col, subject_col, form_table, what = spec
    return ", ".join(f"'{value}'" for value in (app, model, form_col, subject_col, form_table, what))


def _create_triggers() -> str:
    statements = []
    for spec in TABLES:
        table, args = spec[0], _arguments(spec)
        for event, referencing in (("INSERT", "NEW TABLE AS new_rows"),
                                   ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                                   ("DELETE", "OLD TABLE AS old_rows")):
            statements.append(
                f"CREATE TRIGGER signatures_invalidate_{event.lower()} AFTER {event} ON {table} "
                f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION signatures_invalidate({args});")
        statements.append(f"CREATE TRIGGER signatures_invalidate_truncate AFTER TRUNCATE ON {table} "
                          f"FOR EACH STATEMENT EXECUTE FUNCTION signatures_invalidate({args});")
    return "\n".join(statements)


def _drop_triggers() -> str:
    return "\n".join(f"DROP TRIGGER IF EXISTS signatures_invalidate_{event} ON {spec[0]};"
                     for spec in TABLES for event in ("insert", "update", "delete", "truncate"))


class Migration(migrations.Migration):

    dependencies = [
        ("signatures", "0001_initial"),
        ("patients", "0004_event_tables_append_only"),
        ("assays", "0004_event_tables_append_only"),
    ]

    operations = [
        migrations.RunSQL(sql=FUNCTION, reverse_sql="DROP FUNCTION IF EXISTS signatures_invalidate();"),
        migrations.RunSQL(sql=_create_triggers(), reverse_sql=_drop_triggers()),
    ]
