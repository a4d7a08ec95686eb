"""Exemplar-relative lesion kinds: the kind head's lesion channels are clusters compared with the
clicked lesion (config ``relative_kinds``), trained by ``training.losses.relative_kind_loss``."""

import numpy as np
import pytest
import torch

from napari_miqsam.errors import InputError
from napari_miqsam.inference.options import PredictOptions
from napari_miqsam.inference.predictor import Predictor
from napari_miqsam.model.config import get_config
from napari_miqsam.model.kind import widen_kind_head
from napari_miqsam.model.miqsam import MIQSAM3D
from napari_miqsam.model.weights import init_from, save_weights
from napari_miqsam.training.losses import relative_kind_loss


def _target(kinds: np.ndarray, n_kinds: int) -> torch.Tensor:
    """(1, 1 + n_kinds, ...) one-hot occupancy of a kind map (0 background, 1..n_kinds)."""
    return torch.from_numpy(np.stack([kinds == k for k in range(n_kinds + 1)]).astype(np.float32))[None]


def _logits(assign: dict[int, int], kinds: np.ndarray, clusters: int, lesion: float = 6.0) -> torch.Tensor:
    """Kind logits that put every cell of data kind k into cluster ``assign[k]`` (background elsewhere)."""
    out = torch.full((1, 1 + clusters, *kinds.shape), -lesion)
    out[0, 0] = lesion
    for k, c in assign.items():
        cells = torch.from_numpy(kinds == k)
        out[0, 0][cells] = -lesion
        out[0, 1 + c][cells] = lesion
    return out


def test_the_loss_cares_only_whether_kinds_share_a_cluster():
    kinds = np.zeros((8, 8, 8), np.int64)
    kinds[1:3, 1:3, 1:3] = 1
    kinds[5:7, 5:7, 5:7] = 2
    kinds[1:3, 5:7, 1:3] = 2
    t = _target(kinds, 2)
    apart = relative_kind_loss(_logits({1: 0, 2: 3}, kinds, 4), t)
    swapped = relative_kind_loss(_logits({1: 3, 2: 0}, kinds, 4), t)
    merged = relative_kind_loss(_logits({1: 2, 2: 2}, kinds, 4), t)
    assert abs(float(apart) - float(swapped)) < 1e-5  # which cluster a kind lands in does not matter
    assert float(merged) > float(apart) + 1.0  # two kinds of one volume in one cluster costs
    split = _logits({1: 0, 2: 3}, kinds, 4)
    split[0, 1 + 3, 1:3, 5:7, 1:3] = -6.0
    split[0, 1 + 1, 1:3, 5:7, 1:3] = 6.0  # one kind-2 lesion in another cluster than its twin
    assert float(relative_kind_loss(split, t)) > float(apart) + 0.3  # -log(1/2) on half the kinds


def test_the_loss_trains_a_head_to_separate_kinds():
    torch.manual_seed(0)
    kinds = np.zeros((6, 6, 6), np.int64)
    kinds[0:2] = 1
    kinds[4:6] = 2
    t = _target(kinds, 2)
    feats = torch.from_numpy(np.stack([kinds == 1, kinds == 2, np.ones_like(kinds)]).astype(np.float32))[None]
    head = torch.nn.Conv3d(3, 1 + 4, 1)
    opt = torch.optim.Adam(head.parameters(), lr=0.1)
    first = None
    for _ in range(200):
        loss = relative_kind_loss(head(feats), t)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        q = torch.softmax(head(feats)[0, 1:], 0)
    c1, c2 = q[:, 0, 0, 0], q[:, 5, 0, 0]
    assert float(loss.detach()) < first / 4
    assert float(c1 @ c2) < 0.1 and float(c1.max()) > 0.9 and float(c2.max()) > 0.9


def test_widening_keeps_background_and_each_kinds_total():
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(3, 5, 1, 1, 1, generator=g), torch.randn(3, generator=g)
    w8, b8 = widen_kind_head(w, b, 8, generator=g)
    x = torch.randn(5, generator=g)
    p = torch.softmax(w[:, :, 0, 0, 0] @ x + b, 0)
    p8 = torch.softmax(w8[:, :, 0, 0, 0] @ x + b8, 0)
    assert abs(float(p[0] - p8[0])) < 0.02
    assert abs(float(p[1] - p8[1:5].sum())) < 0.02 and abs(float(p[2] - p8[5:].sum())) < 0.02
    with pytest.raises(ValueError):
        widen_kind_head(w8, b8, 2)


def test_a_two_kind_file_initialises_a_relative_model(tmp_path):
    torch.manual_seed(0)
    old = MIQSAM3D(get_config("tiny"))
    save_weights(old, tmp_path / "old.safetensors", trained=True)
    new = MIQSAM3D(get_config("tiny", kinds=8, relative_kinds=True))
    fresh = init_from(new, tmp_path / "old.safetensors")
    assert not any(name.startswith("encoder.kind_head") for name in fresh)
    assert torch.equal(new.encoder.kind_head.weight[0], old.encoder.kind_head.weight[0])


def test_relative_weights_name_no_kinds_and_refuse_a_named_kind():
    predictor = Predictor.from_config("tiny", kinds=4, relative_kinds=True)
    assert predictor.kind_names == ()
    vol = np.random.default_rng(0).normal(0, 50, (24, 32, 32)).astype(np.float32)
    predictor.set_image(vol, spacing=(1.0, 1.0, 1.0))
    prediction = predictor.predict([(12, 16, 16)])
    assert prediction.kind_summary() is None
    with pytest.raises(InputError, match="like the clicked one"):
        predictor.predict([(12, 16, 16)], options=PredictOptions(kind=0))
