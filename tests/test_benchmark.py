"""`miqsam benchmark` measures what it says on a small volume (numbers only, no timing asserts)."""

import queue

from napari_miqsam.commands.benchmark import _measure


def test_measure_reports_the_tiling_and_the_embedding_rate():
    q = queue.Queue()
    _measure((32, 48, 48), (1.5, 1.5, 1.5), None, "cpu", 2, q)
    r = q.get_nowait()
    assert r["windows"] == 1 and r["model_grid"] == [37, 55, 55]  # 1.5 mm onto the shipped 1.3 mm grid
    assert r["window_sizes"] == [[40, 56, 56]]  # the one window, padded to the encoder's multiple of 8
    assert r["window_volume_ratio"] == round(40 * 56 * 56 / (37 * 55 * 55), 2)
    assert r["embed_s_per_mvoxel"] > 0 and r["set_image_s"] > 0 and r["predict_ms"] > 0
