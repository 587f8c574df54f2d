"""Connector tests read what a connector logs (``structlog.testing.capture_logs``). A CLI test that ran earlier in
the same process (the suite runs files in any order across pytest-xdist workers) may have left structlog
configured to drop info lines (``ferry`` without ``-v``: warnings only), which ``capture_logs`` does not undo: each
connector test starts from structlog's defaults."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    structlog.reset_defaults()
    yield
