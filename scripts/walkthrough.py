"""The README's quick start, step by step, in real napari with the shipped weights; stops at the
first step that does not do what the README says.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/walkthrough.py [OUT_FOLDER]

Steps: open the sample (File > Open Sample), dock the widget (Plugins > MIQ-SAM3D), click the
largest tumour on the prompt layer the widget made, raise *Confidence*, delete an instance, make a
Labels layer and *Commit* into it (Ctrl+Z undoes), then select it and save it the way
**File > Save Selected Layers...** does (``viewer.layers.save(path, selected=True)``, napari picks
the writer from the ``.nii.gz`` name), the instances layer likewise, and read both files back
with nibabel: same voxels, the image's affine. Writes OUT_FOLDER/walkthrough.png (default: a
temporary folder).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TIMEOUT_S = 300.0


def wait(widget, app) -> float:
    start = time.monotonic()
    while (widget.busy or widget.output_layer is None) and time.monotonic() - start < TIMEOUT_S:
        app.processEvents()
        time.sleep(0.02)
    if widget.busy or widget.output_layer is None:
        raise SystemExit(f"no result after {TIMEOUT_S:.0f} s: {widget.status_label.text()}")
    return time.monotonic() - start


def step(n: int, text: str) -> None:
    print(f"step {n}: {text}", flush=True)


def read_back(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj).transpose(2, 1, 0), img.affine  # NIfTI (x, y, z) -> napari (z, y, x)


def main(out: Path) -> None:
    import napari
    from napari.layers import Points
    from qtpy.QtWidgets import QApplication

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from screenshot import tumour_click

    viewer = napari.Viewer(title="walkthrough")
    app = QApplication.instance()
    viewer.open_sample("napari-miqsam", "phantom")
    image, truth = viewer.layers["phantom CT"], viewer.layers["phantom ground truth"]
    step(2, f"sample opened: {image.data.shape} voxels, scale {tuple(round(float(s), 3) for s in image.scale)} mm")

    _, widget = viewer.window.add_plugin_dock_widget("napari-miqsam", "MIQ-SAM3D")
    widget = getattr(widget, "__wrapped__", widget)
    points = widget.prompts_layer()
    assert isinstance(points, Points) and points.mode == "add", "docking made no prompt layer in add mode"
    assert viewer.layers.selection.active is points, "the prompt layer is not the active one"
    step(3, f"widget docked; prompt layer '{points.name}' active in add mode")

    click = tumour_click(np.asarray(truth.data))
    points.add(click.astype(float))  # what a click on the canvas does in add mode
    seconds = wait(widget, app)
    out_layer = widget.output_layer
    n = len(out_layer.features)
    assert n > 0 and int(out_layer.data[tuple(click)]) != 0, "the clicked tumour is not in the answer"
    step(4, f"click on the largest tumour: {n} instances in {seconds:.1f} s (embedding included); "
            f"status: {widget.status_label.text()!r}")

    widget.threshold_slider.setValue(50)
    app.processEvents()
    shown = len(out_layer.features)
    assert shown <= n and (out_layer.features["score"] >= 0.5).all()
    step(6, f"Confidence >= 0.50: {shown} of {n} instances shown, no model call")
    widget.threshold_slider.setValue(20)  # back to the default, all of them again
    app.processEvents()
    assert len(out_layer.features) == n

    clicked = int(out_layer.data[tuple(click)])
    ids = [int(i) for i in out_layer.features["index"] if int(i) != clicked]
    if ids:
        widget.delete_instance(ids[-1])
        app.processEvents()
        assert not np.any(np.asarray(out_layer.data) == ids[-1])
        step(7, f"deleted instance {ids[-1]}; {len(out_layer.features)} left")
    else:
        step(7, "only the clicked instance is shown; nothing to delete")

    mine = viewer.add_labels(np.zeros(image.data.shape, dtype=np.uint16), name="my lesions", scale=image.scale,
                             metadata=dict(image.metadata))
    viewer.layers.selection.active = points
    widget.target_combo.setCurrentText("my lesions")
    widget.commit()
    committed = np.asarray(mine.data).copy()
    assert np.array_equal(committed != 0, np.asarray(out_layer.data) != 0), "commit did not copy the instances"
    mine.undo()
    assert not np.any(mine.data), "Ctrl+Z did not undo the commit"
    mine.redo()
    step(8, f"committed {len(np.unique(committed)) - 1} instances into 'my lesions'; undo and redo work")

    out.mkdir(parents=True, exist_ok=True)
    affine = np.asarray(image.metadata["affine"])
    for layer, name in ((mine, "my_lesions.nii.gz"), (out_layer, "instances.nii.gz")):
        viewer.layers.selection.active = layer
        viewer.layers.selection = {layer}
        path = out / name
        saved = viewer.layers.save(str(path), selected=True)  # File > Save Selected Layers... with this name
        data, saved_affine = read_back(path)
        assert saved and Path(saved[0]) == path, f"napari did not write {path}: {saved}"
        assert np.array_equal(data, np.asarray(layer.data)), f"{path}: voxels differ from the layer"
        assert np.allclose(saved_affine, affine, atol=1e-5), f"{path}: affine is not the image's"
        step(9, f"File > Save Selected Layers '{layer.name}' -> {path.name}: {data.shape}, "
                f"{len(np.unique(data)) - 1} labels, the image's affine")

    viewer.layers.selection.active = points
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    viewer.screenshot(path=str(out / "walkthrough.png"), canvas_only=False)
    print(f"all README steps checked; files and screenshot in {out}")
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="miqsam-walkthrough-")))
