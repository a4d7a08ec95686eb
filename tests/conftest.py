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


@pytest.fixture
def sample_widget(make_napari_viewer, qtbot):
    """A viewer with the plugin's sample phantom and its widget docked (all through npe2)."""
    from widget_helpers import docked

    viewer = make_napari_viewer()
    viewer.open_sample("napari-miqsam", "phantom")
    yield from docked(viewer, qtbot)


@pytest.fixture
def phantom_widget(make_napari_viewer, qtbot):
    """As ``sample_widget`` with a smaller phantom (24, 48, 48), so that runs stay quick."""
    from napari_miqsam._sample_data import phantom_layer_data
    from widget_helpers import docked

    viewer = make_napari_viewer()
    for data, kwargs, kind in phantom_layer_data(5, (24, 48, 48), (2.0, 1.0, 1.0)):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    yield from docked(viewer, qtbot)
