"""The kind gate's exemplar-relative rescue: a dropped piece that looks like the clicked one stays."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_miqsam.errors import InputError
from napari_miqsam.inference.options import PredictOptions
from napari_miqsam.inference.predictor import Predictor
from napari_miqsam.inference.rescue import contrast_matches, piece_contrast
from napari_miqsam.model.config import get_config

from test_predictor import LocalDecoder, LocalModel


def blobs(values: dict[int, float], background: float = 0.0, shape=(12, 12, 40)):
    """Cubes 4 cells a side along x, piece k at x = 8k - 6, filled with values[k]."""
    ids = np.zeros(shape, np.int32)
    image = np.full(shape, background, np.float32)
    for k, v in values.items():
        box = (slice(4, 8), slice(4, 8), slice(8 * k - 6, 8 * k - 2))
        ids[box], image[box] = k, v
    return ids, image


def test_contrast_is_inside_minus_the_ring_around():
    ids, image = blobs({1: 1.0, 2: -0.5, 3: 3.0}, background=0.2)
    assert piece_contrast(ids, image, [1, 2, 3]) == pytest.approx([0.8, -0.7, 2.8])
    full = np.ones((4, 4, 4), np.int32)  # a piece with nothing around it: no contrast to measure
    assert np.isnan(piece_contrast(full, np.zeros((4, 4, 4)), [1])[0])


def test_only_pieces_of_like_contrast_and_sign_are_kept():
    # clicked 1 (+1.0); 2: 1.3x (kept at 1.6, not at 1.2); 3: 2.5x; 4: other sign; 5: 0.7x
    ids, image = blobs({1: 1.0, 2: 1.3, 3: 2.5, 4: -1.0, 5: 0.7})
    assert contrast_matches(ids, image, [1], [2, 3, 4, 5], 1.6).tolist() == [True, False, False, True]
    assert contrast_matches(ids, image, [1], [2, 3, 4, 5], 1.2).tolist() == [False, False, False, False]
    assert contrast_matches(ids, image, [1], [2, 3, 4, 5], 3.0).tolist() == [True, True, False, True]
    assert not contrast_matches(ids, image, [], [2, 5], 1.6).any()  # no exemplar: nothing to compare with
    assert not contrast_matches(ids, image, [1], [2, 5], 0.0).any()  # off
    flat = blobs({1: 0.0, 2: 0.0})  # the clicked piece has no contrast: nothing is like it
    assert not contrast_matches(*flat, [1], [2], 1.6).any()


class TwoKindModel(LocalModel):
    """LocalModel with a kind head that calls every cell left of the middle kind 0 and every cell
    right of it kind 1, and reads kind 0 at any click: a head that splits one kind of lesion in two
    by where it lies, as the shipped head splits real tumours by size."""

    def __init__(self):
        super().__init__()
        self.cfg = get_config("tiny")
        decoder = LocalDecoder()

        def context(emb):
            shape = emb.mask_features.shape[2:]
            probs = torch.zeros(1, 2, *shape)
            half = shape[2] // 2
            probs[:, 0, ..., :half] = 1.0
            probs[:, 1, ..., half:] = 1.0
            return SimpleNamespace(kind_probs=probs)

        decoder.context = context
        self.decoder = decoder

    def point_kinds(self, emb, points):
        return torch.tensor([[[1.0, 0.0]]])


def test_the_predictor_keeps_what_the_gate_drops_only_when_asked_and_alike():
    vol = np.full((16, 16, 64), -150.0, np.float32)  # HU; the CT window maps it to -0.95
    vol[6:10, 6:10, 6:10] = 60.0  # the clicked lesion (left: kind 0), normalised +0.10
    vol[6:10, 6:10, 38:42] = 80.0  # right: kind 1 to the head, but alike (+0.20)
    vol[6:10, 6:10, 50:54] = 230.0  # right: kind 1, and much brighter (+0.95)
    p = Predictor(TwoKindModel(), device="cpu")
    p.set_image(vol, (1, 1, 1), modality="ct")

    def found(**kw) -> list[int]:
        pred = p.predict([(8, 8, 8)], options=PredictOptions(**kw))
        return sorted(int(inst.centroid()[2]) // 16 for inst in pred.instances)

    assert found(kind_gate=0.0) == [0, 2, 3]  # no gate: all three
    assert found() == [0]  # the gate alone (the default): the right-hand pieces are another kind
    pred = p.predict([(8, 8, 8)])
    assert len(pred.gated) == 2 and pred.hidden_by_kind_gate(0.0, 0.0) == 2  # and the user is told so
    assert pred.hidden_by_kind_gate(0.0, 1e6) == 0 and p.predict([(8, 8, 8)], options=PredictOptions(rescue=5.0)).gated == ()
    assert found(rescue=1.6) == [0, 2]  # rescued: the alike one, not the much brighter one
    assert found(rescue=5.0) == [0, 2, 3]
    assert found(kind_gate=0.0, rescue=1.6) == [0, 2, 3]  # the rescue only acts on what the gate drops


@pytest.mark.parametrize("bad", [0.5, -1.0, float("inf"), float("nan"), True])
def test_a_ratio_below_one_is_an_input_error(bad):
    with pytest.raises(InputError, match="rescue"):
        PredictOptions(rescue=bad)
