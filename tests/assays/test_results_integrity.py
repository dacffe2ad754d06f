"""Referential integrity of results, checked by the database once per statement (migration assays.0007):
a result's draw (with its subject and site), analyte and recording user must exist, and a referenced
draw, analyte or user can be neither deleted nor re-keyed. Raw SQL through the connection, as a bulk
loader would write, INSERT and COPY alike."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import IntegrityError, NotSupportedError, connection, transaction

from assays.models import Analyte, LabDraw, Result
from assays.services import RESULT_COLUMNS
from tests.concurrency import run_together
from tests.factories import UserFactory, screened

DRAW_RULE = "assays_result_draw_subject_site_fk"
ANALYTE_RULE = "assays_result_analyte_id_fk"
USER_RULE = "assays_result_recorded_by_id_fk"


@dataclass
class Refs:
    """Two subjects (sites A and B), a draw each, an analyte and a user that records results only."""

    subject: Any
    other_subject: Any
    draw: LabDraw
    other_draw: LabDraw
    analyte: Analyte
    user: Any


def _draw(subject: Any, accession: str, by: Any) -> LabDraw:
    return LabDraw.objects.create(subject=subject, site_id=subject.site_id, accession_number=accession,
                                  specimen="serum", collected_at=dt.datetime(2026, 1, 5, 8, tzinfo=dt.UTC),
                                  recorded_by=by)


@pytest.fixture
def refs(world: Any) -> Refs:
    return _build_refs(world)


def record(refs: Refs, n: int, **overrides: Any) -> tuple[Any, ...]:
    """One result row in RESULT_COLUMNS order, valid unless overridden."""
    values = {"draw_id": refs.draw.pk, "subject_id": refs.subject.pk, "site_id": refs.subject.site_id,
              "analyte_id": refs.analyte.pk, "source_ref": f"LIS-{n}", "value_text": "12.5", "unit_text": "mg/L",
              "value": 12.5, "censored": "", "flag": "", "ctcae_grade": None, "status": "final",
              "superseded": False, "correction_reason": "", "recorded_by_id": refs.user.pk,
              "recorded_at": dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC), "audit_context_id": None}
    values.update(overrides)
    return tuple(values[column] for column in RESULT_COLUMNS)


def insert(records: list[tuple[Any, ...]]) -> None:
    rows = ", ".join(["(" + ", ".join(["%s"] * len(RESULT_COLUMNS)) + ")"] * len(records))
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO assays_result ({', '.join(RESULT_COLUMNS)}) VALUES {rows}",
                       [value for record in records for value in record])


def copy(records: list[tuple[Any, ...]]) -> None:
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(f"COPY assays_result ({', '.join(RESULT_COLUMNS)}) FROM STDIN") as writer:
            for record in records:
                writer.write_row(record)


def execute(sql: str, params: list[Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def refused(write: Callable[[], None], rule: str) -> None:
    """``write`` fails with foreign_key_violation (23503) naming ``rule``, and leaves nothing behind."""
    before = Result.objects.count()
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        write()
    assert caught.value.__cause__.sqlstate == "23503"  # type: ignore[union-attr]
    assert caught.value.__cause__.diag.constraint_name == rule  # type: ignore[union-attr]
    assert rule in str(caught.value)
    assert Result.objects.count() == before


WRITERS = {"INSERT": insert, "COPY": copy}


@pytest.mark.django_db
class TestInsert:
    @pytest.mark.parametrize("how", WRITERS)
    def test_a_valid_batch_is_stored(self, refs: Refs, how: str) -> None:
        batch = [record(refs, n) for n in range(40)] + [
            record(refs, 100 + n, draw_id=refs.other_draw.pk, subject_id=refs.other_subject.pk,
                   site_id=refs.other_subject.site_id) for n in range(10)]
        WRITERS[how](batch)
        assert Result.objects.filter(draw=refs.draw).count() == 40
        assert Result.objects.filter(draw=refs.other_draw, subject=refs.other_subject).count() == 10

    @pytest.mark.parametrize("how", WRITERS)
    def test_a_draw_that_does_not_exist_is_refused_with_the_whole_batch(self, refs: Refs, how: str) -> None:
        missing = LabDraw.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1000
        batch = [record(refs, n) for n in range(20)] + [record(refs, 99, draw_id=missing)]
        refused(lambda: WRITERS[how](batch), DRAW_RULE)

    @pytest.mark.parametrize("how", WRITERS)
    def test_a_draw_of_another_subject_is_refused(self, refs: Refs, how: str) -> None:
        # The other subject's draw, given as this subject's (same site as the draw's: still refused).
        refused(lambda: WRITERS[how]([record(refs, 1, draw_id=refs.other_draw.pk)]), DRAW_RULE)
        refused(lambda: WRITERS[how]([record(refs, 1, subject_id=refs.other_subject.pk)]), DRAW_RULE)

    @pytest.mark.parametrize("how", WRITERS)
    def test_a_draw_of_another_site_is_refused(self, refs: Refs, how: str) -> None:
        refused(lambda: WRITERS[how]([record(refs, 1, site_id=refs.other_subject.site_id)]), DRAW_RULE)

    @pytest.mark.parametrize("how", WRITERS)
    def test_an_unknown_analyte_is_refused(self, refs: Refs, how: str) -> None:
        missing = Analyte.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1000
        batch = [record(refs, n) for n in range(5)] + [record(refs, 9, analyte_id=missing)]
        refused(lambda: WRITERS[how](batch), ANALYTE_RULE)

    @pytest.mark.parametrize("how", WRITERS)
    def test_an_unknown_user_is_refused(self, refs: Refs, how: str) -> None:
        missing = type(refs.user).objects.order_by("-pk").values_list("pk", flat=True)[0] + 1000
        batch = [record(refs, n) for n in range(5)] + [record(refs, 9, recorded_by_id=missing)]
        refused(lambda: WRITERS[how](batch), USER_RULE)

    def test_superseding_a_result_still_passes(self, refs: Refs) -> None:
        insert([record(refs, 1)])
        assert Result.objects.filter(source_ref="LIS-1").update(superseded=True) == 1


@pytest.mark.django_db
class TestReferencedRows:
    def test_deleting_a_referenced_draw_is_refused(self, refs: Refs) -> None:
        insert([record(refs, 1)])
        refused(lambda: execute("DELETE FROM assays_labdraw WHERE id = %s", [refs.draw.pk]), DRAW_RULE)
        assert LabDraw.objects.filter(pk=refs.draw.pk).exists()

    def test_moving_a_referenced_draw_to_another_subject_or_site_is_refused(self, refs: Refs) -> None:
        insert([record(refs, 1)])
        refused(lambda: execute("UPDATE assays_labdraw SET subject_id = %s WHERE id = %s",
                                [refs.other_subject.pk, refs.draw.pk]), DRAW_RULE)
        refused(lambda: execute("UPDATE assays_labdraw SET site_id = %s WHERE id = %s",
                                [refs.other_subject.site_id, refs.draw.pk]), DRAW_RULE)
        refused(lambda: execute("UPDATE assays_labdraw SET id = id + 100000 WHERE id = %s", [refs.draw.pk]),
                DRAW_RULE)

    def test_other_changes_to_a_referenced_draw_pass(self, refs: Refs) -> None:
        insert([record(refs, 1)])
        execute("UPDATE assays_labdraw SET specimen = 'plasma', subject_id = subject_id WHERE id = %s",
                [refs.draw.pk])
        assert LabDraw.objects.get(pk=refs.draw.pk).specimen == "plasma"

    def test_deleting_an_unreferenced_draw_works(self, refs: Refs) -> None:
        insert([record(refs, 1)])
        execute("DELETE FROM assays_labdraw WHERE id = %s", [refs.other_draw.pk])
        assert not LabDraw.objects.filter(pk=refs.other_draw.pk).exists()

    def test_deleting_or_rekeying_a_referenced_analyte_is_refused(self, refs: Refs) -> None:
        insert([record(refs, 1)])
        refused(lambda: execute("DELETE FROM assays_analyte WHERE id = %s", [refs.analyte.pk]), ANALYTE_RULE)
        refused(lambda: execute("UPDATE assays_analyte SET id = id + 100000 WHERE id = %s", [refs.analyte.pk]),
                ANALYTE_RULE)
        execute("UPDATE assays_analyte SET name = 'CRP (hs)' WHERE id = %s", [refs.analyte.pk])  # not a key

    def test_deleting_an_unreferenced_analyte_works(self, refs: Refs) -> None:
        spare = Analyte.objects.create(code="SPARE", name="Unused", canonical_unit="U/L")
        insert([record(refs, 1)])
        execute("DELETE FROM assays_analyte WHERE id = %s", [spare.pk])
        assert not Analyte.objects.filter(pk=spare.pk).exists()

    def test_deleting_or_rekeying_a_referenced_user_is_refused(self, refs: Refs) -> None:
        insert([record(refs, 1)])
        spare = UserFactory(username="never_recorded")
        refused(lambda: execute("DELETE FROM auth_user WHERE id IN (%s, %s)", [spare.pk, refs.user.pk]), USER_RULE)
        refused(lambda: execute("UPDATE auth_user SET id = id + 100000 WHERE id = %s", [refs.user.pk]), USER_RULE)
        execute("UPDATE auth_user SET last_login = now() WHERE id = %s", [refs.user.pk])  # a login: not a key
        execute("DELETE FROM auth_user WHERE id = %s", [spare.pk])  # a user without results
        assert not type(spare).objects.filter(pk=spare.pk).exists()

    def test_truncating_a_referenced_table_alone_is_refused(self, refs: Refs) -> None:
        insert([record(refs, 1)])
        execute("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE refuses pending (deferred) checks of this test's rows
        for table in ("assays_labdraw", "assays_analyte", "auth_user"):
            with pytest.raises(NotSupportedError, match="results reference it"), transaction.atomic():
                execute(f"TRUNCATE {table} CASCADE")
        assert Result.objects.count() == 1


# Two connections, real transactions: the guarantees of a foreign key under READ COMMITTED.

def _pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


class Step:
    """A thread's handshake: its backend pid once it holds its lock, then a go-ahead to end its transaction."""

    def __init__(self) -> None:
        self.pid = 0
        self.started, self.go = threading.Event(), threading.Event()


