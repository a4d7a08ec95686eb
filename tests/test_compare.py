"""Paired comparison of evaluate results (``evaluation.compare``, ``miqsam compare``)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from napari_miqsam.errors import InputError
from napari_miqsam.evaluation.compare import compare, format_comparison, paired_rows
from napari_miqsam.evaluation.evaluate import evaluate

from test_evaluate import EmptyPredictor, _cases, _Oracle


class _EmptyOracle(_Oracle, EmptyPredictor):
    """Finds the case like the oracle, predicts nothing."""

    predict = EmptyPredictor.predict


@pytest.fixture(scope="module")
def results():
    cases = _cases(3)
    kw = dict(clicks=2, seed=[0, 1], progress=False, baselines=False)
    return evaluate(cases, _Oracle(cases), **kw), evaluate(cases, _EmptyOracle(cases), **kw)


def _synthetic(n_cases=12, seed=0):
    """Rows of two classes per case with random metric values."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_cases):
        for cls in (2, 3):
            m = {"dice": float(rng.uniform(0.5, 0.9)), "wrong_class_rate": float(rng.uniform(0, 0.2)),
                 "nsd_1mm": float(rng.uniform(0.4, 0.9))}
            rows.append({"case": f"c{i}", "index": i, "class": cls, "seed": 0,
                         "points": [{"point": [i, cls, 1], "mode": "center"}], "methods": {"model": m}})
    return {"cases": rows}


def test_real_results_pair_and_a_real_difference_is_found(results):
    oracle, empty = results
    assert len(paired_rows(oracle, empty)) == oracle["n_rows"]
    res = compare(oracle, empty, n_resamples=500)
    dice = res["metrics"]["dice"]
    assert dice["first"] == pytest.approx(1.0) and dice["second"] == pytest.approx(0.0)
    assert dice["difference"] == pytest.approx(-1.0) and dice["verdict"] == "worse"
    assert dice["rows_worse"] == oracle["n_rows"] and res["n_cases"] == 3
    same = compare(oracle, copy.deepcopy(oracle), n_resamples=500)["metrics"]["dice"]
    assert same["difference"] == 0.0 and same["verdict"] == "within noise" and same["rows_better"] == 0


def test_shift_is_measured_with_an_interval_and_direction():
    a = _synthetic()
    b = copy.deepcopy(a)
    rng = np.random.default_rng(1)
    for r in b["cases"]:
        r["methods"]["model"]["dice"] += 0.05 + float(rng.normal(0, 0.01))
        r["methods"]["model"]["wrong_class_rate"] += 0.03  # higher wrong-class is worse
        r["methods"]["model"]["nsd_1mm"] += float(rng.normal(0, 0.1))  # noise only
    res = compare(a, b, n_resamples=2000)["metrics"]
    assert res["dice"]["difference"] == pytest.approx(0.05, abs=0.01)
    assert res["dice"]["ci_low"] < res["dice"]["difference"] < res["dice"]["ci_high"]
    assert res["dice"]["verdict"] == "better"
    assert res["wrong_class_rate"]["verdict"] == "worse" and res["wrong_class_rate"]["rows_worse"] == 24
    assert res["nsd_1mm"]["verdict"] == "within noise"
    table = format_comparison(compare(a, b, n_resamples=200), "stage9", "grown")
    assert "| dice |" in table and "grown vs stage9: 24 paired rows over 12 cases" in table
    one = compare(a, b, n_resamples=200, lesion_class=3)
    assert one["n_rows"] == 12 and one["metrics"]["dice"]["verdict"] == "better"
    assert "12 paired rows of lesion class 3 over 12 cases" in format_comparison(one)
    with pytest.raises(InputError, match="no row of lesion class 9"):
        compare(a, b, lesion_class=9)


def test_missing_values_are_left_out_of_that_metric():
    a = _synthetic()
    b = copy.deepcopy(a)
    b["cases"][0]["methods"]["model"]["nsd_1mm"] = None  # NaN in the JSON
    res = compare(a, b, n_resamples=200)["metrics"]
    assert res["nsd_1mm"]["n_rows"] == 23 and res["dice"]["n_rows"] == 24


