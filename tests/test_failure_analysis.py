"""benchmarks/failure_analysis.py runs its main path on the tiny config and one small phantom (a few
seconds): every row kind is written, the clicks are evaluate's, and ``--load`` prints saved runs side
by side. The numbers themselves (an untrained model) are not checked."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "failure_analysis.py"
CATEGORIES = {"match", "seg_error", "wrong_class", "organ", "outside"}


def load():
    spec = importlib.util.spec_from_file_location("benchmark_failure_analysis", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_failure_analysis_rows(tmp_path, capsys):
    out = tmp_path / "fa.json"
    fa = load()
    fa.main(["phantom:1:0", "--config", "tiny", "--shape", "32,64,64", "--model-spacing", "2", "--clicks", "2",
             "--json", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert "Recall by equivalent diameter" in printed and "False positives" in printed and "costs" in printed
    (run,) = json.loads(out.read_text())["runs"]
    assert run["data"] == "phantom:1:0" and run["rows"]
    lesions, instances, clicks = run["lesions"], run["instances"], run["clicks_rows"]
    assert lesions and instances and clicks
    assert len(clicks) == 2 * len(run["rows"])
    for lesion in lesions:
        assert {"class", "volume_mm3", "diameter_mm", "contrast_hu", "noise_hu", "cnr", "edge_ratio", "clicked",
                "iou_per_click", "found_per_click"} <= set(lesion)
        assert len(lesion["found_per_click"]) == 2 and lesion["volume_mm3"] > 0
    for row in run["rows"]:  # exactly one clicked lesion per (case, class) row, and evaluate's F1
        assert sum(l["clicked"] for l in lesions if l["class"] == row["class"]) == 1
        assert abs(row["f1"] - row["evaluate_f1"]) < 1e-9
    assert {i["category"] for i in instances} <= CATEGORIES
    assert all({"score", "volume_mm3", "best_iou", "frac_organ"} <= set(i) for i in instances)
    for click in clicks:
        assert click["clicked_lesion"] > 0 and click["kind_read"] in (2, 3)
        assert click["kind_correct"] == (click["kind_read"] == click["class"])
        assert click["tp"] + click["fp"] == sum(1 for i in instances if (i["index"], i["class"], i["click"])
                                                == (click["index"], click["class"], click["click"]))
        assert set(click["f1_cf"]) >= {"wrong_class_removed", "all_misses_found"}

    fa.main(["--load", str(out), str(out)])  # saved runs side by side, no model
    assert "| | phantom:1:0 | phantom:1:0 |" in capsys.readouterr().out
