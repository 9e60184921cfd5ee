"""Shared test settings: every async test runs on asyncio (the backend the server runs on)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
