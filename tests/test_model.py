"""The network: shapes, gradients to every parameter, determinism, ablations, weights round trip."""

import numpy as np
import pytest
import torch

from napari_miqsam.errors import WeightsError
from napari_miqsam.model.config import get_config
from napari_miqsam.model.head import LayerOutput
from napari_miqsam.model.miqsam import MIQSAM3D
from napari_miqsam.model.positional import grid_sample_coords
from napari_miqsam.model.query_generator import sample_at_points
from napari_miqsam.model.weights import load_weights, save_weights
from napari_miqsam.training.losses import set_criterion


def tiny(**kw):
    torch.manual_seed(0)
    return MIQSAM3D(get_config("tiny", **kw))


def prompt(b=2):
    pts = torch.tensor([[[10.0, 20.0, 30.0], [40.0, 8.0, 12.0]]] * b)
    labels = torch.tensor([[1, 0]] * b)
    return pts, labels


def test_output_shapes():
    m = tiny().train()
    x = torch.randn(2, 1, 32, 48, 64)
    emb, outs = m(x, *prompt())
    cfg = m.cfg
    assert emb.tokens.shape == (2, 4 * 6 * 8, cfg.vit_dim)
    assert emb.mask_features.shape == (2, cfg.mask_dim, 16, 24, 32)
    assert emb.saliency_logits.shape == (2, 1, 4, 6, 8)
    assert len(outs) == cfg.decoder_layers + 1  # deep supervision: one output per layer + initial
    with torch.no_grad():
        _, (last,) = m.eval()(x, *prompt())  # at inference only the last layer's prediction is made
    assert torch.allclose(last.mask_logits, outs[-1].mask_logits, atol=1e-5)  # with the same attention masks
    for o in outs:
        assert o.mask_logits.shape == (2, cfg.num_queries, 16, 24, 32)
        assert o.score_logits.shape == (2, cfg.num_queries)
        p = o.instance_probabilities()
        assert torch.all(p.sum(1) <= 1 + 1e-5)  # competition: one voxel, at most one instance
        assert torch.all((o.scores >= 0) & (o.scores <= 1))


