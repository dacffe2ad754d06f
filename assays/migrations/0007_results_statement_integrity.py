"""Results: referential integrity checked once per statement instead of once per row.

A result references its draw (draw_id, subject_id, site_id -> the draw's id, subject_id, site_id), its
analyte and the user who recorded it. PostgreSQL checks a foreign key with one trigger call and one
``SELECT ... FOR KEY SHARE`` per inserted row and key: most of the cost of writing a result (README,
"Benchmarks"). Here the same guarantees come from triggers that work per statement:

- ``assays_result_check_references``: AFTER INSERT and AFTER UPDATE on assays_result, FOR EACH STATEMENT,
  over the statement's rows (transition table ``new_rows``). It locks each distinct referenced draw,
  analyte and user ``FOR KEY SHARE`` (what a foreign key's check takes: the referenced row can then be
  neither deleted nor re-keyed until this transaction ends) and raises foreign_key_violation (23503)
  naming the rule when a key has no row. A 1,000-row batch references some 25 draws, a few analytes and
  one user: 30 index probes instead of 3,000 trigger calls. Under READ COMMITTED a row deleted by a
  transaction that committed while this one waited for its lock is skipped by the lock, so the key is
  reported missing, as a foreign key's check reports it.
- ``assays_labdraw_check_referrers`` / ``assays_analyte_check_referrers`` / ``assays_user_check_referrers``:
  AFTER DELETE and AFTER UPDATE of the key columns (when they change) on the referenced tables; they
  raise 23503 while a result still references the old key (a foreign key's NO ACTION). A result that
  was being inserted concurrently holds its lock on the referenced row: the delete waits for it, and
  its check (a new snapshot under READ COMMITTED) sees the committed result. Deletes of users are
  checked per statement over the deleted rows (``old_rows``): results have no index on recorded_by, so
  one scan of the results per statement, not per user. Under REPEATABLE READ or SERIALIZABLE the
  check's snapshot could miss a result committed after it began by a READ COMMITTED writer (a foreign
  key checks with a newer snapshot there, which SQL cannot take), so such a delete or re-key is refused
  at those levels (the application runs READ COMMITTED).
- ``assays_result_check_truncate``: TRUNCATE of a referenced table fails while results exist (unless
  the results are truncated in the same statement), as with a foreign key.

The existing rows are validated once, then the three foreign keys (the composite one of 0005, analyte,
recorded_by) are dropped. The model keeps its ForeignKey fields (db_constraint=False): the ORM, the
admin, the API and Django's on_delete=PROTECT do not change.
"""

from django.conf import settings
from django.db import migrations, models
import django.db.models.deletion

DRAW_RULE = "assays_result_draw_subject_site_fk"
ANALYTE_RULE = "assays_result_analyte_id_fk"
USER_RULE = "assays_result_recorded_by_id_fk"


def _missing(rule: str, keys: str, table: str, match: str) -> str:
    """A plpgsql block: the first distinct key of new_rows without a row in ``table`` (each present one
    is locked FOR KEY SHARE) raises 23503 naming ``rule``."""
    columns = [key.strip() for key in keys.split(",")]
    shown = ", ".join("%s" for _ in columns)
    return f"""
    SELECT {keys} INTO bad FROM (SELECT DISTINCT {keys} FROM new_rows
                                 WHERE {' AND '.join(f'{c} IS NOT NULL' for c in columns)}) k
      LEFT JOIN LATERAL (SELECT true AS present FROM {table} p WHERE {match} FOR KEY SHARE) p ON true
     WHERE p.present IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME, CONSTRAINT = '{rule}',
            MESSAGE = format('insert or update on table "%s" violates foreign key constraint "{rule}"', TG_TABLE_NAME),
            DETAIL = format('Key ({keys})=({shown}) is not present in table "{table}".',
                            {', '.join(f'bad.{c}' for c in columns)});
    END IF;"""


