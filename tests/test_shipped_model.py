"""The shipped default weights: they load without pickle, carry a model card, and find lesions far
from the click in a volume that needs several windows."""

import json

import numpy as np
import pytest

from napari_miqsam.data.instances import instances_of
from napari_miqsam.data.phantom import make_phantom
from napari_miqsam.evaluation.metrics import dice
from napari_miqsam.inference.options import PredictOptions
from napari_miqsam.inference.predictor import Predictor
from napari_miqsam.model.weights import DEFAULT_WEIGHTS, read_metadata


@pytest.fixture(scope="module")
def shipped():
    return Predictor.from_weights(None, device="cpu")


def test_shipped_weights_and_model_card():
    meta = read_metadata(DEFAULT_WEIGHTS)
    assert meta["trained"] == "true"
    assert DEFAULT_WEIGHTS.stat().st_size < 20e6
    card = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert "phantom" in card["what_it_is"] and "NOT a clinical model" in card["what_it_is"]
    assert card["training"]["command"] and card["training"]["code_commit"]
    assert card["evaluation"]["cases"] == 40 and "dice" in card["evaluation"]["model"]
    assert card["config"] == json.loads(meta["config"])  # the card describes the network the file holds
    assert json.loads(meta["kind_names"]) == card["inference"]["kind_names"]["names"] == ["tumour", "cyst"]


def test_a_lesion_far_from_the_click_is_found(shipped):
    """Two copies of a phantom side by side (several windows): a click on a tumour in the left copy
    finds its twin in the right copy, windows away from the click."""
    case = make_phantom(7, spacing=(2.0, 0.9, 0.9))
    image = np.concatenate([case.image, case.image], axis=2)
    labels = np.concatenate([case.labels, case.labels], axis=2)
    shipped.set_image(image, case.spacing)
    assert len(shipped._windows) >= 2
    ids, n = instances_of(case.labels, 2)
    assert n > 0
    target = int(np.argmax(np.bincount(ids.ravel())[1:])) + 1  # the largest tumour
    where = np.argwhere(ids == target)
    click = tuple(int(v) for v in where[len(where) // 2])
    lab, _ = shipped.predict([click]).labels(0.3)
    width = case.image.shape[2]
    twin = np.zeros(labels.shape, bool)
    twin[:, :, width:] = ids == target
    found = np.unique(lab[twin])
    found = found[found > 0]
    assert len(found) > 0, "the twin lesion was not found"
    best = max(dice(lab == k, twin) for k in found)
    assert best > 0.5
    # and the click's own window agrees with the far window about the lesion
    own = np.zeros(labels.shape, bool)
    own[:, :, :width] = ids == target
    assert abs(dice(np.isin(lab, found), twin) - max(dice(lab == k, own) for k in np.unique(lab[own]) if k)) < 0.3


def test_the_kind_gate_only_removes_pieces_and_keeps_the_clicked_one(shipped):
    """The kind gate (PredictOptions.kind_gate) drops pieces whose kind disagrees with the clicked piece: the gated
    prediction is the ungated one minus some instances, never the one under the click."""
    case = make_phantom(11)
    shipped.set_image(case.image, case.spacing)
    for cls in (2, 3):
        ids, n = instances_of(case.labels, cls)
        if not n:
            continue
        click = tuple(int(v) for v in np.argwhere(ids == 1).mean(0).round())
        if ids[click] != 1:
            click = tuple(np.argwhere(ids == 1)[0])
        everything = shipped.predict([click], options=PredictOptions(kind_gate=0.0))
        gated = shipped.predict([click], options=PredictOptions(kind_gate=0.5))
        assert 0 < len(gated) <= len(everything)
        masks = {(tuple((s.start, s.stop) for s in i.bbox), i.mask.tobytes()) for i in everything.instances}
        assert all((tuple((s.start, s.stop) for s in i.bbox), i.mask.tobytes()) in masks for i in gated.instances)
        assert gated.clicked().any() == everything.clicked().any()  # the clicked piece always stays


def test_the_shipped_refiner_is_trained_and_redraws_the_masks(shipped):
    """The shipped weights carry a trained mask refiner (model/refine.py), the Predictor uses it by
    default, and on a phantom its stride-1 masks are at least as close to the lesions as the
    upsampled stride-2 ones."""
    assert shipped.model.refiner is not None and PredictOptions().refine
    last = shipped.model.refiner.body[-1].weight
    assert float(last.detach().abs().max()) > 0  # an untrained refiner's last layer is zero (plain upsampling)
    case = make_phantom(3)
    shipped.set_image(case.image, case.spacing)
    ids, n = instances_of(case.labels, 2)
    assert n > 0
    target = int(np.argmax(np.bincount(ids.ravel())[1:])) + 1
    where = np.argwhere(ids == target)
    click = tuple(int(v) for v in where[len(where) // 2])
    scores = {}
    for refine in (False, True):
        lab, _ = shipped.predict([click], options=PredictOptions(refine=refine)).labels(0.0)
        k = lab[click]
        assert k > 0, "the clicked lesion was not found"
        scores[refine] = dice(lab == k, ids == target)
    assert scores[True] != scores[False]  # the refiner really redraws the mask
    assert scores[True] > scores[False] - 0.02


def test_the_shipped_weights_ask_for_the_model_grid_their_card_names():
    """The model grid inference runs at is stored in the weights and documented in the card."""
    from napari_miqsam.inference.predictor import inference_spacing

    card = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    asked = inference_spacing(read_metadata(DEFAULT_WEIGHTS))
    assert asked is not None and list(asked) == card["inference"]["model_spacing_mm"]
    assert list(asked) == card["evaluation"]["model_spacing_mm"]
    p = Predictor.from_weights(None, device="cpu")
    assert p.model_spacing == asked and list(p.training_spacing) == card["training"]["model_spacing_mm"]