@pytest.mark.parametrize("ablation", [{}, {"gating": False}, {"pciqg": False}, {"competition": False}, {"kind_prior": False}])
def test_gradients_reach_every_parameter(ablation):
    m = tiny(**ablation).train()
    x = torch.randn(2, 1, 32, 32, 32)
    emb, outs = m(x, *prompt())
    targets = [torch.zeros(2, 16, 16, 16) for _ in range(2)]
    for t in targets:
        t[0, 2:6, 3:8, 4:9] = 1.0
        t[1, 10:14, 10:12, 1:5] = 0.5
    sal_t = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    kind_t = torch.zeros(2, 3, 16, 16, 16)
    kind_t[:, 0] = 1.0
    kind_t[:, :, 2:6, 3:8, 4:9] = torch.tensor([0.0, 1.0, 0.0])[:, None, None, None]
    losses = set_criterion(outs, targets, emb.saliency_logits, sal_t, emb.kind_logits, kind_t)
    assert ("kind" in losses) == m.cfg.kind_prior
    losses["loss"].backward()
    # the mask refiner trains in its own stage (tests/test_refine.py), on the instances found
    missing = [n for n, p in m.named_parameters() if not n.startswith("refiner.")
               and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    assert not missing, missing
    if not ablation:
        assert m.query_generator.num_queries == 8
    if ablation == {"pciqg": False}:
        assert m.query_generator.num_queries == 1


def test_eval_is_deterministic():
    m = tiny().eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.inference_mode():
        a = m(x, *prompt(1))[1][-1]
        b = m(x, *prompt(1))[1][-1]
    assert torch.equal(a.mask_logits, b.mask_logits) and torch.equal(a.score_logits, b.score_logits)


def test_saliency_gates_attention():
    """Changing the saliency changes the ViT output only when gating is on."""
    for gating in (True, False):
        m = tiny(gating=gating).eval()
        x = torch.randn(1, 1, 32, 32, 32)
        with torch.inference_mode():
            a = m.embed(x).tokens
            m.encoder.cnn.saliency.bias.add_(3.0)
            b = m.embed(x).tokens
        assert (not torch.allclose(a, b)) == gating


def test_sample_at_points_is_exact():
    """A click at voxel (z, y, x) samples exactly that voxel's feature, at any stride."""
    d, h, w = 8, 12, 16
    zz, yy, xx = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    fmap = torch.stack([zz, yy, xx]).float()[None]  # features = cell index
    # the map has stride 2 over an input of (16, 24, 32): input voxel 2i+0.5 is cell i's centre
    pts = torch.tensor([[[2 * 3 + 0.5, 2 * 5 + 0.5, 2 * 7 + 0.5]]])
    out = sample_at_points(fmap, pts, (16, 24, 32))
    assert torch.allclose(out[0, 0], torch.tensor([3.0, 5.0, 7.0]), atol=1e-5)
    assert torch.allclose(grid_sample_coords(torch.tensor([[-0.5, 15.5, 7.5]]), (16, 16, 16)), torch.tensor([[-1.0, 1.0, 0.0]]))


def test_weights_round_trip(tmp_path):
    m = tiny(competition=False).eval()
    path = save_weights(m, tmp_path / "w.safetensors", trained=False, extra={"note": "test"})
    m2, meta = load_weights(path)
    assert meta["trained"] == "false" and meta["note"] == "test"
    assert m2.cfg == m.cfg
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    # the file holds no pickle: it starts with safetensors' 8-byte header length + JSON
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and raw[8 + n - 1:8 + n].strip() in (b"}", b"")


def test_bad_weights_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")
    good = save_weights(tiny(), tmp_path / "w.safetensors", trained=False)
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(good.read_bytes()[:500])
    with pytest.raises(WeightsError, match="trunc.safetensors"):
        load_weights(trunc)
    from safetensors.torch import save_file
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(3)}, str(other), metadata={"config": '{"name": "tiny", "vit_dim": 32}'})
    with pytest.raises(WeightsError, match="architecture"):
        load_weights(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file at all")
    with pytest.raises(WeightsError, match="junk.safetensors"):
        load_weights(junk)


def test_kind_prior_suppresses_the_other_kind():
    """The same-kind bias is 0 before training, then pushes voxels of the other kind (and of no
    lesion) towards background while leaving voxels of the clicked kind almost untouched."""
    from napari_miqsam.model.kind import KindPrior, lesion_kind_probs, point_kinds, prompt_kind

    logits = torch.full((1, 3, 4, 4, 4), -5.0)
    logits[0, 1, :2] = 5.0  # z < 2: kind 1 (tumour)
    logits[0, 2, 2:] = 5.0  # z >= 2: kind 2 (cyst)
    pts = torch.tensor([[[1.0, 3.0, 3.0], [5.0, 3.0, 3.0]]])  # input voxels; stride 2 -> cells z=0, z=2
    kinds = point_kinds(logits, pts, (8, 8, 8), radius=0)
    assert torch.allclose(kinds[0, 0], torch.tensor([1.0, 0.0]), atol=1e-3)
    assert torch.allclose(kinds[0, 1], torch.tensor([0.0, 1.0]), atol=1e-3)
    pi = prompt_kind(kinds, torch.tensor([[1, 0]]), torch.tensor([[True, True]]))  # only the positive click counts
    assert torch.allclose(pi, kinds[:, 0])
    prior = KindPrior()
    probs = lesion_kind_probs(logits)
    assert torch.count_nonzero(prior(probs, pi)) == 0  # no effect before training
    with torch.no_grad():
        prior.raw_weight.fill_(1.0)
    bias = prior(probs, pi)[0, 0]
    assert bias[:2].abs().max() < 0.01 and bias[2:].max() < -5.0


def test_click_on_a_lesion_edge_reads_the_lesion_kind():
    """The kind around a click pools the lesion-kind probabilities of nearby cells, so a click on
    a cyst's edge (a background cell whose kinds-only softmax says tumour) reads cyst."""
    from napari_miqsam.model.kind import point_kinds

    logits = torch.full((1, 3, 6, 6, 6), -5.0)
    logits[0, 0] = 5.0  # background everywhere...
    logits[0, 1] = -2.0  # ...and among the (unlikely) kinds, tumour beats cyst
    logits[0, :, 3:] = torch.tensor([-5.0, -5.0, 5.0])[:, None, None, None]  # cells z >= 3: cyst
    edge = torch.tensor([[[4.5, 4.5, 4.5]]])  # input voxels: the centre of cell (2, 2, 2), background, next to the cyst
    assert point_kinds(logits, edge, (12, 12, 12), radius=0)[0, 0, 0] > 0.9  # the point alone: "tumour"
    assert point_kinds(logits, edge, (12, 12, 12))[0, 0, 1] > 0.9  # pooled: cyst


def test_old_weights_files_have_no_kind_prior(tmp_path):
    """A config written before the kind prior existed loads as a model without it."""
    from napari_miqsam.model.config import MIQSAMConfig

    d = get_config("tiny").to_dict()
    d.pop("kind_prior")
    d.pop("refine")
    assert MIQSAMConfig.from_dict(d).kind_prior is False
    assert MIQSAMConfig.from_dict(d).refine is False  # nor a mask refiner
    assert MIQSAMConfig.from_dict(get_config("tiny").to_dict()).kind_prior is True


def test_init_from_copies_what_fits(tmp_path):
    """Warm start: a model with the kind prior starts from weights without it (fine-tuning)."""
    from napari_miqsam.model.weights import init_from

    old = tiny(kind_prior=False)
    path = save_weights(old, tmp_path / "old.safetensors", trained=True)
    torch.manual_seed(5)
    new = MIQSAM3D(get_config("tiny"))
    fresh = init_from(new, path)
    assert fresh == ["decoder.kind_prior.raw_weight", "encoder.kind_head.bias", "encoder.kind_head.weight"]
    old_state = old.state_dict()
    for k, v in new.state_dict().items():
        if k not in fresh:
            assert torch.equal(v, old_state[k]), k
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.inference_mode():  # the kind prior starts at weight 0: the same answer as before
        a, b = old.eval()(x, *prompt(1))[1][-1], new.eval()(x, *prompt(1))[1][-1]
    assert torch.allclose(a.mask_logits, b.mask_logits, atol=1e-5)
    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(3)}, str(foreign), metadata={"config": "{}"})
    with pytest.raises(WeightsError, match="fits"):
        init_from(new, foreign)