FORWARD = f"""
CREATE FUNCTION assays_result_check_references() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    {_missing(DRAW_RULE, "draw_id, subject_id, site_id", "assays_labdraw",
              "p.id = k.draw_id AND p.subject_id = k.subject_id AND p.site_id = k.site_id")}
    {_missing(ANALYTE_RULE, "analyte_id", "assays_analyte", "p.id = k.analyte_id")}
    {_missing(USER_RULE, "recorded_by_id", "auth_user", "p.id = k.recorded_by_id")}
    RETURN NULL;
END $$;

CREATE TRIGGER assays_result_references_insert AFTER INSERT ON assays_result
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION assays_result_check_references();
CREATE TRIGGER assays_result_references_update AFTER UPDATE ON assays_result
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION assays_result_check_references();
"""


def _still_referenced(rule: str, table: str, keys: str, where: str, shown: str, values: str) -> str:
    return f"""
    IF current_setting('transaction_isolation') IN ('repeatable read', 'serializable') THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = 'deleting or re-keying a row of "{table}" that results may reference needs READ COMMITTED '
                      'isolation';
    END IF;
    IF {where} THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', TABLE = '{table}', CONSTRAINT = '{rule}',
            MESSAGE = 'update or delete on table "{table}" violates foreign key constraint "{rule}" on table "assays_result"',
            DETAIL = format('Key ({keys})=({shown}) is still referenced from table "assays_result".', {values});
    END IF;"""


REVERSE = f"""
CREATE FUNCTION assays_labdraw_check_referrers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_still_referenced(DRAW_RULE, "assays_labdraw", "id, subject_id, site_id",
                       "EXISTS (SELECT 1 FROM assays_result r WHERE r.draw_id = OLD.id AND r.subject_id = OLD.subject_id "
                       "AND r.site_id = OLD.site_id)", "%s, %s, %s", "OLD.id, OLD.subject_id, OLD.site_id")}
    RETURN NULL;
END $$;
CREATE TRIGGER assays_labdraw_referrers_delete AFTER DELETE ON assays_labdraw
    FOR EACH ROW EXECUTE FUNCTION assays_labdraw_check_referrers();
CREATE TRIGGER assays_labdraw_referrers_update AFTER UPDATE OF id, subject_id, site_id ON assays_labdraw
    FOR EACH ROW WHEN ((OLD.id, OLD.subject_id, OLD.site_id) IS DISTINCT FROM (NEW.id, NEW.subject_id, NEW.site_id))
    EXECUTE FUNCTION assays_labdraw_check_referrers();

CREATE FUNCTION assays_analyte_check_referrers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_still_referenced(ANALYTE_RULE, "assays_analyte", "id",
                       "EXISTS (SELECT 1 FROM assays_result r WHERE r.analyte_id = OLD.id)", "%s", "OLD.id")}
    RETURN NULL;
END $$;
CREATE TRIGGER assays_analyte_referrers_delete AFTER DELETE ON assays_analyte
    FOR EACH ROW EXECUTE FUNCTION assays_analyte_check_referrers();
CREATE TRIGGER assays_analyte_referrers_update AFTER UPDATE OF id ON assays_analyte
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION assays_analyte_check_referrers();

-- Per statement for deletes (one scan of the results, which have no index on recorded_by_id, whatever
-- the number of users deleted); per row for the (never expected) change of a user's id.
CREATE FUNCTION assays_user_check_referrers() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad bigint;
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        bad := OLD.id;
    ELSE
        SELECT o.id INTO bad FROM old_rows o LIMIT 1;
    END IF;
    IF bad IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_LEVEL = 'ROW' THEN
        {_still_referenced(USER_RULE, "auth_user", "id",
                           "EXISTS (SELECT 1 FROM assays_result r WHERE r.recorded_by_id = bad)", "%s", "bad")}
    ELSE
        SELECT r.recorded_by_id INTO bad FROM assays_result r WHERE r.recorded_by_id IN (SELECT o.id FROM old_rows o)
         LIMIT 1;
        {_still_referenced(USER_RULE, "auth_user", "id", "FOUND", "%s", "bad")}
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER assays_user_referrers_delete AFTER DELETE ON auth_user
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION assays_user_check_referrers();
CREATE TRIGGER assays_user_referrers_update AFTER UPDATE OF id ON auth_user
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION assays_user_check_referrers();

-- TRUNCATE of a referenced table: refused while results exist (the AFTER trigger runs once every table
-- of the statement is truncated, so truncating the results with it passes, as with a foreign key).
CREATE FUNCTION assays_result_check_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM assays_result) THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = format('cannot truncate table "%s": results reference it', TG_TABLE_NAME),
            HINT = 'Truncate table "assays_result" at the same time.';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER assays_labdraw_referrers_truncate AFTER TRUNCATE ON assays_labdraw
    FOR EACH STATEMENT EXECUTE FUNCTION assays_result_check_truncate();
CREATE TRIGGER assays_analyte_referrers_truncate AFTER TRUNCATE ON assays_analyte
    FOR EACH STATEMENT EXECUTE FUNCTION assays_result_check_truncate();
CREATE TRIGGER assays_user_referrers_truncate AFTER TRUNCATE ON auth_user
    FOR EACH STATEMENT EXECUTE FUNCTION assays_result_check_truncate();
"""

