"""Backup and restore of the whole database with PostgreSQL's own tools (pg_dump, pg_restore, psql).

A backup is two files side by side in ``var/backups``:

* ``<UTC timestamp>.dump``: ``pg_dump --format=custom`` of the database (schema, data, triggers, grants);
* ``<UTC timestamp>.roles.sql``: the roles that own objects or hold privileges in it (the application
  role ``cart_app`` above all), created only where missing, and their database-level grants.

A dump names roles but never creates them: restored on a server without the application role, every
GRANT to it fails. The restore therefore runs the roles file first, then pg_restore.

On the embedded server the tools are pgserver's own binaries (the server's version); with
DATABASE_URL the system's tools on PATH are used, falling back to pgserver's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import psycopg
from django.db import connections
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROLES_SUFFIX = ".roles.sql"

# Roles that own something in the database or hold a privilege on it, its schemas, tables or functions.
ROLES_IN_USE = """
WITH acl AS (
    SELECT (aclexplode(relacl)).grantee FROM pg_class WHERE relacl IS NOT NULL
    UNION SELECT (aclexplode(nspacl)).grantee FROM pg_namespace WHERE nspacl IS NOT NULL
    UNION SELECT (aclexplode(proacl)).grantee FROM pg_proc WHERE proacl IS NOT NULL
    UNION SELECT (aclexplode(datacl)).grantee FROM pg_database WHERE datname = current_database()
    UNION SELECT relowner FROM pg_class UNION SELECT nspowner FROM pg_namespace
    UNION SELECT proowner FROM pg_proc UNION SELECT datdba FROM pg_database WHERE datname = current_database()
)
SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication,
       r.rolbypassrls, r.rolconnlimit
FROM pg_roles r JOIN acl ON acl.grantee = r.oid
WHERE r.rolname NOT LIKE 'pg\\_%'
ORDER BY r.rolname
"""

DATABASE_GRANTS = """
SELECT r.rolname, a.privilege_type
FROM pg_database d, aclexplode(d.datacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE d.datname = current_database() AND r.rolname NOT LIKE 'pg\\_%'
ORDER BY 1, 2
"""

ATTRIBUTES = (("rolsuper", "SUPERUSER"), ("rolinherit", "INHERIT"), ("rolcreaterole", "CREATEROLE"),
              ("rolcreatedb", "CREATEDB"), ("rolcanlogin", "LOGIN"), ("rolreplication", "REPLICATION"),
              ("rolbypassrls", "BYPASSRLS"))


def tool(name: str) -> str:
    """The path of a PostgreSQL client program (see the module docstring for which one)."""
    system = shutil.which(name) if os.environ.get("DATABASE_URL") else None
    if system:
        return system
    from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


LIBPQ_ENV = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "dbname": "PGDATABASE",
             "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "options": "PGOPTIONS"}


def conninfo(database: str, alias: str = "default") -> dict[str, str]:
    """libpq connection parameters of ``alias``'s server (Django's, OPTIONS included), for ``database``."""
    params = {**connections[alias].get_connection_params(), "dbname": database}
    return {key: str(value) for key, value in params.items() if key in LIBPQ_ENV and value not in (None, "")}


def libpq_env(database: str, alias: str = "default") -> dict[str, str]:
    return {**os.environ, **{LIBPQ_ENV[key]: value for key, value in conninfo(database, alias).items()}}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, check=False)


def roles_sql(database: str, alias: str = "default") -> tuple[str, int]:
    """The roles file's text and the number of roles it creates."""
    with psycopg.connect(make_conninfo(**conninfo(database, alias)), autocommit=True) as connection:
        roles = connection.execute(ROLES_IN_USE).fetchall()
        passwords = _password_hashes(connection)
        grants = connection.execute(DATABASE_GRANTS).fetchall()
        lines = ["-- Roles the database needs; each is created only if missing. Run with psql -v target=<db>.",
                 "\\set ON_ERROR_STOP on"]
        lines += [_create_role(connection, row, passwords.get(row[0])) for row in roles]
        lines += [sql.SQL("GRANT {} ON DATABASE :\"target\" TO {};").format(sql.SQL(privilege), sql.Identifier(role))
                  .as_string(connection) for role, privilege in grants]
    return "\n".join(lines) + "\n", len(roles)


def _password_hashes(connection: psycopg.Connection[Any]) -> dict[str, str]:
    """Password hashes, when this login may read them (a superuser); otherwise none are kept."""
    readable = connection.execute("SELECT has_table_privilege('pg_authid', 'SELECT')").fetchone()
    if not readable or not readable[0]:
        return {}
    rows = connection.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL")
    return dict(rows.fetchall())


def _create_role(connection: psycopg.Connection[Any], row: tuple[Any, ...], password: str | None) -> str:
    name, flags, limit = row[0], row[1:8], row[8]
    options = " ".join(word if on else f"NO{word}" for (_, word), on in zip(ATTRIBUTES, flags, strict=True))
    statement = sql.SQL("CREATE ROLE {} " + options + " CONNECTION LIMIT {}").format(
        sql.Identifier(name), sql.Literal(limit))
    if password:
        statement = sql.SQL("{} PASSWORD {}").format(statement, sql.Literal(password))
    body = sql.Literal(statement.as_string(connection)).as_string(connection)
    exists = sql.Literal(name).as_string(connection)
    return (f"DO $do$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {exists}) THEN EXECUTE {body}; "
            "END IF; END $do$;")


def database_state(target: str, alias: str = "default") -> str:
    """"missing", "empty" or "non-empty" (it has tables or other objects in a non-system schema)."""
    with psycopg.connect(make_conninfo(**conninfo("postgres", alias)), autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [target]).fetchone() is None:
            return "missing"
    with psycopg.connect(make_conninfo(**conninfo(target, alias)), autocommit=True) as connection:
        count = connection.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                   "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
                                   "AND n.nspname NOT LIKE 'pg\\_toast%'").fetchone()
    return "non-empty" if count and count[0] else "empty"


def create_database(target: str, alias: str = "default") -> None:
    with psycopg.connect(make_conninfo(**conninfo("postgres", alias)), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'")
                           .format(sql.Identifier(target)))