def test_click_just_off_a_lesion_snaps_onto_it():
    from napari_miqsam.model.kind import snap_to_lesion

    logits = torch.zeros(1, 3, 6, 6, 6)
    logits[0, 0] = 5.0  # background...
    logits[0, 0, 3:5, 2:4, 2:4] = -5.0  # ...except a lesion (cells z 3-4)
    logits[0, 2, 3:5, 2:4, 2:4] = 5.0
    off = torch.tensor([4.5, 4.5, 4.5])  # centre of cell (2, 2, 2): background, next to the lesion
    snapped = snap_to_lesion(logits, off)
    assert snapped.tolist() == [6.5, 4.5, 4.5]  # centre of cell (3, 2, 2)
    on = torch.tensor([7.0, 5.0, 5.0])  # already on the lesion: unchanged
    assert torch.equal(snap_to_lesion(logits, on), on)
    far = torch.tensor([0.5, 10.5, 10.5])  # no lesion within one cell: unchanged
    assert torch.equal(snap_to_lesion(logits, far), far)


@pytest.mark.parametrize("competition", [True, False])
def test_winners_equal_the_materialised_softmax(competition):
    g = torch.Generator().manual_seed(0)
    masks = torch.randn(2, 5, 6, 7, 8, generator=g) * 4
    bg = torch.randn(2, 1, 6, 7, 8, generator=g) * 4 if competition else None
    out = LayerOutput(masks, torch.zeros(2, 5), bg, competition)
    slot, fg = out.winners()
    if competition:
        probs = torch.softmax(out.slot_logits(), dim=1)
        best_p, best_q = probs[:, 1:].max(dim=1)
        ref_slot = torch.where(best_p > probs[:, 0], best_q + 1, 0)
        ref_fg = 1 - probs[:, 0]
    else:
        best_p, best_q = torch.sigmoid(masks).max(dim=1)
        ref_slot = torch.where(best_p > 0.5, best_q + 1, 0)
        ref_fg = best_p
    assert torch.equal(slot, ref_slot) and 0 < (slot > 0).float().mean() < 1
    assert torch.allclose(fg, ref_fg, atol=1e-6)


