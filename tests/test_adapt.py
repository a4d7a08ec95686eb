"""Collect labelled volumes into a user data set, and adapt weights to it (library, CLI, process)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_miqsam.cli import main
from napari_miqsam.data.datasets import list_cases
from napari_miqsam.data.io import write_image, write_labels
from napari_miqsam.data.phantom import make_phantom
from napari_miqsam.data.user_dataset import CASE_FILE, add_case, class_labels, collect_files, image_key
from napari_miqsam.errors import CancelledError, InputError, ReadError, WriteError
from napari_miqsam.model.weights import DEFAULT_WEIGHTS
from napari_miqsam.training.adapt import OutputLock, adapt, file_sha256

SHAPE, SPACING = (24, 48, 48), (2.0, 1.0, 1.0)
FAST = dict(minutes=0, steps=2, patch=32, clicks=1, log=lambda *a: None)  # tiny base: seconds


def phantom(seed: int):
    c = make_phantom(seed, shape=SHAPE, spacing=SPACING)
    return c.image.astype(np.int16), c.labels, c.spacing, c.affine


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from napari_miqsam.model.config import get_config
    from napari_miqsam.model.miqsam import MIQSAM3D
    from napari_miqsam.model.weights import save_weights

    torch.manual_seed(0)
    return save_weights(MIQSAM3D(get_config("tiny")), tmp_path_factory.mktemp("base") / "tiny.safetensors", trained=True)


@pytest.fixture(scope="module")
def two_volumes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds") / "my_lesions"
    for seed in (3, 4):
        img, lab, sp, aff = phantom(seed)
        add_case(root, img, lab, sp, affine=aff)
    return root


# ------------------------------------------------------------------------------------------ collect


def test_collect_adds_one_case_per_image_and_updates_it(tmp_path):
    img, lab, sp, aff = phantom(2)  # tumours and a cyst
    root = tmp_path / "ds"
    tumours = np.where(lab == 2, 2, 0).astype(np.uint8)
    first = add_case(root, img, tumours, sp, affine=aff, source="scan.nii.gz")
    assert first.created and first.name == "case_00000" and first.cases == 1
    [ref] = list_cases(root)  # the layout training reads
    case = ref.load()
    assert np.array_equal(case.labels, tumours) and np.allclose(case.spacing, sp) and np.array_equal(case.image, img)
    card = json.loads((first.case / CASE_FILE).read_text())
    assert card["key"] == image_key(img, sp) and card["sources"] == ["scan.nii.gz"]
    # the same image again (as float32, as napari may hold it): the same case, labels merged
    cysts = np.where(lab == 3, 3, 0).astype(np.uint8)
    again = add_case(root, img.astype(np.float32), cysts, sp, affine=aff)
    assert not again.created and again.case == first.case and again.cases == 1
    merged = list_cases(root)[0].load().labels
    assert np.array_equal(merged, np.maximum(tumours, cysts))  # tumours kept, cysts added
    # replace: exactly the new labels (how a wrong label is removed)
    add_case(root, img, cysts, sp, affine=aff, mode="replace")
    assert np.array_equal(list_cases(root)[0].load().labels, cysts)
    # another image: a second case; no temporary folder left behind
    other = add_case(root, *phantom(1)[:3], affine=phantom(1)[3])
    assert other.created and other.name == "case_00001" and other.cases == 2
    assert sorted(p.name for p in root.iterdir()) == ["case_00000", "case_00001"]


def test_instances_from_the_widget_become_kind_labels():
    inst = np.zeros((4, 4, 4), np.uint16)
    inst[0, 0, :2], inst[3, 3, 3] = 1, 2
    assert set(np.unique(class_labels(inst))) == {0, 2}
    per = class_labels(inst, {1: 2, 2: 3})
    assert per[0, 0, 0] == 2 and per[3, 3, 3] == 3
    with pytest.raises(InputError, match="lesion kind"):
        class_labels(inst, 1)  # 1 is the organ


def test_collect_refuses_bad_labels_with_a_clear_error(tmp_path):
    img, lab, sp, aff = phantom(1)
    root = tmp_path / "ds"
    with pytest.raises(InputError, match="shape"):
        add_case(root, img, lab[:-1], sp)
    with pytest.raises(InputError, match="spacing"):
        add_case(root, img, lab, sp, label_spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="empty"):
        add_case(root, img, np.zeros_like(lab), sp)
    with pytest.raises(InputError, match="no lesion"):
        add_case(root, img, (lab == 1).astype(np.uint8), sp)
    with pytest.raises(InputError, match="3D"):
        add_case(root, img[0], lab[0], sp)
    msd = tmp_path / "Task03_Liver"
    (msd / "imagesTr").mkdir(parents=True)
    (msd / "labelsTr").mkdir()
    with pytest.raises(InputError, match="MSD"):
        add_case(msd, img, lab, sp)
    assert not root.exists() or not any(root.iterdir())


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_collect_into_a_read_only_folder(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    root.chmod(0o555)
    try:
        with pytest.raises(WriteError, match="not writable"):
            add_case(root, *phantom(1)[:3])
    finally:
        root.chmod(0o755)


def test_a_folder_refusing_writes_is_named_even_as_root(tmp_path, monkeypatch, tiny_base, two_volumes):
    """As the chmod test above, for any user: the folder reports no write permission."""
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False)
    with pytest.raises(WriteError, match="not writable"):
        add_case(tmp_path / "ds", *phantom(1)[:3])
    with pytest.raises(WriteError, match="not writable"):
        adapt(two_volumes, tiny_base, tmp_path / "w" / "a.safetensors", **FAST)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_full_disk_or_refused_write_leaves_nothing_half_written(tmp_path, monkeypatch, code):
    """The writer fails on the labels file (the image is already written): no case appears, and an
    update keeps the case's previous labels."""
    import napari_miqsam.data.io as io

    img, lab, sp, aff = phantom(1)
    root = tmp_path / "ds"
    real = io._write_nifti
    calls = []

    def failing(tmp, data, *a):
        calls.append(tmp)
        if len(calls) >= 2:
            raise OSError(code, os.strerror(code))
        return real(tmp, data, *a)

    monkeypatch.setattr(io, "_write_nifti", failing)
    with pytest.raises(WriteError, match="nothing was added"):
        add_case(root, img, lab, sp, affine=aff)
    assert list(root.iterdir()) == []  # neither a case folder nor a temporary one
    monkeypatch.setattr(io, "_write_nifti", real)
    add_case(root, img, np.where(lab == 2, 2, 0), sp, affine=aff)
    before = sorted(os.listdir(root / "case_00000"))
    calls.clear()
    calls.append("image already written")
    monkeypatch.setattr(io, "_write_nifti", failing)
    with pytest.raises(WriteError, match="previous labels"):
        add_case(root, img, lab, sp, affine=aff)
    monkeypatch.setattr(io, "_write_nifti", real)
    assert sorted(os.listdir(root / "case_00000")) == before  # no temporary file left
    assert np.array_equal(list_cases(root)[0].load().labels, np.where(lab == 2, 2, 0))


