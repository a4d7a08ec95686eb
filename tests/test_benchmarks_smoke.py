"""Every tool in benchmarks/ whose numbers the docs report runs its main path, on the tiny config
and the smallest inputs (a few seconds each). The numbers themselves are not checked here: they come
from the full commands in docs/results.md and docs/training.md."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
EVALUATION = BENCHMARKS / "results" / "evaluate.json"


def load(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` as a module (not run: its ``main`` takes argv)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The scripts set torch's thread count for their timings; give the rest of the suite its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_tune_threshold(capsys):
    load("tune_threshold").main(["--config", "tiny", "--shape", "32,64,64", "--model-spacing", "2", "--cases", "1",
                                 "--clicks", "1", "--thresholds", "0.5", "--refine", "both"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("model_spacing=2")]
    assert len(rows) == 2  # refine on and off at the one threshold
    assert {"dice", "instance_f1", "wrong_class_rate"} <= set(json.loads(rows[0][rows[0].index("{"):]))


def test_visibility(tmp_path, capsys):
    out = tmp_path / "lesions.json"
    load("visibility").main(["--cases", "1", "--start", "0", "--against", str(EVALUATION), "--json", str(out)])
    printed = capsys.readouterr().out
    assert "expected instance F1 over rows" in printed and "rows in common with" in printed
    assert json.loads(out.read_text())["rows"]


def test_training_examples(capsys):
    load("training_examples").main(["--config", "tiny", "--spacing", "4", "--workers", "0", "--batch", "1",
                                    "--patch", "16", "--pool", "1", "--seconds", "0.2"])
    assert "examples/s" in capsys.readouterr().out


def test_train_precision(capsys):
    load("train_precision").main(["--config", "tiny", "--weights", "none", "--spacing", "4", "--patch", "16",
                                  "--repeats", "1"])
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "gradient cosine" in printed


def test_refiner_conv(capsys):
    load("refiner_conv").main(["--config", "tiny", "--model-spacing", "4", "--sides", "16", "--repeat", "1",
                               "--clicks", "1", "--threads", "1"])
    printed = capsys.readouterr().out
    assert "16^3 12 -> 12" in printed and "refine off" in printed


def test_ablation_train_evaluate_table(tmp_path, capsys):
    ablation = load("ablation")
    common = ["--variants", "full", "--config", "tiny", "--out", str(tmp_path / "runs"),
              "--results", str(tmp_path / "results")]
    ablation.main(["train", *common, "--steps", "1", "--batch", "1", "--patch", "16", "--pool", "1"])
    ablation.main(["evaluate", *common, "--cases", "1", "--clicks", "1", "--shape", "32,64,64", "--model-spacing", "2"])
    row = json.loads((tmp_path / "results" / "full.json").read_text())
    assert {"dice", "instance_f1", "steps"} <= set(row) and row["steps"] == 1
    capsys.readouterr()
    ablation.main(["table", *common])
    assert "| full | 1 |" in capsys.readouterr().out


def test_adaptation_curve(tmp_path):
    from napari_miqsam.data.phantom import make_phantom
    from napari_miqsam.model.config import get_config
    from napari_miqsam.model.miqsam import MIQSAM3D
    from napari_miqsam.model.weights import save_weights

    torch.manual_seed(0)
    base = save_weights(MIQSAM3D(get_config("tiny")), tmp_path / "tiny.safetensors", trained=True)
    curve = load("adaptation_curve")
    labelled = [make_phantom(s, shape=(24, 48, 48), spacing=(2.0, 1.0, 1.0)) for s in (3, 4)]
    held_out = [make_phantom(5, shape=(24, 48, 48), spacing=(2.0, 1.0, 1.0))]
    state = curve.run_curve(tmp_path / "curve", labelled, {"held": (held_out, ("random",), None)}, volumes=[1, 2],
                            minutes=[0.05], modes=["decoder"], base=str(base), step_seconds={"decoder": 1.5},
                            patch=32, clicks=1, threads=1, log=lambda *a: None)
    assert set(state["runs"]) == {"1vol_0.05min_decoder", "2vol_0.05min_decoder"}
    run = state["runs"]["2vol_0.05min_decoder"]
    assert run["steps"] == 2 and len(list((tmp_path / "curve" / "data_2").glob("case_*"))) == 2
    f1 = run["eval"]["held"]["instance_f1"]  # default, adapted, difference, interval, verdict
    assert len(f1) == 6 and f1[5] in ("better", "worse", "within noise")
    assert "| 2 | 0.05 min (2) | decoder | held |" in curve.format_table(state)
    again = curve.run_curve(tmp_path / "curve", labelled, {"held": (held_out, ("random",), None)}, volumes=[2],
                            minutes=[0.05], modes=["decoder"], base=str(base), step_seconds={"decoder": 1.5},
                            patch=32, clicks=1, threads=1, log=lambda *a: 1 / 0)  # done runs are skipped
    assert set(again["runs"]) == set(state["runs"]) and again["runs"]["2vol_0.05min_decoder"]["steps"] == 2


def test_nuclei_probe(tmp_path, capsys):
    load("nuclei_probe").main(["--out", str(tmp_path / "nuclei"), "--labelled", "2", "--test", "1", "--steps", "1",
                               "--clicks", "1", "--threads", "1", "--shape", "24,48,48"])
    printed = capsys.readouterr().out
    assert "| shipped |" in printed and "| all 1 steps |" in printed and "paired rows" in printed


def test_thorax_probe_adapts_on_other_seeds_than_it_tests(tmp_path, capsys):
    import json

    out = tmp_path / "thorax"
    load("nuclei_probe").main(["--family", "thorax", "--out", str(out), "--labelled", "2", "--test", "1",
                               "--steps", "1", "--clicks", "1", "--threads", "1"])
    printed = capsys.readouterr().out
    assert "chest phantoms (ood-thorax)" in printed and "| all 1 steps |" in printed
    sources = [json.loads(p.read_text())["sources"] for p in sorted(out.glob("labelled/case_*/miqsam_case.json"))]
    assert sources == [["ood-thorax seed 1000"], ["ood-thorax seed 1001"]]
    scored = json.loads((out / "evaluate_shipped.json").read_text())["cases"]
    assert {c["case"] for c in scored} == {"ood_thorax_00000"}


def test_correction_clicks(tmp_path, capsys):
    import numpy as np

    cc = load("correction_clicks")
    inst = np.zeros((12, 12, 24), np.int32)
    inst[2:6, 2:6, 2:6], inst[2:8, 2:8, 12:18] = 1, 2  # lesion 2 is the larger
    answer = np.zeros_like(inst)
    answer[2:6, 2:6, 2:6] = 1  # lesion 1 found, lesion 2 missed
    rng = np.random.default_rng(0)
    kind, point = cc._next_click(answer, inst, 2, {1}, rng, (1, 1, 1))
    assert kind == "positive" and inst[point] == 2
    assert cc._next_click(answer, inst, 2, {1, 2}, rng, (1, 1, 1)) is None  # every miss already clicked
    answer[8:12, 8:12, 20:24] = 3  # a false instance, larger than any unclicked miss
    kind, point = cc._next_click(answer, inst, 2, {1, 2}, rng, (1, 1, 1))
    assert kind == "negative" and answer[point] == 3
    united = cc._united([answer, np.where(inst == 2, 1, 0)], [point])  # the second answer's id 1 becomes 4
    assert set(np.unique(united)) == {0, 1, 4}  # the instance under the negative click (3) is dropped
    out = tmp_path / "c.json"
    cc.main(["phantom:1:0", "--config", "tiny", "--corrections", "1", "--json", str(out)])
    assert "| 2 |" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert rows and all(len(r["joint"]) == len(r["union"]) == 2 for r in rows)


def test_ood_factors(tmp_path, monkeypatch):
    import napari_miqsam.data.ood_phantom as ood

    monkeypatch.setattr(ood, "make_ood_phantom", ood.make_ood_phantom)  # the script rebinds it; undone after
    of = load("ood_factors")
    assert of.parse_factors("noise=0, grain=0.5") == {"noise": 0.0, "grain": 0.5}
    with pytest.raises(SystemExit):
        of.parse_factors("blur=0")
    out = tmp_path / "f.json"
    assert of.run(["--factors", "noise=0", "--", "evaluate", "ood:1:0", "--clicks", "1", "--no-baselines",
                   "--quiet", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["n_cases"] == 1
    assert ood.make_ood_phantom.keywords == {"factors": {"noise": 0.0}}


def test_randomized_fit(capsys):
    rows = load("randomized_fit").main(["--config", "tiny", "--cases", "2", "--seed", "1", "--shape", "24,40,40"])
    assert len(rows) == 1 and rows[0]["cases"] == 2 and 0.0 <= rows[0]["clicked_found"] <= 1.0
    assert 0.0 <= rows[0]["clicked_iou"] <= 1.0
    assert "found_aerated_hosts" in capsys.readouterr().out
    assert rows[0]["found_aerated_hosts"].endswith("/1")  # seed 1 is aerated, seed 2 not


def test_scan_adaptation(tmp_path, capsys):
    out = tmp_path / "sa"
    base, adapted = load("scan_adaptation").main(["phantom:1:0", "--config", "tiny", "--steps", "2", "--replay", "1",
                                                  "--patch", "16", "--shape", "24,40,40", "--json", str(out)])
    log = adapted["adaptation"]["log"]
    assert log and all(entry["adapted"] for entry in log)  # an untrained base holds no click: every row adapts
    assert [r["points"] for r in base["cases"]] == [r["points"] for r in adapted["cases"]]  # the same clicks
    assert json.loads(Path(f"{out}.adapted.json").read_text())["n_rows"] == base["n_rows"]
    assert "adapted vs base" in capsys.readouterr().out


def test_feature_probe(tmp_path, capsys):
    out = tmp_path / "probe.json"
    rows = load("feature_probe").main(["--config", "tiny", "--fit", "phantom:1:0", "--test", "phantom:1:5",
                                       "--shape", "32,64,64", "--steps", "5", "--batch", "256",
                                       "--background", "500", "--threads", "1", "--features", "both",
                                       "--json", str(out)])
    assert [r["reading"] for r in rows] == ["kind head", "fitted on phantom:1:0"]
    assert all(0.0 <= r["ap"] <= 1.0 and r["seen_1%"]["all"][1] >= 1 for r in rows)
    assert json.loads(out.read_text()) == rows and capsys.readouterr().out.count('"reading"') == 2


def test_feature_probe_image_features():
    probe = load("feature_probe")
    x = torch.full((1, 1, 24, 24, 24), 0.25)
    x[..., 10:12, 10:12, 10:12] = 1.0  # one bright stride-2 cell at (5, 5, 5)
    f = probe.image_features(x, (12, 12, 12))
    assert f.shape == (7, 12, 12, 12)
    assert f[0, 5, 5, 5] == 1.0 and f[0, 0, 0, 0] == 0.25  # the cell's own mean
    assert f[6, 4, 4, 4] == 1.0 and f[5, 4, 4, 4] == 0.25  # max and min over 3 cells see the bright one
    assert f[4, 0, 0, 0] == 0.0 and f[4, 5, 5, 5] > 0  # no spread away from it
    assert f[1, 5, 5, 5] > f[2, 5, 5, 5] > f[3, 5, 5, 5] > 0.25  # wider means dilute it


def test_feature_probe_reads_every_input_channel():
    """Weights with a second CT window (the GPU run's B) are embedded with both channels."""
    from napari_miqsam.data.phantom.generator import make_phantom
    from napari_miqsam.model.config import get_config
    from napari_miqsam.model.miqsam import MIQSAM3D

    probe = load("feature_probe")
    model = MIQSAM3D(get_config("tiny", ct_extra_windows=((-600.0, 750.0),))).eval()
    case = make_phantom(5, shape=(32, 64, 64))
    c = probe.cells(model, (case.image, case.labels, case.spacing), np.random.default_rng(0), 200)
    assert c["X"].shape[0] == len(c["y"]) > 0 and c["y"].sum() > 0
