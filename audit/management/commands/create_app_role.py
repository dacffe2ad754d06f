"""Create (or refresh) the PostgreSQL role the application connects as in production.

    manage.py create_app_role cart_app --password-env CART_APP_PASSWORD

Migrations run as the database owner; the product runs as this role, which may read and write the
clinical tables but may only read and append to the audit tables: UPDATE, DELETE and TRUNCATE on
every history table and on the audit context table are revoked, so not even a compromised
application can rewrite the audit trail. (The append-only triggers refuse such changes for every
role, the owner included; the grants make sure the application cannot drop those triggers.)

It also makes pgtrigger's per-session trigger skipping (``pgtrigger.ignore``) apply to the database
owner only, so the application cannot write a clinical row without its audit row. Run it again after
each migrate: tables created since get their grants, and migrations reinstall pgtrigger's function.
"""

from __future__ import annotations

import os
from typing import Any

import pghistory.models
from django.apps import apps
from django.core.management.base import CommandError
from django.db import connection, transaction
from psycopg import sql

from config.audit import AuditedCommand


def audit_tables() -> list[str]:
    """Every history (event) table, the audit export log, and pghistory's context table."""
    from audit.models import AuditExport

    tables = [m._meta.db_table for m in apps.get_models() if issubclass(m, pghistory.models.Event)
              and not m._meta.proxy and m._meta.managed]
    return sorted({*tables, AuditExport._meta.db_table, pghistory.models.Context._meta.db_table})


def self_audited_tables() -> list[str]:
    """Tables whose rows are their own insert records (``AUDIT_TRAIL_TABLE``, see audit.tables)."""
    return sorted(m._meta.db_table for m in apps.get_models() if getattr(m, "AUDIT_TRAIL_TABLE", None))


IGNORE_ONLY_FOR_OWNER = """
CREATE OR REPLACE FUNCTION public._pgtrigger_should_ignore(trigger_name NAME) RETURNS BOOLEAN AS $$
DECLARE
    _pgtrigger_ignore TEXT[];
BEGIN
    IF NOT pg_has_role(current_user, (SELECT datdba FROM pg_database WHERE datname = current_database()),
                       'MEMBER') THEN
        RETURN FALSE;
    END IF;
    BEGIN
        SELECT INTO _pgtrigger_ignore CURRENT_SETTING('pgtrigger.ignore');
        EXCEPTION WHEN OTHERS THEN
    END;
    RETURN _pgtrigger_ignore IS NOT NULL AND trigger_name = ANY(_pgtrigger_ignore);
END;
$$ LANGUAGE plpgsql
"""


def grant_app_role(role: str, password: str | None = None) -> None:
    """Create ``role`` if needed and give it exactly the application's privileges."""
    with transaction.atomic(), connection.cursor() as django_cursor:
        cursor = _PlainSql(django_cursor)
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        name = sql.Identifier(role)
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(name))
        if password:
            cursor.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(name, sql.Literal(password)))
        cursor.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(connection.settings_dict["NAME"]), name))
        cursor.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name))
        cursor.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}")
                       .format(name))
        cursor.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(name))
        cursor.execute(sql.SQL("REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM {}")
                       .format(name))
        # pgtrigger lets a session skip named triggers (SET pgtrigger.ignore), which would let the
        # application write clinical data without its audit row: honour that only for the owner.
        cursor.execute(IGNORE_ONLY_FOR_OWNER)
        for table in audit_tables():
            privileges = "UPDATE, DELETE" if table != pghistory.models.Context._meta.db_table else "DELETE"
            # The context row of a request is upserted as the request adds metadata: it keeps UPDATE.
            cursor.execute(sql.SQL(f"REVOKE {privileges} ON {{}} FROM {{}}").format(sql.Identifier(table), name))
        for table in self_audited_tables():
            # A row that is its own insert record (results) is never deleted; superseding it is an update.
            cursor.execute(sql.SQL("REVOKE DELETE ON {} FROM {}").format(sql.Identifier(table), name))


class _PlainSql:
    """Executes psycopg ``sql.Composed`` statements as text (the audit context wrapper expects text)."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def execute(self, statement: Any, params: Any = None) -> None:
        if not isinstance(statement, str):
            statement = statement.as_string(connection.connection)
        self.cursor.execute(statement, params)

    def fetchone(self) -> Any:
        return self.cursor.fetchone()


class Command(AuditedCommand):
    help = "Create or refresh the application's database role (no UPDATE/DELETE on audit tables)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("role")
        parser.add_argument("--password-env", default="", help="Environment variable holding the role's password.")

    def handle(self, *args: Any, role: str, password_env: str, **options: Any) -> None:
        password = os.environ.get(password_env) if password_env else None
        if password_env and not password:
            raise CommandError(f"${password_env} is empty.")
        grant_app_role(role, password)
        self.stdout.write(f"Role {role}: clinical tables read/write; {len(audit_tables())} audit tables "
                          "read and append only.")
