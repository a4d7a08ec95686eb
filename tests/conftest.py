"""Shared fixtures of the napari tests (widget, reader, writer)."""

from __future__ import annotations

import pytest


@pytest.fixture
def notifications():
    """The napari notifications dispatched during the test, as (severity, message) pairs."""
    napari_notifications = pytest.importorskip("napari.utils.notifications")
    manager = napari_notifications.notification_manager
    start = len(manager.records)

    def _records() -> list[tuple[str, str]]:
        return [(str(n.severity), str(n.message)) for n in manager.records[start:]]

    return _records