def test_average_weights_script_means_every_tensor(tmp_path):
    """scripts/average_weights.py: the output holds the mean of each tensor, the first file's
    metadata plus the sources; files of another architecture are refused."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("average_weights", Path(__file__).parents[1] / "scripts" / "average_weights.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.manual_seed(1)
    a, b = MIQSAM3D(get_config("tiny")), MIQSAM3D(get_config("tiny"))
    save_weights(a, tmp_path / "a.safetensors", trained=True, extra={"steps": "7"})
    save_weights(b, tmp_path / "b.safetensors", trained=True)
    script.main(str(tmp_path / "mean.safetensors"), str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    mean, meta = load_weights(tmp_path / "mean.safetensors")
    sa, sb = a.state_dict(), b.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)
    for k, v in mean.state_dict().items():
        assert torch.allclose(v, (sa[k] + sb[k]) / 2, atol=1e-6), k
    assert meta["steps"] == "7" and meta["trained"] == "true" and len(json.loads(meta["averaged_from"])) == 2
    save_weights(MIQSAM3D(get_config("tiny", gating=False)), tmp_path / "c.safetensors", trained=True)
    with pytest.raises(WeightsError, match="another config"):
        script.average([tmp_path / "a.safetensors", tmp_path / "c.safetensors"])


def test_added_mask_blocks_start_as_the_identity_and_then_learn(tmp_path):
    """Stride-2 capacity added to a trained network (``mask_blocks``): loaded with init_from, the
    deeper network answers exactly as the file's did; one training step moves the new blocks, and
    ``--new-lr-mult`` gives them their own learning rate."""
    from napari_miqsam.model.weights import init_from
    from napari_miqsam.training.loop import param_groups

    old = tiny()
    path = save_weights(old, tmp_path / "old.safetensors", trained=True)
    torch.manual_seed(5)
    new = MIQSAM3D(get_config("tiny", mask_blocks=2))
    fresh = init_from(new, path)
    assert fresh and all(k.startswith("encoder.pixel_decoder.blocks.") for k in fresh)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.inference_mode():
        a, b = old.eval()(x, *prompt(1)), new.eval()(x, *prompt(1))
    assert torch.equal(a[0].mask_features, b[0].mask_features)
    assert torch.equal(a[1][-1].mask_logits, b[1][-1].mask_logits)
    groups = param_groups(new, fresh, 10.0)
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    named = dict(new.named_parameters())
    assert {id(p) for p in groups[1]["params"]} == {id(named[k]) for k in fresh if k in named}
    assert len(param_groups(new, fresh, 1.0)) == 1 and len(param_groups(old, [], 10.0)) == 1
    opt = torch.optim.AdamW(groups, lr=1e-3)
    new.train()
    emb, outs = new(x, *prompt(1))
    (outs[-1].mask_logits.square().mean() + emb.mask_features.square().mean()).backward()
    opt.step()
    moved = new.encoder.pixel_decoder.blocks[1].body[-1].weight
    assert moved.abs().sum() > 0  # the zero-initialised scale learns first


@pytest.mark.parametrize("layers", [0, 2])
def test_decoder_region_gives_the_same_last_output_on_its_cells(layers):
    """The Predictor asks for the last layer's masks only where a window owns the cells; there they
    must equal the whole window's (earlier layers still see the whole window)."""
    m = tiny(decoder_layers=layers).eval()
    pts, labels = prompt(1)
    valid = torch.ones(labels.shape, dtype=torch.bool)
    kind = torch.tensor([[0.8, 0.2]])
    region = (slice(2, 9), slice(0, 24), slice(5, 17))
    with torch.no_grad():
        m.decoder.kind_prior.raw_weight.fill_(1.0)  # a kind bias that is not zero, cropped too
        emb = m.embed(torch.randn(1, 1, 32, 48, 64))
        queries, tokens = m.query_generator(emb, pts, labels, valid)
        full = m.decoder(emb, queries, tokens, valid, kind, deep_supervision=True)
        part = m.decoder(emb, queries, tokens, valid, kind, region=region, deep_supervision=True)
        alone = m.decoder(emb, queries, tokens, valid, kind, region=region)  # eval: the last layer only
    assert len(part) == len(full) == layers + 1 and len(alone) == 1
    assert torch.equal(alone[0].mask_logits, part[-1].mask_logits)
    for a, b in zip(full[:-1], part[:-1]):
        assert torch.equal(a.mask_logits, b.mask_logits)
    last, cut = full[-1], part[-1]
    assert cut.mask_logits.shape[-3:] == (7, 24, 12)
    assert torch.allclose(cut.mask_logits, last.mask_logits[(Ellipsis, *region)], atol=1e-5)
    assert torch.equal(cut.score_logits, last.score_logits)
    (slot_c, fg_c), (slot_f, fg_f) = cut.winners(), last.winners()
    assert torch.equal(slot_c[0], slot_f[0][region]) and torch.allclose(fg_c[0], fg_f[0][region], atol=1e-6)


