"""The audit context rows (who, request, reason) are append-only in substance.

pghistory upserts a request's context row as the request adds metadata, so the table cannot refuse
every UPDATE. The guard allows what that needs and nothing else: a row may change freely within the
transaction that created it; afterwards only by adding keys or filling in empty ones (e.g. the user,
known only once the API has authenticated the request), never changing or removing a value, and
only for a day. DELETE is refused.
"""

from django.db import migrations

GUARD = """
CREATE OR REPLACE FUNCTION audit_context_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit context rows are never deleted' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.xmin = pg_current_xact_id()::xid THEN
        RETURN NEW;
    END IF;
    IF NEW.id <> OLD.id OR NEW.created_at <> OLD.created_at OR NOT (NEW.metadata @> jsonb_strip_nulls(OLD.metadata))
            OR OLD.created_at < now() - interval '1 day' THEN
        RAISE EXCEPTION 'audit context % cannot be rewritten', OLD.id USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_context_guard BEFORE UPDATE OR DELETE ON pghistory_context
    FOR EACH ROW EXECUTE FUNCTION audit_context_guard();
"""

UNGUARD = """
DROP TRIGGER IF EXISTS audit_context_guard ON pghistory_context;
DROP FUNCTION IF EXISTS audit_context_guard();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_audit_exports"),
    ]

    operations = [migrations.RunSQL(GUARD, UNGUARD)]