DROP = """
DROP TRIGGER assays_result_references_insert ON assays_result;
DROP TRIGGER assays_result_references_update ON assays_result;
DROP FUNCTION assays_result_check_references();
DROP TRIGGER assays_labdraw_referrers_delete ON assays_labdraw;
DROP TRIGGER assays_labdraw_referrers_update ON assays_labdraw;
DROP TRIGGER assays_labdraw_referrers_truncate ON assays_labdraw;
DROP FUNCTION assays_labdraw_check_referrers();
DROP TRIGGER assays_analyte_referrers_delete ON assays_analyte;
DROP TRIGGER assays_analyte_referrers_update ON assays_analyte;
DROP TRIGGER assays_analyte_referrers_truncate ON assays_analyte;
DROP FUNCTION assays_analyte_check_referrers();
DROP TRIGGER assays_user_referrers_delete ON auth_user;
DROP TRIGGER assays_user_referrers_update ON auth_user;
DROP TRIGGER assays_user_referrers_truncate ON auth_user;
DROP FUNCTION assays_user_check_referrers();
DROP FUNCTION assays_result_check_truncate();
"""

# Every stored result checked once against its draw, analyte and user before the foreign keys go.
VALIDATE = f"""
DO $$
DECLARE
    bad record;
BEGIN
    SELECT r.id INTO bad FROM assays_result r LEFT JOIN assays_labdraw d
        ON d.id = r.draw_id AND d.subject_id = r.subject_id AND d.site_id = r.site_id WHERE d.id IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', CONSTRAINT = '{DRAW_RULE}',
            MESSAGE = format('result %s has no draw with its (draw_id, subject_id, site_id)', bad.id);
    END IF;
    SELECT r.id INTO bad FROM assays_result r LEFT JOIN assays_analyte a ON a.id = r.analyte_id
     WHERE a.id IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', CONSTRAINT = '{ANALYTE_RULE}',
            MESSAGE = format('result %s has no analyte', bad.id);
    END IF;
    SELECT r.id INTO bad FROM assays_result r LEFT JOIN auth_user u ON u.id = r.recorded_by_id
     WHERE u.id IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', CONSTRAINT = '{USER_RULE}',
            MESSAGE = format('result %s has no recording user', bad.id);
    END IF;
END $$;
"""

COMPOSITE_FK = """
ALTER TABLE assays_result ADD CONSTRAINT assays_result_draw_subject_site_fk
  FOREIGN KEY (draw_id, subject_id, site_id) REFERENCES assays_labdraw (id, subject_id, site_id)
  DEFERRABLE INITIALLY DEFERRED;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('assays', '0006_scale_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunSQL(VALIDATE, migrations.RunSQL.noop),
        migrations.RunSQL(FORWARD + REVERSE, DROP),
        migrations.RunSQL("ALTER TABLE assays_result DROP CONSTRAINT assays_result_draw_subject_site_fk",
                          COMPOSITE_FK),
        migrations.AlterField(
            model_name='result',
            name='analyte',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='assays.analyte'),
        ),
        migrations.AlterField(
            model_name='result',
            name='recorded_by',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
    ]