def test_attention_masks_come_from_the_token_grid_mean_of_the_stride2_logits():
    """An intermediate layer's attention mask is read from the instance head at the token grid: its
    logits (queries and background, kind bias included) are exactly the mean of the stride-2
    logits over each token's cell, so training and inference block the same tokens."""
    import torch.nn.functional as F

    m = tiny().eval()
    pts, labels = prompt(1)
    valid = torch.ones(labels.shape, dtype=torch.bool)
    kind = torch.tensor([[0.3, 0.7]])
    with torch.no_grad():
        m.decoder.kind_prior.raw_weight.fill_(1.0)
        emb = m.embed(torch.randn(1, 1, 32, 48, 64))
        queries, tokens = m.query_generator(emb, pts, labels, valid)
        ctx = m.decoder.context(emb)
        bias = m.decoder.kind_prior(ctx.kind_probs, kind)
        full = m.decoder._predict(queries, emb.mask_features, ctx.bg_logits, bias, None)
        coarse = m.decoder.token_prediction(queries, ctx, F.avg_pool3d(bias, 4))
    assert coarse.mask_logits.shape[-3:] == emb.token_shape == (4, 6, 8)
    assert torch.allclose(coarse.mask_logits, F.avg_pool3d(full.mask_logits, 4), atol=1e-5)
    assert torch.allclose(coarse.bg_logits, F.avg_pool3d(full.bg_logits, 4), atol=1e-5)
    mask = m.decoder.attention_mask(coarse)
    assert mask.shape == (m.cfg.decoder_heads, m.cfg.num_queries, 4 * 6 * 8) and mask.dtype == torch.bool
    # the same decoder in training mode blocks the same tokens: its last prediction is the same
    with torch.no_grad():
        m.train()
        trained = m.decoder(emb, queries, tokens, valid, kind)
        m.eval()
        inferred = m.decoder(emb, queries, tokens, valid, kind)
    assert len(trained) == m.cfg.decoder_layers + 1 and len(inferred) == 1
    assert torch.allclose(trained[-1].mask_logits, inferred[0].mask_logits, atol=1e-5)