def _build_refs(world: Any) -> Refs:
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    other = screened(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    analyte = Analyte.objects.get_or_create(code="CRP", defaults={"name": "C reactive protein",
                                                                  "canonical_unit": "mg/L"})[0]
    return Refs(subject=subject, other_subject=other, draw=_draw(subject, "ACC-A", world.coordinator),
                other_draw=_draw(other, "ACC-B", world.coordinator_b), analyte=analyte,
                user=UserFactory(username="lis_loader"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("restore_catalogue")
class TestConcurrent:
    def test_a_delete_waits_for_an_open_insert_then_fails(self, world: Any) -> None:
        refs = _build_refs(world)
        inserter = Step()

        def insert_and_hold() -> int:
            with transaction.atomic():
                insert([record(refs, n) for n in range(30)])
                inserter.pid = _pid()
                inserter.started.set()
                assert inserter.go.wait(timeout=30)
            return Result.objects.count()

        def delete_draw() -> None:
            assert inserter.started.wait(timeout=30)
            with transaction.atomic():
                execute("DELETE FROM assays_labdraw WHERE id = %s", [refs.draw.pk])

        def release_when_blocked() -> None:
            assert inserter.started.wait(timeout=30)
            _wait_for_any_lock_wait(exclude=inserter.pid)
            inserter.go.set()

        (ok, stored), (outcome, error), _ = run_together(insert_and_hold, delete_draw, release_when_blocked)
        assert (ok, stored) == ("ok", 30)
        assert outcome == "error" and isinstance(error, IntegrityError), error
        assert error.__cause__.diag.constraint_name == DRAW_RULE  # type: ignore[union-attr]
        assert LabDraw.objects.filter(pk=refs.draw.pk).exists()
        assert Result.objects.filter(draw=refs.draw).count() == 30

    def test_an_insert_waits_for_an_open_delete_then_fails(self, world: Any) -> None:
        refs = _build_refs(world)
        deleter = Step()

        def delete_and_hold() -> None:
            with transaction.atomic():
                execute("DELETE FROM assays_labdraw WHERE id = %s", [refs.draw.pk])
                deleter.pid = _pid()
                deleter.started.set()
                assert deleter.go.wait(timeout=30)

        def insert_results() -> None:
            assert deleter.started.wait(timeout=30)
            with transaction.atomic():
                insert([record(refs, n) for n in range(30)])

        def release_when_blocked() -> None:
            assert deleter.started.wait(timeout=30)
            _wait_for_any_lock_wait(exclude=deleter.pid)
            deleter.go.set()

        (ok, _none), (outcome, error), _ = run_together(delete_and_hold, insert_results, release_when_blocked)
        assert ok == "ok"
        assert outcome == "error" and isinstance(error, IntegrityError), error
        assert error.__cause__.diag.constraint_name == DRAW_RULE  # type: ignore[union-attr]
        assert not LabDraw.objects.filter(pk=refs.draw.pk).exists()
        assert Result.objects.count() == 0

    def test_an_insert_waiting_for_a_delete_that_rolls_back_succeeds(self, world: Any) -> None:
        refs = _build_refs(world)
        deleter = Step()

        def delete_and_roll_back() -> None:
            with transaction.atomic():
                execute("DELETE FROM assays_labdraw WHERE id = %s", [refs.draw.pk])
                deleter.pid = _pid()
                deleter.started.set()
                assert deleter.go.wait(timeout=30)
                transaction.set_rollback(True)

        def insert_results() -> None:
            assert deleter.started.wait(timeout=30)
            with transaction.atomic():
                insert([record(refs, n) for n in range(30)])

        def release_when_blocked() -> None:
            assert deleter.started.wait(timeout=30)
            _wait_for_any_lock_wait(exclude=deleter.pid)
            deleter.go.set()

        outcomes = run_together(delete_and_roll_back, insert_results, release_when_blocked)
        assert [outcome for outcome, _value in outcomes] == ["ok", "ok", "ok"], outcomes
        assert Result.objects.filter(draw=refs.draw).count() == 30

    @pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
    def test_a_delete_under_a_snapshot_isolation_level_is_refused(self, world: Any, level: str) -> None:
        # Its check would read an old snapshot, missing results committed since (by READ COMMITTED writers).
        refs = _build_refs(world)
        with pytest.raises(NotSupportedError, match="READ COMMITTED"), transaction.atomic():
            execute(f"SET TRANSACTION ISOLATION LEVEL {level}")
            execute("DELETE FROM assays_labdraw WHERE id = %s", [refs.other_draw.pk])
        assert LabDraw.objects.filter(pk=refs.other_draw.pk).exists()


def _wait_for_any_lock_wait(exclude: int) -> None:
    """Poll until some other backend of this database waits for a lock (the blocked statement)."""
    for _ in range(300):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock' AND pid <> %s", [exclude])
            if cursor.fetchone():
                return
        time.sleep(0.05)
    raise AssertionError("no statement waited for a lock")