def test_unpaired_results_are_refused():
    a = _synthetic()
    b = copy.deepcopy(a)
    b["cases"][3]["points"][0]["point"] = [0, 0, 0]
    with pytest.raises(InputError, match="different points"):
        compare(a, b)
    c = copy.deepcopy(a)
    c["cases"] = c["cases"][:-1]
    with pytest.raises(InputError, match="different rows"):
        compare(a, c)
    with pytest.raises(InputError, match="no per-case rows"):
        compare(a, {"model": {}})
    with pytest.raises(InputError, match="no rows scored with 'region_grow'"):
        compare(a, a, method="region_grow")


def test_cli_compare(tmp_path, capsys):
    from napari_miqsam.cli import main

    files = []
    for name in ("a", "b"):
        files.append(tmp_path / f"{name}.json")
        assert main(["evaluate", "phantom:2:40", "--no-model", "--clicks", "1", "--seed", "0,1", "--quiet",
                     "--json", str(files[-1])]) == 0
    capsys.readouterr()
    out = tmp_path / "cmp.json"
    assert main(["compare", *map(str, files), "--method", "region_grow", "--resamples", "200", "--by-class",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "b vs a:" in text and "| dice |" in text and "of lesion class 2" in text
    saved = json.loads(out.read_text())
    assert [c["lesion_class"] for c in saved] == [None] + sorted({r["class"] for r in json.loads(files[0].read_text())["cases"]})
    assert saved[0]["metrics"]["dice"]["difference"] == 0.0  # the same deterministic baseline twice
    assert main(["compare", str(files[0]), str(out)]) == 2  # a comparison is not an evaluate result
    assert "no per-case rows" in capsys.readouterr().err
    assert main(["compare", str(files[0]), str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["compare", str(files[0])]) == 2
    assert main(["compare", *map(str, files), "--json", str(out)]) == 2  # exists, no --overwrite


def test_cli_pools_results_of_different_cases(tmp_path, capsys):
    """A1+A2 vs B1+B2: the rows of both draws, their cases kept apart although both number them from 0."""
    from napari_miqsam.cli import main

    def draw(seed, shift, prefix):
        r = _synthetic(n_cases=6, seed=seed)
        for row in r["cases"]:
            row["case"] = f"{prefix}{row['index']}"
            row["methods"]["model"]["dice"] += shift
        return r

    paths = {}
    for name, seed, shift, prefix in (("a1", 0, 0.0, "x"), ("a2", 1, 0.0, "y"), ("b1", 0, 0.1, "x"), ("b2", 1, 0.1, "y")):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(draw(seed, shift, prefix)))
    out = tmp_path / "cmp.json"
    assert main(["compare", f"{paths['a1']}+{paths['a2']}", f"{paths['b1']}+{paths['b2']}", "--resamples", "200",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "b1+b2 vs a1+a2: 24 paired rows over 12 cases" in text
    dice = json.loads(out.read_text())[0]["metrics"]["dice"]
    assert dice["difference"] == pytest.approx(0.1) and dice["verdict"] == "better"
    # rows pair by case name, so the order of the pooled files does not matter
    swapped = tmp_path / "swapped.json"
    assert main(["compare", f"{paths['a1']}+{paths['a2']}", f"{paths['b2']}+{paths['b1']}", "--resamples", "200",
                 "--json", str(swapped)]) == 0
    assert json.loads(swapped.read_text())[0]["metrics"]["dice"] == dice
    capsys.readouterr()
    # the same result pooled twice would count its rows twice: refused
    assert main(["compare", f"{paths['a1']}+{paths['a1']}", f"{paths['b1']}+{paths['b1']}"]) == 2
    assert "twice" in capsys.readouterr().err
    assert main(["compare", f"{paths['a1']}+{tmp_path / 'missing.json'}", str(paths["b1"])]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_two_click_draws_of_the_same_cases_are_one_cluster_per_case(tmp_path, capsys):
    """--seed 0 and --seed 1 files of the same cases pool into one case each: 6 cases, not 12."""
    from napari_miqsam.cli import main

    paths = {}
    for name, seed, shift in (("a0", 0, 0.0), ("a1", 1, 0.0), ("b0", 0, 0.05), ("b1", 1, 0.05)):
        r = _synthetic(n_cases=6, seed=seed)
        for row in r["cases"]:
            row["case"], row["seed"] = f"case_{row['index']:03d}", seed
            row["methods"]["model"]["dice"] += shift
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(r))
    assert main(["compare", f"{paths['a0']}+{paths['a1']}", f"{paths['b0']}+{paths['b1']}", "--resamples", "200"]) == 0
    assert "paired rows over 6 cases" in capsys.readouterr().out
