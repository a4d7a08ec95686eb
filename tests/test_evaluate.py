"""evaluate() with fake predictors, sharding/merging, and the CLI commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_miqsam.data.datasets import phantom_cases
from napari_miqsam.data.instances import instances_of
from napari_miqsam.data.phantom import make_phantom
from napari_miqsam.errors import InputError
from napari_miqsam.evaluation.evaluate import (
    METRICS, evaluate, format_markdown_table, merge_results, score,
)
from napari_miqsam.evaluation.metrics import iou_matrix


class _Prediction:
    def __init__(self, labels):
        self._labels = labels

    def labels(self, threshold, min_volume=0.0):
        return self._labels.astype(np.uint16), [{"id": i} for i in range(1, int(self._labels.max()) + 1)]


class OraclePredictor:
    """Returns the ground-truth instances of the class under the click."""

    def __init__(self):
        self.calls = {"set_image": 0, "predict": 0}
        self.labels = None

    def attach(self, labels):
        self.labels = labels

    def set_image(self, volume, spacing=(1.0, 1.0, 1.0)):
        assert volume.ndim == 3 and len(spacing) == 3
        self.calls["set_image"] += 1
        self.image = volume

    def predict(self, positive, negative=()):
        self.calls["predict"] += 1
        cls = int(self.labels[tuple(positive[0])])
        inst, _ = instances_of(self.labels, cls)
        return _Prediction(inst)


class EmptyPredictor(OraclePredictor):
    def predict(self, positive, negative=()):
        return _Prediction(np.zeros(self.image.shape, np.uint16))


def _cases(n=3):
    out = []
    for i in range(n):
        c = make_phantom(40 + i, shape=(24, 64, 64), spacing=(3.0, 2.0, 2.0))
        out.append(c)
    return out


class _Oracle(OraclePredictor):
    """Oracle that finds the labels of the current image among known cases."""

    def __init__(self, cases):
        super().__init__()
        self.cases = cases

    def set_image(self, volume, spacing=(1.0, 1.0, 1.0)):
        super().set_image(volume, spacing)
        self.labels = next(c.labels for c in self.cases if c.image is volume or
                           np.array_equal(c.image, volume))


@pytest.fixture(scope="module")
def cases():
    return _cases(3)


def test_oracle_scores_perfect(cases):
    oracle = _Oracle(cases)
    res = evaluate(cases, oracle, clicks=3, seed=0, progress=False, baselines=False, min_size=0)
    assert res["n_cases"] == 3 and res["clicks"] == 3 and res["seed"] == 0
    assert res["model"]["dice"] == 1.0
    assert res["model"]["instance_f1"] == 1.0
    assert res["model"]["nsd_1mm"] == 1.0
    assert res["model"]["wrong_class_rate"] == 0.0
    assert res["model"]["clicked_found"] == 1.0
    assert res["model"]["dice_std_over_clicks"] == 0.0
    assert oracle.calls["set_image"] == 3  # one embedding per case
    assert oracle.calls["predict"] == 3 * res["n_rows"]
    for row in res["cases"]:
        assert [p["mode"] for p in row["points"]] == ["center", "interior", "boundary"]
        lab = cases[row["index"]].labels
        for p in row["points"]:
            assert lab[tuple(p["point"])] == row["class"]


def test_empty_predictor_scores_zero(cases):
    res = evaluate(cases, lambda: EmptyPredictor(), clicks=2, progress=False, baselines=False)
    assert res["model"]["dice"] == 0.0
    assert res["model"]["instance_f1"] == 0.0
    assert res["model"]["nsd_2mm"] == 0.0
    assert res["model"]["clicked_found"] == 0.0


def test_clicked_found_asks_for_the_clicked_lesion_itself():
    """The clicked lesion counts as found only when a predicted instance matches it (IoU >= 0.5):
    another lesion found elsewhere, or a piece of it, does not."""
    labels = np.zeros((8, 8, 16), np.uint8)
    labels[2:6, 2:6, 2:6] = 2  # clicked lesion, 64 voxels
    labels[2:6, 2:6, 10:14] = 2  # another lesion
    clicked = np.zeros(labels.shape, bool)
    clicked[2:6, 2:6, 2:6] = True
    other = np.zeros(labels.shape, np.int32)
    other[2:6, 2:6, 10:14] = 1
    assert score(other, labels, 2, (1, 1, 1), clicked=clicked)["clicked_found"] == 0.0
    assert score(other, labels, 2, (1, 1, 1))["instance_recall"] == 0.5
    piece = other.copy()
    piece[2:4, 2:6, 2:6] = 2  # half of it: IoU 0.5
    assert iou_matrix(piece, clicked).max() == 0.5 and score(piece, labels, 2, (1, 1, 1), clicked=clicked)["clicked_found"] == 1.0
    piece[2:4, 2:6, 2:4] = 0  # a quarter: IoU 0.25
    assert score(piece, labels, 2, (1, 1, 1), clicked=clicked)["clicked_found"] == 0.0
    assert np.isnan(score(piece, labels, 2, (1, 1, 1))["clicked_found"])


def test_baselines_run_and_table(cases):
    res = evaluate(cases[:1], None, clicks=1, progress=False)
    assert res["model"] == {}
    assert set(res["baselines"]) == {"region_grow", "threshold_cc"}
    for m in res["baselines"].values():
        for k in METRICS:
            assert 0.0 <= m[k] <= 1.0
    table = format_markdown_table(res)
    assert "| region_grow |" in table and "Dice" in table


def test_shards_merge_to_full_run(cases):
    full = evaluate(cases, _Oracle(cases), clicks=2, seed=3, progress=False)
    parts = [evaluate(cases, _Oracle(cases), clicks=2, seed=3, progress=False, shard=(r, 2))
             for r in range(2)]
    assert [p["n_cases"] for p in parts] == [2, 1]
    merged = merge_results(parts)
    assert merged["n_cases"] == full["n_cases"] and merged["n_rows"] == full["n_rows"]
    for key in ("model",):
        assert merged[key] == pytest.approx(full[key])
    for name in full["baselines"]:
        assert merged["baselines"][name] == pytest.approx(full["baselines"][name])
    assert [(r["index"], r["class"]) for r in merged["cases"]] == [
        (r["index"], r["class"]) for r in full["cases"]]


def test_refs_and_lesion_classes():
    refs = phantom_cases(2, 40, shape=(24, 64, 64), spacing=(3.0, 2.0, 2.0))
    res = evaluate(refs, None, clicks=1, progress=False, lesion_classes=[3])
    assert {r["class"] for r in res["cases"]} <= {3}


def test_bad_arguments(cases):
    with pytest.raises(InputError):
        evaluate(cases, None, clicks=0, progress=False)
    with pytest.raises(InputError):
        evaluate(cases, None, shard=(2, 2), progress=False)
    with pytest.raises(InputError):
        evaluate(cases, object(), progress=False)
    with pytest.raises(InputError):
        score(np.zeros((2, 2, 2)), np.zeros((3, 3, 3)), 2, (1, 1, 1))


def test_cli_phantom_and_evaluate(tmp_path, capsys):
    from napari_miqsam.cli import main

    out = tmp_path / "ph"
    assert main(["phantom", str(out), "--cases", "2", "--seed", "4", "--shape", "16", "32", "32",
                 "--quiet"]) == 0
    assert (out / "case_00001" / "segmentation.nii.gz").exists()
    js = tmp_path / "r.json"
    assert main(["evaluate", str(out), "--no-model", "--clicks", "1", "--json", str(js),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| region_grow |" in printed
    data = json.loads(js.read_text())
    assert data["clicks"] == 1 and "baselines" in data
    # an existing JSON is refused, a bad DATA is an error with status 2
    assert main(["evaluate", str(out), "--no-model", "--json", str(js), "--quiet"]) == 2
    assert main(["evaluate", str(tmp_path / "nothing"), "--no-model", "--quiet"]) == 2
    assert main(["evaluate", "phantom:1:0", "--no-model", "--no-baselines", "--quiet"]) == 2


def test_cli_evaluate_removed_kind_scoring_says_why(capsys):
    """--kind-scoring (measured no better than a lower threshold, docs/experiments.md) is gone: a
    usage error that says so, not an unknown-flag guess."""
    from napari_miqsam.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "phantom:1:0", "--kind-scoring", "on"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--kind-scoring was removed" in err and "docs/experiments.md" in err


def test_cli_evaluate_model_spacing(tmp_path):
    """--model-spacing runs the model grid at another spacing; the JSON says which; a bad value is
    a one-line error. Default: the shipped weights' inference spacing."""
    from napari_miqsam.cli import main
    from napari_miqsam.inference.predictor import inference_spacing
    from napari_miqsam.model.weights import DEFAULT_WEIGHTS, read_metadata

    out = tmp_path / "ph"
    assert main(["phantom", str(out), "--cases", "1", "--seed", "7", "--shape", "32", "48", "48", "--quiet"]) == 0
    js = tmp_path / "a.json"
    assert main(["evaluate", str(out), "--no-baselines", "--clicks", "1", "--model-spacing", "2.5",
                 "--json", str(js), "--quiet"]) == 0
    assert json.loads(js.read_text())["model_spacing"] == [2.5, 2.5, 2.5]
    js = tmp_path / "b.json"
    assert main(["evaluate", str(out), "--no-baselines", "--clicks", "1", "--json", str(js), "--quiet"]) == 0
    assert tuple(json.loads(js.read_text())["model_spacing"]) == inference_spacing(read_metadata(DEFAULT_WEIGHTS))
    assert main(["evaluate", str(out), "--no-baselines", "--model-spacing", "1", "2", "--quiet"]) == 2


