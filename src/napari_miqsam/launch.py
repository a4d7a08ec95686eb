"""Open napari with the MIQ-SAM3D widget docked and the sample CT phantom loaded (``make run``).

``python -m napari_miqsam.launch`` (or :func:`main`). The prompt layer is created and selected in
add mode, so the first click on a lesion runs the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def fallback_predictor_factory() -> Callable[[str | None, str], Any] | None:
    """None when the shipped default weights exist; else an untrained ``tiny`` model factory.

    Only for demos before the default weights are trained: the widget warns that the weights are
    untrained, and its instances are not meaningful.
    """
    from napari_miqsam.model.weights import DEFAULT_WEIGHTS

    if DEFAULT_WEIGHTS.exists():
        return None

    def untrained(weights: str | None, device: str) -> Any:
        from napari_miqsam.inference.predictor import Predictor

        if weights is not None:
            return Predictor.from_weights(weights, device=device)
        return Predictor.from_config("tiny", seed=0, device="cpu" if device == "auto" else device)

    return untrained


def open_viewer(show: bool = True) -> tuple[Any, Any]:
    """A napari viewer with the sample phantom and the docked widget: (viewer, widget)."""
    import napari

    viewer = napari.Viewer(title="napari-miqsam: MIQ-SAM3D", show=show)
    viewer.open_sample("napari-miqsam", "phantom")
    _, widget = viewer.window.add_plugin_dock_widget("napari-miqsam", "MIQ-SAM3D")
    widget = getattr(widget, "__wrapped__", widget)
    factory = fallback_predictor_factory()
    if factory is not None:
        widget.predictor_factory = factory
    widget.activate_prompts()
    return viewer, widget


def main() -> None:
    """Open the viewer and run the Qt event loop until the window is closed."""
    import napari

    open_viewer()
    napari.run()


if __name__ == "__main__":
    main()
