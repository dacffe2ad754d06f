"""Signature invalidation: the changed subjects found once, and nothing more done where none has a valid
signature (the usual case while data are entered: signing comes at the end).

``signatures_invalidate`` (0002) planned and ran two dynamic statements on every write, each reading the
statement's transition table: the lock of the changed subjects, then the UPDATE of their signatures. On a
batch of 1,000 lab results that was about 0.7 ms, a tenth of what PostgreSQL spends on the batch. Now one
dynamic statement gathers the changed rows' subjects; the lock and the test for a still-valid signature of any
of them are static (planned once per connection); the UPDATE runs, as before, only when such a signature
exists. The order is that of 0002: the KEY SHARE lock first (signing holds the subject row FOR UPDATE, so a
change and a signing take turns), then the test, a new statement that sees a signature committed while the
lock waited.
"""

from importlib import import_module

from django.db import migrations

PREVIOUS = import_module("signatures.migrations.0002_invalidation_triggers").FUNCTION

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
    subjects     bigint[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        SELECT id INTO form_type FROM django_content_type WHERE app_label = form_app AND model = form_model;
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

    EXECUTE format('SELECT array_agg(x.subject_id) FROM (SELECT DISTINCT subject_id FROM (%s) c) x', changed_sql)
       INTO subjects;
    IF subjects IS NULL THEN
        RETURN NULL;  -- no row changed
    END IF;

    -- Take turns with signing (which holds the subject row FOR UPDATE); what follows is a new statement,
    -- so it sees a signature committed while this waited.
    PERFORM FROM patients_subject s WHERE s.id = ANY(subjects) ORDER BY s.id FOR KEY SHARE OF s;
    IF NOT EXISTS (SELECT FROM signatures_signature s WHERE s.subject_id = ANY(subjects)
                                                        AND s.invalidated_at IS NULL) THEN
        RETURN NULL;  -- no valid signature of these subjects: nothing to invalidate
    END IF;

    SELECT id INTO form_type FROM django_content_type WHERE app_label = form_app AND model = form_model;
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


class Migration(migrations.Migration):

    dependencies = [("signatures", "0004_sae_report_triggers")]

    operations = [migrations.RunSQL(sql=FUNCTION, reverse_sql=PREVIOUS)]