class _ClickedOnly(_Oracle):
    """Returns only the instance under the click, so Dice depends on which instance is drawn."""

    def predict(self, positive, negative=()):
        self.calls["predict"] += 1
        cls = int(self.labels[tuple(positive[0])])
        inst, _ = instances_of(self.labels, cls)
        return _Prediction((inst == inst[tuple(positive[0])]).astype(np.uint16))


def test_several_seeds_score_each_draw_on_one_embedding_per_case(cases):
    singles = [evaluate(cases, _ClickedOnly(cases), clicks=2, seed=k, progress=False) for k in (0, 5)]
    assert singles[0]["model"]["dice"] != pytest.approx(singles[1]["model"]["dice"])  # the draws differ
    model = _ClickedOnly(cases)
    both = evaluate(cases, model, clicks=2, seed=[0, 5], progress=False)
    assert model.calls["set_image"] == len(cases)  # one embedding per case for both draws
    assert both["seed"] == [0, 5] and both["n_rows"] == 2 * singles[0]["n_rows"]
    for k, single in zip(("0", "5"), singles):
        draw = both["draws"][k]
        assert draw["model"] == pytest.approx(single["model"])  # each draw is the run with that seed
        for name in single["baselines"]:
            assert draw["baselines"][name] == pytest.approx(single["baselines"][name])
        for cls in single["by_class"]:
            assert draw["by_class"][cls]["model"] == pytest.approx(single["by_class"][cls]["model"])
    for metric, value in both["model"].items():
        if metric != "n_rows":
            assert value == pytest.approx((singles[0]["model"][metric] + singles[1]["model"][metric]) / 2)
    parts = [evaluate(cases, _ClickedOnly(cases), clicks=2, seed=[0, 5], progress=False, shard=(r, 2)) for r in range(2)]
    merged = merge_results(parts)
    assert merged["model"] == pytest.approx(both["model"]) and merged["draws"]["5"]["model"] == pytest.approx(singles[1]["model"])
    assert "seeds 0, 5" in format_markdown_table(both) and "Draw 5 alone" in format_markdown_table(both)
    with pytest.raises(InputError, match="distinct"):
        evaluate(cases, _ClickedOnly(cases), seed=[1, 1], progress=False)


def test_cli_evaluate_several_seeds(tmp_path, capsys):
    from napari_miqsam.cli import main

    out = tmp_path / "e.json"
    assert main(["evaluate", "phantom:1:40", "--no-model", "--clicks", "1", "--seed", "0,2", "--quiet",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["seed"] == [0, 2] and set(res["draws"]) == {"0", "2"}
    with pytest.raises(SystemExit):
        main(["evaluate", "phantom:1:40", "--seed", "0,x"])
    assert "not a seed" in capsys.readouterr().err
    assert main(["evaluate", "phantom:1:40", "--no-model", "--seed", "1,1", "--quiet"]) != 0
    assert "distinct seeds" in capsys.readouterr().err
