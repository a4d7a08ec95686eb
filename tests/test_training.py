"""Training: matching, losses, sampling, a few real steps, and 2-process DDP on CPU (gloo)."""

import json
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from napari_miqsam.training.losses import dice_loss, layer_loss, LossWeights, set_criterion
from napari_miqsam.training.matching import match_queries
from napari_miqsam.training.sampling import PreparedCase, augment, boundary_target, collate, sample_example
from napari_miqsam.model.head import LayerOutput


def test_matching_finds_the_right_pairs():
    v = 100
    targets = torch.zeros(2, v)
    targets[0, :10] = 1
    targets[1, 50:70] = 1
    probs = torch.full((4, v), 0.01)
    probs[3, 50:70] = 0.95  # query 3 covers target 1
    probs[1, :10] = 0.9  # query 1 covers target 0
    qi, ti = match_queries(probs, torch.tensor([0.5, 0.5, 0.5, 0.5]), targets)
    assert dict(zip(ti.tolist(), qi.tolist())) == {0: 1, 1: 3}
    qi, ti = match_queries(probs, torch.ones(4), torch.zeros(0, v))
    assert len(qi) == 0


def test_losses_prefer_the_right_answer():
    t = torch.zeros(1, 2, 4, 4, 4)
    t[0, 0, :2] = 1.0
    t[0, 1, 3:] = 1.0
    good = torch.full((1, 3, 4, 4, 4), -8.0)
    good[0, 0, :2] = 8.0
    good[0, 2, 3:] = 8.0
    bg = torch.zeros(1, 1, 4, 4, 4)
    bg[0, 0, 2] = 8.0
    scores = torch.tensor([[5.0, -5.0, 5.0]])
    lg = layer_loss(LayerOutput(good, scores, bg, True), [t[0]], LossWeights())
    lb = layer_loss(LayerOutput(torch.zeros_like(good), -scores, bg, True), [t[0]], LossWeights())
    for k in ("mask", "dice", "conf"):
        assert lg[k] < lb[k] and lg[k] < 0.05, k
    assert dice_loss(torch.ones(1, 5), torch.ones(1, 5)) < 1e-6


def test_instance_term_weighs_a_missed_small_lesion_like_a_large_one():
    # one large lesion (32 cells) found, one single-cell lesion missed: the patch-mean voxel loss
    # barely notices the miss, the per-instance term counts it as half the instances
    t = torch.zeros(2, 4, 4, 4)
    t[0, :2] = 1.0
    t[1, 3, 3, 3] = 1.0
    logits = torch.full((1, 2, 4, 4, 4), -8.0)
    logits[0, 0, :2] = 8.0
    bg = torch.zeros(1, 1, 4, 4, 4)
    scores = torch.tensor([[5.0, 5.0]])
    missed = layer_loss(LayerOutput(logits, scores, bg, True), [t], LossWeights(instance=1.0))
    found = logits.clone()
    found[0, 1, 3, 3, 3] = 8.0
    both = layer_loss(LayerOutput(found, scores, bg, True), [t], LossWeights(instance=1.0))
    assert both["instance"] < 0.01
    assert missed["instance"] > 3.0  # (0 + ~8) / 2 instances
    assert missed["mask"] < 0.2  # the same miss, averaged over the 64 cells
    # without competition the term reads the matched query's own sigmoid
    nc = layer_loss(LayerOutput(logits, scores, None, False), [t], LossWeights(instance=1.0))
    assert nc["instance"] > 3.0
    # weight 0 (the default) leaves the total as it was
    out = [LayerOutput(logits, scores, bg, True)]
    sal, sal_t = torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4)
    off = set_criterion(out, [t], sal, sal_t)["loss"]
    on = set_criterion(out, [t], sal, sal_t, w=LossWeights(instance=1.0))["loss"]
    assert torch.isclose(on - off, missed["instance"])


def toy_case(seed=0) -> PreparedCase:
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 0.1, (40, 40, 40)).astype(np.float32)
    cls = np.zeros((40, 40, 40), np.uint8)
    inst = np.zeros((40, 40, 40), np.int32)
    cls[5:35, 5:35, 5:35] = 1
    for i, (c, sl) in enumerate([(2, np.s_[8:14, 8:14, 8:14]), (2, np.s_[25:31, 25:33, 10:16]), (3, np.s_[10:15, 25:30, 25:30])], start=1):
        cls[sl], inst[sl] = c, i
        img[sl] = -0.5 if c == 2 else -0.2
    return PreparedCase(img, cls, inst, np.array([0, 2, 2, 3], np.int16))


