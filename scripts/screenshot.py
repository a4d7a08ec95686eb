"""Drive real napari: sample phantom, widget docked, one click on a tumour -> docs/screenshot.png.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot.py [out.png]

Uses the shipped default weights when they exist (else the untrained tiny model, with a warning).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300.0


def tumour_click(truth: np.ndarray) -> np.ndarray:
    """The voxel of the largest tumour nearest its centroid, (z, y, x)."""
    from scipy import ndimage

    lesions, n = ndimage.label(truth == 2, structure=np.ones((3, 3, 3)))
    if n == 0:
        raise SystemExit("the sample phantom has no tumour")
    sizes = ndimage.sum_labels(np.ones_like(lesions), lesions, index=range(1, n + 1))
    biggest = int(np.argmax(sizes)) + 1
    voxels = np.argwhere(lesions == biggest)
    centre = voxels.mean(axis=0)
    return voxels[np.argmin(((voxels - centre) ** 2).sum(axis=1))]


def main(out: Path) -> None:
    from qtpy.QtWidgets import QApplication

    from napari_miqsam.launch import open_viewer

    viewer, widget = open_viewer()
    viewer.window._qt_window.resize(1500, 920)
    truth = viewer.layers["phantom ground truth"]
    truth.visible = False
    click = tumour_click(np.asarray(truth.data))
    image = viewer.layers["phantom CT"]
    viewer.dims.set_point(0, float(click[0] * image.scale[0]))
    app = QApplication.instance()
    points = viewer.layers[widget.prompts_layer().name]
    points.add(click.astype(float))
    start = time.monotonic()
    while (widget.busy or widget.output_layer is None) and time.monotonic() - start < TIMEOUT_S:
        app.processEvents()
        time.sleep(0.02)
    if widget.output_layer is None:
        raise SystemExit(f"no result after {TIMEOUT_S:.0f} s: {widget.status_label.text()}")
    print(f"run took {time.monotonic() - start:.1f} s: {widget.status_label.text()}")
    viewer.dims.set_point(0, float(click[0] * image.scale[0]))
    viewer.reset_view()
    camera = viewer.scene.camera if hasattr(getattr(viewer, "scene", None), "camera") else viewer.camera
    camera.zoom *= 1.15
    viewer.layers.selection.active = points
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(path=str(out), canvas_only=False)
    print(f"wrote {out}")
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshot.png")
