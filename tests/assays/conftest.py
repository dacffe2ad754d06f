"""Fixtures of the ingestion tests: a site's laboratory (a service account of site A) and a consented subject."""

from __future__ import annotations

import pytest

from tests.api.support import token_client
from tests.factories import consented
from trials.services import issue_service_account


@pytest.fixture
def lab(world):
    return token_client(issue_service_account(trial=world.trial, sites=[world.site_a], name="Lab A",
                                              by=world.data_manager)[1])


@pytest.fixture
def subject(world):
    return consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
