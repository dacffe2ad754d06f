"""make backup / make restore: a backup restores into a new database, table for table, roles included."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from psycopg import sql

from audit.management.backups import conninfo
from audit.management.commands.create_app_role import grant_app_role
from signatures import services
from signatures.models import Signature, SignatureEvent
from signatures.selectors import verify_signature
from tests.factories import PASSWORD, infused_subject

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]

TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"


def execute(database: str, statement: Any, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(**conninfo(database), autocommit=True) as db:
        cursor = db.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def fingerprint(database: str) -> dict[str, tuple[int, str]]:
    """Row count and checksum of every table's rows."""
    with psycopg.connect(**conninfo(database), autocommit=True) as db:
        tables = [name for (name,) in db.execute(TABLES).fetchall()]
        query = "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {} t"
        return {name: db.execute(sql.SQL(query).format(sql.Identifier(name))).fetchone() for name in tables}


@pytest.fixture
def app_role() -> Iterator[str]:
    """An application role made for this test (so that the restore must create it again)."""
    role = f"cart_app_{secrets.token_hex(4)}"
    grant_app_role(role)
    yield role
    database = connection.settings_dict["NAME"]
    if role_exists(role):
        execute(database, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    execute(database, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def restored() -> Iterator[str]:
    name = f"restore_check_{secrets.token_hex(4)}"
    yield name
    execute("postgres", sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def role_exists(role: str) -> bool:
    return bool(execute("postgres", "SELECT 1 FROM pg_roles WHERE rolname = %s", [role]))


@contextmanager
def django_on(database: str) -> Iterator[None]:
    """Point the ORM at another database of the same server for the duration."""
    original = connection.settings_dict["NAME"]
    connection.close()
    connection.settings_dict["NAME"] = database
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["NAME"] = original


def back_up(folder: Path) -> Path:
    out = io.StringIO()
    call_command("backup_database", output_dir=str(folder), stdout=out)
    [dump] = folder.glob("*.dump")
    assert f"Backed up database {connection.settings_dict['NAME']} to {dump}" in out.getvalue()
    assert dump.with_name(dump.name.removesuffix(".dump") + ".roles.sql").is_file()
    return dump


def test_a_backup_restores_into_a_new_database_with_its_roles_table_for_table(world, app_role, restored, tmp_path):
    subject = infused_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                              investigator=world.investigator)
    signature = services.sign(subject=subject, meaning="approval", password=PASSWORD, by=world.investigator)
    dump = back_up(tmp_path)
    source = connection.settings_dict["NAME"]
    execute(source, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(app_role)))
    execute(source, sql.SQL("DROP ROLE {}").format(sql.Identifier(app_role)))  # as on a fresh server

    out = io.StringIO()
    call_command("restore_database", str(dump), target=restored, stdout=out)
    assert "pg_restore finished without errors" in out.getvalue()

    assert role_exists(app_role)
    expected, actual = fingerprint(source), fingerprint(restored)
    assert actual == expected
    assert expected[Signature._meta.db_table][0] == 1 and expected[SignatureEvent._meta.db_table][0] >= 1
    events = SignatureEvent._meta.db_table
    assert execute(restored, "SELECT has_table_privilege(%s, %s, 'UPDATE'), has_table_privilege(%s, %s, 'INSERT')",
                   [app_role, events, app_role, events]) == [(False, True)]
    for statement in ("UPDATE {} SET pgh_label = pgh_label", "DELETE FROM {}"):
        with pytest.raises(psycopg.Error):  # the append-only triggers hold for the owner too
            execute(restored, sql.SQL(statement).format(sql.Identifier(events)))
    with django_on(restored):
        copy = Signature.objects.select_related("record_type").get(pk=signature.pk)
        assert copy.is_valid and verify_signature(copy).matches


def test_restoring_over_a_database_that_holds_tables_is_refused_unless_forced(world, restored, tmp_path):
    dump = back_up(tmp_path)
    with pytest.raises(CommandError, match="is not empty"):
        call_command("restore_database", str(dump), stdout=io.StringIO())
    call_command("restore_database", str(dump), target=restored, stdout=io.StringIO())
    with pytest.raises(CommandError, match="is not empty"):
        call_command("restore_database", str(dump), target=restored, stdout=io.StringIO())
    out = io.StringIO()
    call_command("restore_database", str(dump), target=restored, force=True, stdout=out)
    assert "pg_restore finished without errors" in out.getvalue()
    assert fingerprint(restored) == fingerprint(connection.settings_dict["NAME"])


def test_restoring_a_missing_file_is_refused(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        call_command("restore_database", str(tmp_path / "nothing.dump"), stdout=io.StringIO())