def test_cross_attention_on_cached_projections_is_multihead_attention():
    """The decoder's masked cross-attention reads the image tokens' key / value projections from
    the per-window context; it must be nn.MultiheadAttention on the same inputs and mask."""
    m = tiny().eval()
    layer = m.decoder.layers[0]
    torch.manual_seed(1)
    q, tokens, keys = torch.randn(2, 8, 32), torch.randn(2, 48, 32), torch.randn(2, 48, 32)
    mask = torch.rand(2 * m.cfg.decoder_heads, 8, 48) < 0.6
    mask[..., 0] = False  # no query blocked from every token
    with torch.no_grad():
        got = layer.masked_cross_attention(q, layer.image_keys_values(tokens, keys), mask)
        want = layer.norm2(q + layer.cross_attn(q, keys, tokens, attn_mask=mask, need_weights=False)[0])
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("grid", [(4, 6, 4), (5, 3, 7)])
def test_pooled_keys_equal_exact_attention_on_cellwise_constant_tokens(grid):
    """kv_pool 2: a cell's mean key stands for its n tokens (log n added to its logit), so when the
    tokens and saliency are constant over each 2x2x2 cell (partial cells at odd edges included),
    pooled attention equals the exact attention over every token."""
    from napari_miqsam.model.vit import SaliencyGatedAttention

    torch.manual_seed(0)
    exact = SaliencyGatedAttention(16, 4, gated=True)
    with torch.no_grad():
        exact.saliency_weight.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0]))
    pooled = SaliencyGatedAttention(16, 4, gated=True, kv_pool=2)
    pooled.load_state_dict(exact.state_dict())
    cells = [-(-n // 2) for n in grid]
    coarse = torch.randn(2, 16, *cells)
    sal = torch.randn(2, 1, *cells)
    up = lambda t: t.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)[..., :grid[0], :grid[1], :grid[2]]  # noqa: E731
    x = up(coarse).flatten(2).transpose(1, 2)
    log_s = torch.nn.functional.logsigmoid(up(sal).flatten(1))
    torch.testing.assert_close(pooled(x, log_s, grid), exact(x, log_s, grid), atol=1e-5, rtol=1e-5)
    # and on tokens that vary within the cells it is an approximation, not the same function
    x2 = torch.randn_like(x)
    assert not torch.allclose(pooled(x2, log_s, grid), exact(x2, log_s, grid), atol=1e-3)


def test_pointwise_conv_is_conv3d():
    from napari_miqsam.model.cnn import PointwiseConv3d

    torch.manual_seed(0)
    for bias in (True, False):
        m = PointwiseConv3d(5, 3, bias=bias)
        x = torch.randn(2, 5, 4, 6, 7)
        torch.testing.assert_close(m(x), torch.nn.functional.conv3d(x, m.weight, m.bias), atol=1e-5, rtol=1e-5)
        assert set(m.state_dict()) == set(torch.nn.Conv3d(5, 3, 1, bias=bias).state_dict())


def test_cpu_preset_pools_keys_and_old_files_keep_exact_attention(tmp_path):
    """The cpu preset runs pooled keys; a weights file whose config predates kv_pool reads as 1."""
    import json

    from napari_miqsam.model.config import MIQSAMConfig

    assert get_config("cpu").kv_pool == 2 and get_config("paper").kv_pool == 1
    old = get_config("tiny").to_dict()
    del old["kv_pool"]
    assert MIQSAMConfig.from_dict(json.loads(json.dumps(old))).kv_pool == 1


def test_update_config_keeps_every_tensor_and_key(tmp_path):
    from napari_miqsam.model.weights import update_config

    m = tiny().eval()
    path = save_weights(m, tmp_path / "w.safetensors", trained=True, extra={"note": "kept"})
    update_config(path, kv_pool=2, max_window=48)
    m2, meta = load_weights(path)
    assert m2.cfg.kv_pool == 2 and m2.cfg.max_window == 48 and meta["note"] == "kept" and meta["trained"] == "true"
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(WeightsError):
        update_config(path, vit_dim=64)
