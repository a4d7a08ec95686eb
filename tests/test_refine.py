"""Mask refiner: identity at the start, its crops, its training targets, its own training stage."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_miqsam.inference.postprocess import split_instances, to_original_grid
from napari_miqsam.inference.preprocess import GridMap
from napari_miqsam.model.head import LayerOutput
from napari_miqsam.model.refine import OTHER_LOGIT, MaskRefiner, conv3d, instance_logits, refine_instance
from napari_miqsam.training.refine import piece_boxes, piece_target, refine_loss


def test_an_untrained_refiner_is_the_upsampled_coarse_logit():
    torch.manual_seed(0)
    ref = MaskRefiner(4)
    image = torch.randn(1, 1, 12, 10, 8)
    coarse = torch.randn(1, 1, 6, 5, 4)
    want = F.interpolate(coarse, scale_factor=2, mode="trilinear", align_corners=False)
    assert torch.allclose(ref(image, coarse), want)
    torch.nn.init.normal_(ref.body[-1].weight)  # once trained, the image changes the answer
    assert not torch.allclose(ref(image, coarse), ref(-image, coarse))


def test_the_refiners_convolution_is_the_modules_and_keeps_gradients():
    torch.manual_seed(0)
    for cin, cout, shape in ((2, 12, (9, 7, 5)), (12, 1, (6, 10, 8))):
        conv = torch.nn.Conv3d(cin, cout, 3, padding=1)
        x = torch.randn(1, cin, *shape, requires_grad=True)
        fast = conv3d(x, conv)
        assert fast.shape == (1, cout, *shape)
        assert torch.allclose(fast, conv(x), atol=1e-5)
        fast.square().sum().backward()
        assert conv.weight.grad is not None and x.grad is not None and float(conv.weight.grad.abs().sum()) > 0


def test_instance_logits_exclude_other_instances():
    fg = torch.tensor([[[0.9, 0.5, 0.1, 0.99]]])
    ids = torch.tensor([[[1, 0, 0, 2]]])
    logit = instance_logits(fg, ids, 1)
    assert logit[0, 0, 0] == pytest.approx(np.log(9), rel=1e-4) and abs(float(logit[0, 0, 1])) < 1e-5
    assert logit[0, 0, 3] == OTHER_LOGIT  # instance 2's cell, however sure, is not instance 1
    assert instance_logits(fg, ids, 2)[0, 0, 3] > 4


def test_refine_instance_crops_and_pads_an_odd_image():
    ref = MaskRefiner(4)
    image = torch.zeros(9, 8, 8)  # model grid of 9 slices: 5 stride-2 cells, the last one half outside
    fg = torch.full((5, 4, 4), 0.9)
    ids = torch.ones(5, 4, 4, dtype=torch.int32)
    out = refine_instance(ref, image, fg, ids, 1, (3, 1, 0), (5, 3, 4))
    assert out.shape == (4, 4, 8)
    assert torch.allclose(out, torch.full_like(out, float(np.log(9))), atol=1e-4)


def test_to_original_grid_uses_the_refined_logits_inside_the_allowed_cells():
    grid = GridMap.build((32, 32, 32), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))  # model 32^3, stride-2 map 16^3
    slot = np.zeros((16, 16, 16), np.int16)
    slot[6:10, 6:10, 6:10] = 1
    fg = np.where(slot > 0, 0.9, 0.05).astype(np.float32)
    ids, n = split_instances(slot)
    plain = to_original_grid(ids, n, fg, np.array([0.9]), grid, 2)[0]
    calls = []

    def everything(k, lo, hi):  # a refiner that says "all of it": the mask is the allowed cells
        calls.append((k, lo, hi))
        return np.full(tuple(2 * (b - a) for a, b in zip(lo, hi)), 5.0, np.float32)

    grown = to_original_grid(ids, n, fg, np.array([0.9]), grid, 2, refine=everything)[0]
    assert calls == [(1, (5, 5, 5), (11, 11, 11))]
    assert 480 <= plain.voxels <= 8 ** 3  # the cells (corners rounded by the interpolation)
    assert grown.voxels == 12 ** 3  # the refiner may claim the cells dilated by one cell, not more
    nothing = to_original_grid(ids, n, fg, np.array([0.9]), grid, 2, refine=lambda k, lo, hi: -everything(k, lo, hi))
    assert len(nothing) == 1 and nothing[0].voxels == 8 ** 3  # never empty: the cells themselves


def test_piece_target_is_the_touched_instances_within_the_allowed_cells():
    ids = np.zeros((8, 8, 8), np.int32)
    ids[2:4, 2:4, 2:4] = 1
    ids[2:4, 4:6, 2:4] = 2  # touching piece 1 (two queries' pieces)
    inst = torch.zeros(16, 16, 16, dtype=torch.int32)
    inst[4:9, 4:8, 4:8] = 7  # under piece 1, and a voxel row beyond it
    inst[4:8, 8:12, 4:8] = 9  # under piece 2, partly inside piece 1's crop
    boxes = piece_boxes(ids, 2, np.random.default_rng(0), 6)
    assert sorted(b[0] for b in boxes) == [1, 2] and dict((k, (lo, hi)) for k, lo, hi in boxes)[1] == ((1, 1, 1), (5, 5, 5))
    target, weight = piece_target(ids, 1, (1, 1, 1), (5, 5, 5), inst)
    assert target.shape == weight.shape == (8, 8, 8) and (inst[2:10, 2:10, 2:10] == 9).any()
    assert target.sum() == 5 * 4 * 4  # instance 7 whole (the crop starts at voxel 2), not instance 9
    assert weight[0, 0, 0] == 1 and weight[2, 7, 2] == 0  # background ring allowed; piece 2's cells not
    assert piece_boxes(ids, 2, np.random.default_rng(0), 1).__len__() == 1


def test_refine_loss_trains_the_refiner_towards_the_edge():
    """Coarse masks one cell too big; the image shows the true edge; the refiner learns to follow it."""
    torch.manual_seed(0)
    ref = MaskRefiner(8)
    image = torch.full((1, 1, 24, 24, 24), -0.5)
    image[0, 0, 8:15, 8:15, 8:15] = 0.5  # a 7-voxel cube
    inst = torch.zeros(24, 24, 24, dtype=torch.int32)
    inst[8:15, 8:15, 8:15] = 1
    logits = torch.full((1, 1, 12, 12, 12), -6.0)
    logits[0, 0, 3:8, 3:8, 3:8] = 6.0  # cells 3..7 = voxels 6..15: too big
    out = LayerOutput(logits, torch.zeros(1, 1), torch.zeros(1, 1, 12, 12, 12), True)
    rng = np.random.default_rng(0)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        losses = refine_loss(ref, image, out, [inst], rng)
        first = first if first is not None else float(losses["loss"].detach())
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert float(losses["pieces"]) == 1 and float(losses["loss"].detach()) < 0.5 * first
    empty = LayerOutput(torch.full((1, 1, 12, 12, 12), -6.0), torch.zeros(1, 1), torch.zeros(1, 1, 12, 12, 12), True)
    zero = refine_loss(ref, image, empty, [inst], rng)
    assert float(zero["loss"].detach()) == 0 and zero["loss"].requires_grad  # ranks without pieces still step


def test_refine_only_training_changes_the_refiner_alone(tmp_path):
    from napari_miqsam.model.weights import load_weights, save_weights
    from napari_miqsam.model.miqsam import MIQSAM3D
    from napari_miqsam.model.config import get_config
    from napari_miqsam.training.loop import TrainOptions, train

    torch.manual_seed(1)
    start = MIQSAM3D(get_config("tiny"))
    save_weights(start, tmp_path / "start.safetensors", trained=False)
    res = train(TrainOptions(config="tiny", data="phantom", out=str(tmp_path / "run"), steps=3, batch=1, patch=32,
                             pool=1, cases=2, warmup=1, lr=1e-2, device="cpu", phantom_shape=(32, 64, 64),
                             init=str(tmp_path / "start.safetensors"), refine_only=True), log=lambda *a: None)
    model, _ = load_weights(res.weights)
    a, b = start.state_dict(), model.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(k.startswith("refiner.") for k in changed)
