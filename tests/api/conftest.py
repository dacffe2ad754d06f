"""API fixtures: a laboratory system's token bound to site A."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.api.support import token_client
from trials.services import issue_service_account


@pytest.fixture
def lab_token(world: Any) -> str:
    """A laboratory system's token bound to site A."""
    _account, token = issue_service_account(trial=world.trial, sites=[world.site_a], name="Lab A",
                                            by=world.data_manager)
    return token


@pytest.fixture
def lab(lab_token: str) -> APIClient:
    return token_client(lab_token)