def test_collect_cli_from_files_labelled_elsewhere(tmp_path, capsys):
    img, lab, sp, aff = phantom(2)
    write_image(tmp_path / "scan.nii.gz", img, spacing=sp, affine=aff)
    kinds_from_1 = np.where(lab >= 2, lab - 1, 0).astype(np.uint8)  # lesions numbered 1, 2; no organ
    write_labels(tmp_path / "lesions.nii.gz", kinds_from_1, spacing=sp, affine=aff)
    root = tmp_path / "ds"
    assert main(["collect", str(tmp_path / "scan.nii.gz"), str(tmp_path / "lesions.nii.gz"), "--into", str(root),
                 "--kind-offset", "1"]) == 0
    assert "added" in capsys.readouterr().out
    assert np.array_equal(list_cases(root)[0].load().labels, np.where(lab >= 2, lab, 0))
    # the same image with a TIFF mask of one kind: the case is updated, not duplicated
    write_labels(tmp_path / "mask.tif", (lab == 3).astype(np.uint8), spacing=sp)
    assert main(["collect", str(tmp_path / "scan.nii.gz"), str(tmp_path / "mask.tif"), "--into", str(root),
                 "--as-kind", "3", "--replace"]) == 0
    assert "updated" in capsys.readouterr().out and len(list_cases(root)) == 1
    assert np.array_equal(list_cases(root)[0].load().labels, np.where(lab == 3, 3, 0))
    # labels on another grid: a one-sentence error, exit status 2
    write_labels(tmp_path / "coarse.nii.gz", lab, spacing=(3.0, 1.0, 1.0))
    assert main(["collect", str(tmp_path / "scan.nii.gz"), str(tmp_path / "coarse.nii.gz"), "--into", str(root)]) == 2
    assert "spacing" in capsys.readouterr().err
    assert collect_files(tmp_path / "scan.nii.gz", tmp_path / "lesions.nii.gz", root, kind_offset=1).cases == 1


# -------------------------------------------------------------------------------------------- adapt


