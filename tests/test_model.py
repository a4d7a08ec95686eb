"""The network: shapes, gradients to every parameter, determinism, ablations, weights round trip."""

import numpy as np
import pytest
import torch

from napari_miqsam.errors import WeightsError
from napari_miqsam.model.config import get_config
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
    m = tiny().eval()
    x = torch.randn(2, 1, 32, 48, 64)
    emb, outs = m(x, *prompt())
    cfg = m.cfg
    assert emb.tokens.shape == (2, 4 * 6 * 8, cfg.vit_dim)
    assert emb.mask_features.shape == (2, cfg.mask_dim, 16, 24, 32)
    assert emb.saliency_logits.shape == (2, 1, 4, 6, 8)
    assert len(outs) == cfg.decoder_layers + 1  # deep supervision: one output per layer + initial
    for o in outs:
        assert o.mask_logits.shape == (2, cfg.num_queries, 16, 24, 32)
        assert o.score_logits.shape == (2, cfg.num_queries)
        p = o.instance_probabilities()
        assert torch.all(p.sum(1) <= 1 + 1e-5)  # competition: one voxel, at most one instance
        assert torch.all((o.scores >= 0) & (o.scores <= 1))


@pytest.mark.parametrize("ablation", [{}, {"gating": False}, {"pciqg": False}, {"competition": False}])
def test_gradients_reach_every_parameter(ablation):
    m = tiny(**ablation).train()
    x = torch.randn(2, 1, 32, 32, 32)
    emb, outs = m(x, *prompt())
    targets = [torch.zeros(2, 16, 16, 16) for _ in range(2)]
    for t in targets:
        t[0, 2:6, 3:8, 4:9] = 1.0
        t[1, 10:14, 10:12, 1:5] = 0.5
    sal_t = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    losses = set_criterion(outs, targets, emb.saliency_logits, sal_t)
    losses["loss"].backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
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
