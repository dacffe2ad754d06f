"""Products and regimens carry a code unique in their trial: the migration fills it for existing rows,
the database refuses a duplicate, and the admin edits it where the design is edited."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.db import IntegrityError, transaction

from tests.factories import UserFactory, build_trial
from trials.models import LymphodepletionRegimen, Product

pytestmark = pytest.mark.django_db

migration = importlib.import_module("trials.migrations.0006_protocol_codes")


def test_backfill_derives_upper_case_codes_unique_in_each_trial(world):
    LymphodepletionRegimen.objects.create(trial=world.trial, code="X", name="Flu/Cy 30/250 ×3")
    LymphodepletionRegimen.objects.create(trial=world.trial, code="Y", name="flu cy 30 250 3")
    second = build_trial(code="SECOND")
    # Stand-ins for the rows the migration found without a code (distinct: the constraint is in place here).
    for n, regimen in enumerate(LymphodepletionRegimen.objects.all()):
        LymphodepletionRegimen.objects.filter(pk=regimen.pk).update(code=f"OLD-{n}")
    for n, product in enumerate(Product.objects.all()):
        Product.objects.filter(pk=product.pk).update(code=f"OLD-{n}")
    migration.fill_codes(apps, None)
    assert set(world.trial.regimens.values_list("code", flat=True)) == {"FC", "FLU-CY-30-250-3", "FLU-CY-30-250-3-2"}
    assert list(second.regimens.values_list("code", flat=True)) == ["FC"]  # unique per trial, not globally
    assert set(Product.objects.values_list("code", flat=True)) == {"HCART19"}


def test_a_duplicate_code_in_a_trial_is_refused(world):
    with pytest.raises(IntegrityError), transaction.atomic():
        LymphodepletionRegimen.objects.create(trial=world.trial, code="FC", name="Another FC")


def test_the_admin_edits_a_products_code(world, login):
    superuser = UserFactory(username="root", is_superuser=True, is_staff=True)
    product = world.trial.products.get()
    page = login(superuser).get(f"/admin/trials/product/{product.pk}/change/")
    assert page.status_code == 200
    assert 'name="code"' in page.content.decode()
    page = login(superuser).get(f"/admin/trials/lymphodepletionregimen/{world.trial.regimens.get().pk}/change/")
    assert 'name="code"' in page.content.decode()