def test_adapt_makes_new_weights_that_load_and_segment(tmp_path, tiny_base, two_volumes):
    from napari_miqsam.inference.predictor import Predictor
    from napari_miqsam.model.weights import load_weights

    base_hash = file_sha256(tiny_base)
    seen = []
    out = tmp_path / "mine" / "adapted.safetensors"
    res = adapt(two_volumes, tiny_base, out, progress=lambda *a: seen.append(a), **FAST)
    assert res.weights == out.resolve() and out.is_file() and res.steps == 2
    assert [(s, t) for s, t, _ in seen] == [(1, 2), (2, 2)] and all(m >= 0 for *_, m in seen)
    assert res.cases == ["case_00000"] and res.held_out == ["case_00001"]
    assert res.before["n_rows"] >= 1 and "instance_f1" in res.after
    assert res.summary().startswith("instance F1 ") and "on 1 held-out volume" in res.summary()
    card = json.loads(res.card.read_text())
    assert card["base"] == {"path": str(tiny_base), "sha256": base_hash} and card["train"] == "decoder"
    assert card["held_out_cases"] == ["case_00001"] and card["held_out_check"]["summary"] == res.summary()
    assert sorted(p.name for p in out.parent.iterdir()) == ["adapted.json", "adapted.safetensors"]  # no lock, no run folder
    assert file_sha256(tiny_base) == base_hash
    # the new file loads and segments
    predictor = Predictor.from_weights(out, device="cpu")
    img, lab, sp, _ = phantom(7)
    predictor.set_image(img, spacing=sp)
    z, y, x = np.argwhere(lab == 2)[0]
    labels, _ = predictor.predict([(z, y, x)]).labels()
    assert labels.shape == img.shape
    # decoder-only: the encoder is exactly the base's, the prompt side learnt
    new, meta = load_weights(out)
    old, _ = load_weights(tiny_base)
    new_sd, old_sd = new.state_dict(), old.state_dict()
    assert all(torch.equal(new_sd[k], old_sd[k]) for k in new_sd if k.startswith(("encoder.", "refiner.")))
    assert any(not torch.equal(new_sd[k], old_sd[k]) for k in new_sd if k.startswith("decoder."))
    assert meta["adapted_from"] == str(tiny_base)


def test_cancel_leaves_no_weights_file(tmp_path, tiny_base, two_volumes):
    out = tmp_path / "adapted.safetensors"
    steps = []
    with pytest.raises(CancelledError, match="no weights were written"):
        adapt(two_volumes, tiny_base, out, progress=lambda s, *_: steps.append(s), cancel=lambda: len(steps) >= 1,
              held_out=0, **{**FAST, "steps": 50})
    assert steps == [1] and list(tmp_path.iterdir()) == []  # no weights, card, lock or run folder


def test_a_full_disk_while_adapting_leaves_no_weights_file(tmp_path, tiny_base, two_volumes, monkeypatch):
    import napari_miqsam.training.loop as loop

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(loop, "save_weights", full)
    with pytest.raises(WriteError, match="disk is full"):
        adapt(two_volumes, tiny_base, tmp_path / "adapted.safetensors", held_out=0, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_adapt_never_overwrites_shipped_or_base_weights(tmp_path, tiny_base, two_volumes):
    shipped = file_sha256(DEFAULT_WEIGHTS)
    with pytest.raises(WriteError, match="shipped"):
        adapt(two_volumes, "default", DEFAULT_WEIGHTS, overwrite=True, **FAST)
    with pytest.raises(WriteError, match="shipped"):
        adapt(two_volumes, tiny_base, DEFAULT_WEIGHTS.with_name("mine.safetensors"), **FAST)
    with pytest.raises(WriteError, match="base weights"):
        adapt(two_volumes, tiny_base, tiny_base, overwrite=True, **FAST)
    (tmp_path / "taken.safetensors").write_bytes(b"x")
    with pytest.raises(WriteError, match="exists"):
        adapt(two_volumes, tiny_base, tmp_path / "taken.safetensors", **FAST)
    with pytest.raises(InputError, match="safetensors"):
        adapt(two_volumes, tiny_base, tmp_path / "new.pt", **FAST)
    assert file_sha256(DEFAULT_WEIGHTS) == shipped
    assert sorted(p.name for p in DEFAULT_WEIGHTS.parent.iterdir()) == ["miqsam_cpu.json", "miqsam_cpu.safetensors"]


def test_bad_data_and_a_second_adapt_get_clear_errors(tmp_path, tiny_base, two_volumes):
    with pytest.raises(ReadError, match="no labelled volume"):
        adapt(tmp_path, tiny_base, tmp_path / "a.safetensors", **FAST)  # an empty data set
    with pytest.raises(ReadError, match="no such data set"):
        adapt(tmp_path / "missing", tiny_base, tmp_path / "a.safetensors", **FAST)
    with pytest.raises(InputError, match="train must be"):
        adapt(two_volumes, tiny_base, tmp_path / "a.safetensors", train="encoder", **FAST)
    out = tmp_path / "busy.safetensors"
    with OutputLock(out.resolve()):  # another adaptation (this process: alive) is writing it
        with pytest.raises(WriteError, match="another adaptation"):
            adapt(two_volumes, tiny_base, out, **FAST)
    assert not out.exists() and not (tmp_path / "busy.safetensors.lock").exists()
    # a lock left by a process that is gone is taken over
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "busy.safetensors.lock").write_text(gone.stdout.strip())
    with OutputLock(out.resolve()) as lock:
        assert lock.held and (tmp_path / "busy.safetensors.lock").read_text() == str(os.getpid())