def test_sample_example_targets_all_instances_of_the_clicked_class():
    case = toy_case()
    rng = np.random.default_rng(1)
    for _ in range(10):
        ex = sample_example(case, 32, rng, neg_prob=1.0)
        z, y, x = ex.points[0].round().long().tolist()
        assert ex.labels[0] == 1
        assert ex.image.shape == (1, 32, 32, 32) and ex.targets.shape[1:] == (16, 16, 16)
        # the click lies inside one of the target instances
        assert any(ex.targets[k, z // 2, y // 2, x // 2] > 0 for k in range(len(ex.targets)))
        ex2 = augment(ex, rng)
        assert ex2.targets.sum() == pytest.approx(ex.targets.sum())
    sal = boundary_target(case.classes)
    assert sal.shape == (1, 5, 5, 5) and 0 < sal.mean() < 1


def test_extra_positive_clicks_land_on_lesions_of_the_clicked_kind():
    case = toy_case()  # two tumours (class 2) and a cyst
    counts = set()
    for seed in range(20):
        ex = sample_example(case, 40, np.random.default_rng(seed), neg_prob=0.0, extra_pos_prob=1.0, extra_pos_max=3)
        pos = ex.points[ex.labels == 1].round().long()
        counts.add(len(pos))
        for z, y, x in pos.tolist():  # every positive click lies on a target (a lesion of the clicked kind)
            assert any(ex.targets[k, z // 2, y // 2, x // 2] > 0 for k in range(len(ex.targets)))
    assert counts == {1, 4}  # a cyst click (one cyst: no other target) or all three extra clicks on tumours
    for seed in range(20):  # the default: at most one extra click
        assert (sample_example(case, 40, np.random.default_rng(seed), extra_pos_prob=1.0).labels == 1).sum() <= 2


def test_a_patch_larger_than_the_case_takes_the_case_whole_and_flips_follow_each_axis():
    case = toy_case()  # 40^3
    wide = PreparedCase(np.pad(case.image, ((0, 0), (0, 0), (0, 20)), constant_values=-1.0),
                        np.pad(case.classes, ((0, 0), (0, 0), (0, 20))), np.pad(case.instances, ((0, 0), (0, 0), (0, 20))),
                        case.instance_class)  # 40 x 40 x 60
    rng = np.random.default_rng(3)
    ex = sample_example(wide, 64, rng)
    assert ex.image.shape == (1, 40, 40, 64)  # each side rounded up to a multiple of 8, not a 64^3 cube
    assert ex.targets.shape[1:] == (20, 20, 32) and ex.kinds.shape[1:] == (20, 20, 32) and ex.saliency.shape[1:] == (5, 5, 8)
    # every target instance is inside the patch whole: a whole case cuts nothing at its borders
    sizes = sorted(round(float(v) * 8) for v in ex.targets.sum(dim=(1, 2, 3)))
    by_class = {c: sorted(int((wide.instances == i).sum()) for i in range(1, len(wide.instance_class))
                          if wide.instance_class[i] == c) for c in (2, 3)}
    assert sizes in (by_class[2], by_class[3])
    for _ in range(8):
        flipped = augment(ex, rng)
        z, y, x = flipped.points[0].round().long().tolist()
        assert any(flipped.targets[k, z // 2, y // 2, x // 2] > 0 for k in range(len(flipped.targets)))
    # a batch of different shapes is padded to the largest: air, no targets, background kind
    small = sample_example(case, 64, rng)
    batch = collate([ex, small])
    assert batch["image"].shape == (2, 1, 40, 40, 64)
    assert float(batch["image"][1, 0, :, :, 40:].max()) == -1.0
    assert batch["kinds"].shape == (2, 3, 20, 20, 32)
    assert torch.allclose(batch["kinds"][1, 0, :, :, 20:], torch.ones(1))
    assert torch.allclose(batch["kinds"].sum(1), torch.ones(1))
    assert batch["targets"][1].shape[1:] == (20, 20, 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out, refine_only=False):
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from napari_miqsam.training.loop import TrainOptions, train

    res = train(TrainOptions(config="tiny", data="phantom", out=str(out), steps=3, batch=1, patch=32, pool=1,
                             cases=4, warmup=1, checkpoint_every=100, device="cpu", phantom_shape=(32, 64, 64),
                             refine_only=refine_only, lr=1e-2 if refine_only else 1e-3),
                log=lambda *a: None)
    torch.save({k: v.clone() for k, v in res.model.state_dict().items()}, out / f"rank{rank}.pt")
    import torch.distributed as dist

    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("refine_only", [False, True])
def test_ddp_two_processes_hold_identical_weights(tmp_path, refine_only):
    """Both stages: the network through DDP, the refiner's own stage through hand-averaged gradients."""
    mp.spawn(_ddp_worker, args=(2, _free_port(), tmp_path, refine_only), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    init = __import__("napari_miqsam.model.miqsam", fromlist=["x"])
    torch.manual_seed(0)
    fresh = init.MIQSAM3D(__import__("napari_miqsam.model.config", fromlist=["x"]).get_config("tiny")).state_dict()
    changed = {k for k in a if not torch.equal(a[k], fresh[k])}
    assert changed  # and they did train
    assert all(k.startswith("refiner.") for k in changed) == refine_only  # the refiner's stage trains it alone
    assert (tmp_path / "miqsam_tiny.safetensors").exists() and (tmp_path / "checkpoint.pt").exists()


def test_resume_continues_from_the_checkpoint(tmp_path):
    from napari_miqsam.model.weights import load_weights
    from napari_miqsam.training.loop import TrainOptions, train

    opt = dict(config="tiny", data="phantom", out=str(tmp_path), batch=1, patch=32, pool=1, cases=2, warmup=1,
               checkpoint_every=1, device="cpu", phantom_shape=(32, 64, 64))
    first = train(TrainOptions(steps=2, **opt), log=lambda *a: None)
    assert first.steps == 2
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2
    for group in state["optim"]["param_groups"]:  # as written before per-group rates (--new-lr-mult) existed
        del group["lr_mult"]
    torch.save(state, tmp_path / "checkpoint.pt")
    logs = []
    second = train(TrainOptions(steps=3, resume=True, **opt), log=logs.append)
    assert second.steps == 3 and any("resumed" in m and "step 2" in m for m in logs)
    model, meta = load_weights(second.weights)
    assert meta["trained"] == "true" and meta["steps"] == "3"
    assert json.loads(meta["kind_names"]) == ["tumour", "cyst"]  # the phantoms' (KiTS) lesion labels 2, 3


def test_kind_names_come_from_the_data_set(tmp_path):
    from napari_miqsam.training.sources import kind_names

    assert kind_names("phantom") == ["tumour", "cyst"]
    assert kind_names("phantom", kinds=1) == ["tumour"]
    root = tmp_path / "Task03_Liver"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    assert kind_names(str(root), "msd") == ["label 2", "label 3"]  # no dataset.json: numbers
    (root / "dataset.json").write_text('{"labels": {"0": "background", "1": "liver", "2": "Cancer"}}')  # MSD form
    assert kind_names(str(tmp_path)) == ["cancer", "label 3"]
    (root / "dataset.json").write_text('{"labels": {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3}}')  # nnU-Net v2
    assert kind_names(str(root)) == ["tumor", "cyst"]
    (root / "dataset.json").write_text("{not json")
    assert kind_names(str(root)) == ["label 2", "label 3"]  # names are for display: never an error


def test_a_data_set_whose_lesion_is_label_1_trains(tmp_path):
    """MSD Task06 Lung / Task10 Colon: label 1 is the cancer (no organ label). Training must take it as
    lesion kind 1 (before: no instances, "ten cases in a row had no lesion"), and name it."""
    import nibabel as nib

    from napari_miqsam.data.phantom import make_phantom
    from napari_miqsam.model.weights import load_weights
    from napari_miqsam.training.loop import TrainOptions, train
    from napari_miqsam.training.sources import CasePool, case_loader, kind_names, lesion_labels

    root = tmp_path / "Task06_Lung"
    for i in range(5):
        c = make_phantom(40 + i, shape=(24, 48, 48), spacing=(3.0, 2.0, 2.0))
        aff = np.diag([2.0, 2.0, 3.0, 1.0])
        for sub, arr in (("imagesTr", c.image.astype(np.float32)), ("labelsTr", (c.labels == 2).astype(np.uint8))):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0), aff), str(root / sub / f"lung_{i}.nii.gz"))
    n, load, held = case_loader(str(root))
    assert n == 5 and held == []  # nothing held out unless asked
    assert lesion_labels(str(root), load=load, n_cases=n) == (1,)  # no dataset.json: read from the cases
    (root / "dataset.json").write_text('{"labels": {"0": "background", "1": "cancer"}}')
    assert lesion_labels(str(root)) == (1,) and kind_names(str(root), classes=(1,)) == ["cancer", "unused kind 2"]
    from napari_miqsam.model.config import get_config

    pool = CasePool(n, load, get_config("tiny"), 2, lesion_classes=(1,))
    ex = sample_example(pool.cases[0], 32, np.random.default_rng(0))
    assert ex.kinds.shape[0] == 2 and float(ex.kinds[1].max()) > 0.5  # the cancer is lesion kind 1
    logs = []
    res = train(TrainOptions(config="tiny", data=str(root), out=str(tmp_path / "run"), steps=2, batch=1, patch=32,
                             pool=2, warmup=1, device="cpu", val_every=2, val_cases=3), log=logs.append)
    assert any("trained as kinds 1..1: 1" in m for m in logs)
    # validation on the set's own last case (a fifth of five), kept out of training, scored on label 1
    assert any("validating on 1 held-out cases (lung_4)" in m for m in logs)
    assert any(m.startswith("step 2: validation {'dice'") for m in logs)
    n, _, held = case_loader(str(root), hold_out=3)
    assert n == 4 and [r.name for r in held] == ["lung_4"] and case_loader("phantom", hold_out=3)[2] == []
    assert case_loader(str(root), hold_out=0)[2] == []
    _, meta = load_weights(res.weights)
    assert json.loads(meta["kind_names"]) == ["cancer", "unused kind 2"]


def test_single_query_learns_the_union_of_targets():
    """Without PC-IQG (one query) the target is the union of the instances."""
    t = torch.zeros(2, 4, 4, 4)
    t[0, 0] = 1.0
    t[1, 3] = 1.0
    union = torch.full((1, 1, 4, 4, 4), -8.0)
    union[0, 0, 0] = union[0, 0, 3] = 8.0
    bg = torch.zeros(1, 1, 4, 4, 4)
    one = layer_loss(LayerOutput(union, torch.tensor([[5.0]]), bg, True), [t], LossWeights())
    assert one["dice"] < 0.01 and one["mask"] < 0.01


def test_kind_target_marks_each_lesion_kind():
    from napari_miqsam.training.losses import kind_loss
    from napari_miqsam.training.sampling import kind_target

    classes = np.zeros((4, 4, 4), dtype=np.uint8)
    classes[:2] = 1  # organ counts as "no lesion"
    classes[0, 0, :2] = 2  # one stride-2 cell half tumour
    classes[2:, 2:, 2:] = 3  # one cell fully cyst
    t = kind_target(classes)
    assert t.shape == (3, 2, 2, 2)
    assert torch.allclose(t.sum(0), torch.ones(2, 2, 2))
    assert t[1, 0, 0, 0] == 0.25 and t[2, 1, 1, 1] == 1.0 and t[0, 0, 1, 1] == 1.0
    good = torch.log(t.clamp(min=1e-3))[None]
    assert kind_loss(good, t[None]) < kind_loss(torch.zeros_like(good), t[None])
    # a dataset with one lesion kind (LiTS) trains a two-kind head: targets are zero-padded
    one_kind = kind_target(classes, lesion_classes=(2,))
    assert one_kind.shape == (2, 2, 2, 2)
    assert torch.isclose(kind_loss(torch.zeros(1, 3, 2, 2, 2), one_kind[None], dice_weight=0), torch.log(torch.tensor(3.0)))


def test_kind_loss_does_not_let_small_lesions_be_called_background():
    from napari_miqsam.training.losses import kind_loss

    t = torch.zeros(1, 3, 4, 4, 4)
    t[0, 0] = 1.0
    t[0, 0, 0, 0, 0], t[0, 1, 0, 0, 0] = 0.0, 1.0  # one tumour cell in 64
    background = torch.zeros(1, 3, 4, 4, 4)
    background[:, 0] = 4.0  # calls everything background, the small lesion too
    right = torch.log(t.clamp(min=1e-3))
    # cross-entropy alone barely minds (1 cell of 64 wrong); with the Dice term the miss costs a lot
    ce_gap = kind_loss(background, t, dice_weight=0) - kind_loss(right, t, dice_weight=0)
    gap = kind_loss(background, t) - kind_loss(right, t)
    assert ce_gap < 0.2 and gap > 0.5 and gap > 5 * ce_gap


def test_lesions_smaller_than_a_cell_still_mark_their_cell():
    """Occupancy targets call a sub-cell lesion background; peak normalisation gives it its cell."""
    from napari_miqsam.training.sampling import kind_target, peak_normalised

    occ = torch.zeros(2, 4, 4, 4)
    occ[0, 0, 0, 0], occ[0, 0, 0, 1] = 0.25, 0.125  # a lesion filling a quarter of its best cell
    occ[1, 1:3, 1:3, 1:3], occ[1, 0, 0, 0] = 1.0, 0.5  # a large one: unchanged
    t = peak_normalised(occ)
    assert t[0, 0, 0, 0] == 1.0 and t[0, 0, 0, 1] == 0.5 and torch.equal(t[1], occ[1])
    classes = np.zeros((8, 8, 8), np.uint8)
    inst = np.zeros((8, 8, 8), np.int32)
    classes[1, 1, 1], inst[1, 1, 1] = 2, 1  # a one-voxel tumour: an eighth of cell (0, 0, 0)
    classes[4:, 4:, 4:], inst[4:, 4:, 4:] = 3, 2  # a cyst of whole cells
    plain, raised = kind_target(classes), kind_target(classes, instances=inst)
    assert plain[0, 0, 0, 0] == 0.875  # background wins the tumour's cell...
    assert torch.equal(raised[:, 0, 0, 0], torch.tensor([0.0, 1.0, 0.0]))  # ...unless raised
    assert torch.equal(raised[:, 1:, 1:, 1:], plain[:, 1:, 1:, 1:])
    assert torch.allclose(raised.sum(0), torch.ones(1))


def test_scale_jitter_prepares_cases_on_grids_around_the_config_spacing():
    from napari_miqsam.model.config import get_config
    from napari_miqsam.training.sources import CasePool

    cfg = get_config("tiny")  # spacing (1, 1, 1) mm
    base = tuple(cfg.spacing)
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[5:25, 5:25, 5:25] = 1
    labels[8:16, 8:16, 8:16] = 2
    labels[18:23, 18:23, 18:23] = 3

    def load(i):
        return np.where(labels == 2, 20.0, 60.0).astype(np.float32), labels, (2.0, 2.0, 2.0), f"c{i}"

    plain = CasePool(4, load, cfg, 2, seed=0)
    assert {c.image.shape for c in plain.cases} == {(60, 60, 60)}  # 60 mm at 1 mm
    pool = CasePool(40, load, cfg, 30, seed=0, scale_jitter=0.3)
    sides = [c.image.shape[0] for c in pool.cases]
    factors = [pool.model_spacing()[0] / base[0] for _ in range(200)]
    assert 1 / 1.3 - 1e-9 <= min(factors) < 0.85 and 1.15 < max(factors) <= 1.3 + 1e-9
    assert min(sides) < 56 and max(sides) > 64  # coarser and finer grids than the config's
    for c in pool.cases:  # the labels follow the image onto each grid: both lesions are there
        assert c.image.shape == c.classes.shape == c.instances.shape
        assert sorted(c.instance_class[1:].tolist()) == [2, 3]
    with pytest.raises(ValueError, match="scale_jitter"):
        CasePool(4, load, cfg, 2, scale_jitter=-0.1)


def _lesion_case(i):
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[5:25, 5:25, 5:25] = 1
    labels[8:16, 8:16, 8:16] = 2
    labels[18:23, 18:23, 18:23] = 3
    return np.where(labels == 2, 20.0, 60.0).astype(np.float32), labels, (2.0, 2.0, 2.0), f"c{i}"


def test_example_stream_workers_prepare_their_own_shard_of_the_cases(monkeypatch):
    """Worker 1 of 3 on rank 1 of 2 is shard 4 of 6: it loads cases 4, 10, 16, ... and no other."""
    from types import SimpleNamespace

    from napari_miqsam.model.config import get_config
    from napari_miqsam.training import loader

    loaded = []

    def load(i):
        loaded.append(i)
        return _lesion_case(i)

    monkeypatch.setattr(loader, "get_worker_info", lambda: SimpleNamespace(id=1, num_workers=3))
    stream = loader.ExampleStream(60, load, get_config("tiny"), patch=32, pool=6, draws_per_refresh=2, seed=0,
                                  rank=1, world=2)
    examples = [ex for _, ex in zip(range(12), stream)]
    assert len(examples) == 12 and all(ex.image.shape[1:] == (32, 32, 32) for ex in examples)
    # its third of the pool (2 cases), then a new case after draws 2, 4, 6, 8, 10 (the 12th is not yet resumed)
    assert len(loaded) == 2 + 5
    assert all(i % 6 == 4 for i in loaded) and len(set(loaded)) == len(loaded)
    with pytest.raises(ValueError, match="more shards than the 60 cases"):
        loader.example_batches(stream, batch=2, workers=31)  # 31 workers x 2 ranks
    with pytest.raises(ValueError, match="draws_per_refresh"):
        loader.ExampleStream(60, load, get_config("tiny"), patch=32, pool=6, draws_per_refresh=0, seed=0)


def test_time_budget_ends_training_and_its_cosine():
    from napari_miqsam.training.loop import TrainOptions, lr_at, progress

    opt = TrainOptions(steps=1000, warmup=10, lr=1e-3, minutes=2.0)
    assert progress(100, 60.0, opt) == 0.5  # half the budget before a tenth of the steps
    assert progress(900, 60.0, opt) == 0.9  # steps first
    assert lr_at(100, opt, 119.0) > 0.02e-3 and lr_at(100, opt, 120.0) == pytest.approx(0.02e-3)
    assert lr_at(100, opt, 60.0) == pytest.approx(1e-3 * (0.02 + 0.98 * 0.5))
    no_budget = TrainOptions(steps=1000, warmup=10, lr=1e-3)
    assert progress(100, 1e6, no_budget) == 0.1 and lr_at(100, no_budget, 1e6) == lr_at(100, no_budget)


def test_training_from_worker_processes_stops_at_its_time_budget(tmp_path):
    """The GPU recipe's data path (--workers) and time budget (--minutes), on the CPU."""
    from napari_miqsam.model.weights import load_weights
    from napari_miqsam.training.loop import TrainOptions, train

    opt = TrainOptions(config="tiny", data="phantom", out=str(tmp_path), steps=100_000, batch=2, patch=32, pool=4,
                       cases=8, warmup=1, device="cpu", phantom_shape=(32, 64, 64), workers=2, minutes=0.1)
    res = train(opt, log=lambda *a: None)
    assert 1 <= res.steps < 100_000 and 0.1 <= res.minutes < 1.0
    _, meta = load_weights(res.weights)
    assert meta["steps"] == str(res.steps)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == res.steps  # saved at the end


def _plain_kind_target(classes, lesion_classes=(2, 3)):
    """kind_target's first step by its definition: a one-hot map of (not a lesion, kinds) pooled."""
    kind = np.zeros(classes.shape, dtype=np.int64)
    for k, c in enumerate(lesion_classes, start=1):
        kind[classes == c] = k
    onehot = torch.nn.functional.one_hot(torch.from_numpy(kind), len(lesion_classes) + 1).permute(3, 0, 1, 2).float()
    return torch.nn.functional.avg_pool3d(onehot[None], 2)[0]


def test_fast_targets_equal_their_plain_definitions():
    """instance_occupancy and kind_target pool only what they must; the numbers are those of pooling
    whole-patch one-hot maps (random blobby lesions, touching the patch border too)."""
    from scipy import ndimage as ndi

    from napari_miqsam.training.sampling import instance_occupancy, kind_target

    rng = np.random.default_rng(3)
    for shape in [(32, 40, 48), (16, 16, 24)]:
        blobs = ndi.gaussian_filter(rng.random(shape), 1.5) > 0.56
        instances, n = ndi.label(blobs)
        classes = np.ones(shape, np.uint8)
        kinds = rng.choice([2, 3], size=n + 1)
        classes[instances > 0] = kinds[instances[instances > 0]]
        assert n >= 4
        ids = [i for i in range(1, n + 1) if i % 3 != 0]  # a subset, as the clicked class's instances
        plain = torch.nn.functional.avg_pool3d(
            torch.from_numpy(np.stack([instances == i for i in ids]).astype(np.float32))[None], 2)[0]
        assert torch.equal(instance_occupancy(instances.astype(np.int32), ids), plain)
        assert torch.equal(kind_target(classes), _plain_kind_target(classes))


def test_kind_weight_scales_the_kind_term_and_reaches_the_loop(monkeypatch):
    """--kind-weight W: the total grows by (W - 1) x the kind loss, and the CLI passes W on."""
    torch.manual_seed(0)
    t = torch.zeros(1, 8, 8, 8)
    t[0, 2:5, 2:5, 2:5] = 1.0
    out = [LayerOutput(torch.randn(1, 3, 8, 8, 8), torch.zeros(1, 3), torch.zeros(1, 1, 8, 8, 8), True)]
    sal, sal_t = torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8)
    kind_logits = torch.randn(1, 3, 8, 8, 8)
    kind_t = torch.zeros(1, 3, 8, 8, 8)
    kind_t[:, 0] = 1.0
    kind_t[:, 0, 2:5, 2:5, 2:5], kind_t[:, 1, 2:5, 2:5, 2:5] = 0.0, 1.0
    one = set_criterion(out, [t], sal, sal_t, kind_logits, kind_t, w=LossWeights(kind=1.0))
    four = set_criterion(out, [t], sal, sal_t, kind_logits, kind_t, w=LossWeights(kind=4.0))
    assert one["kind"] > 0
    assert torch.isclose(four["loss"] - one["loss"], 3 * one["kind"])

    import napari_miqsam.training.loop as loop
    from napari_miqsam.cli import main

    seen = []
    monkeypatch.setattr(loop, "train", lambda opt, *a, **k: seen.append(opt))
    assert main(["train", "--config", "tiny", "--steps", "1", "--kind-weight", "4"]) == 0
    assert main(["train", "--config", "tiny", "--steps", "1"]) == 0
    assert [o.kind_weight for o in seen] == [4.0, LossWeights.kind]
    assert main(["train", "--config", "tiny", "--steps", "1", "--extra-clicks", "3", "--extra-click-prob", "0.5"]) == 0
    assert (seen[-1].extra_clicks, seen[-1].extra_click_prob) == (3, 0.5) and (seen[0].extra_clicks, seen[0].extra_click_prob) == (1, 0.2)
    assert main(["train", "--config", "tiny", "--steps", "1", "--extra-click-prob", "1.5"]) == 2


def test_blocks_added_to_init_weights_train_at_their_own_rate(tmp_path):
    """--init a smaller network + mask_blocks + --new-lr-mult: the schedule scales the new group's rate."""
    from napari_miqsam.model.weights import load_weights
    from napari_miqsam.training.loop import TrainOptions, train

    opt = dict(config="tiny", data="phantom", batch=1, patch=32, pool=1, cases=2, warmup=1, checkpoint_every=1,
               device="cpu", phantom_shape=(32, 64, 64))
    first = train(TrainOptions(steps=1, out=str(tmp_path / "a"), **opt), log=lambda *a: None)
    logs = []
    second = train(TrainOptions(steps=2, out=str(tmp_path / "b"), init=str(first.weights), new_lr_mult=7.0,
                                ablation={"mask_blocks": 1}, **opt), log=logs.append)
    assert any("kept fresh" in m and "pixel_decoder.blocks.0" in m for m in logs)
    groups = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["optim"]["param_groups"]
    assert [g["lr_mult"] for g in groups] == [1.0, 7.0]
    assert groups[1]["lr"] == pytest.approx(7.0 * groups[0]["lr"])
    model, _ = load_weights(second.weights)
    assert model.cfg.mask_blocks == 1 and model.encoder.pixel_decoder.blocks[0].body[-1].weight.abs().sum() > 0


def test_variable_patch_sizes_draw_one_side_per_batch(monkeypatch):
    """--patch-sizes: every batch is one side of the list (drawn per step, the batch's examples
    alike; a worker's batches are its consecutive examples, drawn the same way by loader.examples),
    all of them turn up, and a single --patch draws nothing from the generator."""
    from types import SimpleNamespace

    from napari_miqsam.cli import main
    from napari_miqsam.training import loader
    import napari_miqsam.training.loop as loop
    from napari_miqsam.training.sampling import draw_patch

    case = toy_case()  # 40^3: larger than every side drawn
    pool = SimpleNamespace(pick=lambda: case, refresh=lambda: None)
    batches = loader.in_process_batches(pool, (16, 24, 32), 2, np.random.default_rng(0), refresh_every=4)
    sides = set()
    for _ in range(12):
        b = next(batches)
        side = b["image"].shape[-1]
        assert b["image"].shape[1:] == (1, side, side, side) and b["targets"][1].shape[1:] == (side // 2,) * 3
        sides.add(side)
    assert sides == {16, 24, 32}
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    assert draw_patch(32, rng) == 32 and draw_patch((24,), rng) == 24 and rng.bit_generator.state == state
    with pytest.raises(ValueError, match="multiples of 8"):
        draw_patch((24, 30), rng)
    # the option reaches the loop from the command line, and a bad side is refused
    seen = []
    monkeypatch.setattr(loop, "train", lambda opt, *a, **k: seen.append(opt))
    assert main(["train", "--config", "tiny", "--steps", "1", "--patch-sizes", "96,128,160"]) == 0
    assert main(["train", "--config", "tiny", "--steps", "1"]) == 0
    assert [o.patch_sizes for o in seen] == [(96, 128, 160), ()]
    assert main(["train", "--config", "tiny", "--steps", "1", "--patch-sizes", "96,100"]) != 0
    assert len(seen) == 2


@pytest.mark.parametrize("native, amp", [(True, True), (False, True), (True, False)])
def test_cpu_training_autocasts_to_bfloat16_only_where_the_cpu_has_it(tmp_path, monkeypatch, native, amp):
    from napari_miqsam.inference import precision
    from napari_miqsam.model.weights import load_weights, read_metadata
    from napari_miqsam.training.loop import TrainOptions, train

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)  # emulated bf16 still runs, slower
    seen = []
    real_autocast = torch.autocast

    def spy(device_type, *a, enabled=True, **kw):
        seen.append((device_type, enabled))
        return real_autocast(device_type, *a, enabled=enabled, **kw)

    monkeypatch.setattr(torch, "autocast", spy)
    logs = []
    result = train(TrainOptions(config="tiny", data="phantom", out=str(tmp_path), steps=2, batch=1, patch=32, pool=1,
                                cases=2, warmup=1, device="cpu", phantom_shape=(32, 64, 64), amp=amp), log=logs.append)
    want = native and amp
    assert seen and all(d == "cpu" and e == want for d, e in seen)
    assert any(("bfloat16 autocast" if want else "float32") in m for m in logs)
    assert read_metadata(result.weights)["precision"] == ("bfloat16 autocast" if want else "float32")
    model, _ = load_weights(result.weights)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: the weights stay float32


def test_random_contrast_curves_are_monotone_and_keep_kinds_apart():
    from napari_miqsam.training.sampling import random_contrast_curve

    xs = np.linspace(-1, 1, 201)
    reversed_ = 0
    for seed in range(200):
        x, y = random_contrast_curve(np.random.default_rng(seed))
        assert x[0] == -1.0 and x[-1] == 1.0 and np.all(np.diff(x) >= 0)
        out = np.interp(xs, x, y)
        steps = np.diff(out)
        assert np.all(steps > 0) or np.all(steps < 0)  # strictly monotone: no two intensities merge
        reversed_ += bool(steps[0] < 0)
        # a 20 HU contrast (0.1 after the +-200 HU window) keeps at least a tenth of it anywhere
        assert np.abs(np.interp(xs[:-20] + 0.1, x, y) - np.interp(xs[:-20], x, y)).min() > 0.01
        assert 1.0 - 1e-9 <= abs(out[-1] - out[0]) <= 2.4 + 1e-9
    assert 60 < reversed_ < 140


def test_augment_with_random_contrast_keeps_the_masks_and_stays_in_range():
    case = toy_case()
    ex = sample_example(case, 32, np.random.default_rng(0))

    def run(**kw):
        torch.manual_seed(0)  # the noise comes from torch's generator
        return augment(ex, np.random.default_rng(5), **kw)

    same = run(), run(random_contrast=0.0)
    assert torch.equal(same[0].image, same[1].image)  # off: the rng stream (and the run) is what it was
    changed = run(random_contrast=1.0)
    assert not torch.equal(changed.image, same[0].image)
    assert torch.equal(changed.targets, same[0].targets) and torch.equal(changed.points, same[0].points)
    assert float(changed.image.abs().max()) <= 1.5
    with pytest.raises(ValueError, match="probability"):
        augment(ex, np.random.default_rng(5), random_contrast=1.5)