def test_the_default_budget_is_a_number_of_steps_per_volume_trained_on(tmp_path, tiny_base, two_volumes):
    from napari_miqsam.training.adapt import STEPS_PER_VOLUME, default_steps

    assert default_steps(1) == STEPS_PER_VOLUME and default_steps(4) == 4 * STEPS_PER_VOLUME
    seen = []
    res = adapt(two_volumes, tiny_base, tmp_path / "auto.safetensors", patch=32, clicks=1, log=lambda *a: None,
                progress=lambda step, total, minutes: seen.append((step, total)))  # no steps, no minutes
    assert res.steps == STEPS_PER_VOLUME and len(res.cases) == 1 and len(res.held_out) == 1  # one trained on
    assert seen[-1] == (STEPS_PER_VOLUME, STEPS_PER_VOLUME)  # the total is known from the first step
    card = json.loads(res.card.read_text())
    assert card["steps"] == card["budget_steps"] == STEPS_PER_VOLUME and card["budget_minutes"] == 0
    for bad in (dict(minutes=-1.0), dict(steps=-3), dict(minutes=float("nan"))):
        with pytest.raises(InputError, match="must be >= 0"):
            adapt(two_volumes, tiny_base, tmp_path / "bad.safetensors", **{**FAST, **bad})
    assert not (tmp_path / "bad.safetensors").exists()


def test_cli_adapt_end_to_end_on_one_volume(tmp_path, tiny_base, capsys):
    img, lab, sp, aff = phantom(5)
    write_image(tmp_path / "scan.nii.gz", img, spacing=sp, affine=aff)
    write_labels(tmp_path / "scan_seg.nii.gz", lab, spacing=sp, affine=aff)
    root = tmp_path / "ds"
    assert main(["collect", str(tmp_path / "scan.nii.gz"), str(tmp_path / "scan_seg.nii.gz"), "--into", str(root)]) == 0
    out = tmp_path / "weights" / "new.safetensors"
    rc = main(["adapt", str(root), "--weights", str(tiny_base), "--minutes", "0", "--steps", "2", "-o", str(out),
               "--patch", "32", "--train", "all"])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file() and "no held-out check was possible" in text
    assert json.loads(out.with_suffix(".json").read_text())["train"] == "all"
    assert main(["adapt", str(root), "--weights", str(tiny_base), "--steps", "2", "-o", str(out)]) == 2  # exists
    assert "exists" in capsys.readouterr().err


def test_adapt_job_runs_in_another_process(tmp_path, tiny_base, two_volumes, monkeypatch):
    from napari_miqsam.training.adapt_job import AdaptJob
    from napari_miqsam.user_weights import list_user_weights, new_weights_path

    monkeypatch.setenv("NAPARI_MIQSAM_WEIGHTS_DIR", str(tmp_path / "user"))
    out = new_weights_path()
    assert out.parent == tmp_path / "user"
    job = AdaptJob(data=two_volumes, base=tiny_base, out=out, minutes=0, steps=2, patch=32, clicks=1).start()
    events = job.wait(timeout=240)
    kinds = [e[0] for e in events]
    assert kinds[-1] == "done", events[-1]
    assert [e[1] for e in events if e[0] == "progress"] == [1, 2] and "log" in kinds
    result = events[-1][1]
    assert result.weights == out and out.is_file() and not job.running
    [(path, card)] = list_user_weights()
    assert path == out and card["held_out_cases"] == ["case_00001"]


def test_the_summary_says_when_the_starting_weights_found_nothing():
    from napari_miqsam.training.adapt import held_out_summary

    known = held_out_summary({"instance_f1": 0.40, "dice": 0.50, "n_rows": 2}, {"instance_f1": 0.45, "dice": 0.55},
                             1, 3)
    assert known == "instance F1 0.40 -> 0.45, Dice 0.50 -> 0.55 on 1 held-out volume"
    new_kind = held_out_summary({"instance_f1": 0.0, "dice": 0.0, "n_rows": 2}, {"instance_f1": 0.04, "dice": 0.11},
                                1, 5)
    assert new_kind.startswith("instance F1 0.00 -> 0.04, Dice 0.00 -> 0.11 on 1 held-out volume. ")
    assert "whole network" in new_kind and "1000 steps" in new_kind
    learned = held_out_summary({"instance_f1": 0.0, "dice": 0.0, "n_rows": 2}, {"instance_f1": 0.74, "dice": 0.76},
                               1, 5)
    assert learned.endswith("on 1 held-out volume")  # once it has learned them, no advice
