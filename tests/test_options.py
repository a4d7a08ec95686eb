"""PredictOptions: the prompt-time options of Predictor.predict, built from CLI flags and widget state."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_miqsam.cli import build_parser, main
from napari_miqsam.errors import InputError
from napari_miqsam.inference.options import KIND_GATE, MASK_LEVEL, SNAP_RADIUS, PredictOptions
from napari_miqsam.inference.predictor import Predictor
from napari_miqsam.model.head import LayerOutput

from test_predictor import LocalDecoder, LocalModel


def test_defaults_are_the_shipped_settings_and_frozen():
    o = PredictOptions()
    assert (o.kind_gate, o.grow, o.refine, o.kind, o.snap_radius, o.mask_level, o.rescue) == (0.5, True, True, None, 1, 0.0, 0.0)
    assert (KIND_GATE, SNAP_RADIUS, MASK_LEVEL) == (0.5, 1, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.grow = False  # type: ignore[misc]
    assert PredictOptions(kind_gate=0) == PredictOptions(kind_gate=0.0) and hash(PredictOptions(kind=np.int64(1)))
    assert PredictOptions(kind=np.int64(1)).kind == 1 and type(PredictOptions(kind=np.int64(1)).kind) is int


@pytest.mark.parametrize("bad, match", [
    ({"kind_gate": 1.5}, "kind_gate"), ({"kind_gate": -0.1}, "kind_gate"), ({"kind_gate": float("nan")}, "kind_gate"),
    ({"kind_gate": True}, "kind_gate"), ({"kind": -1}, "kind"), ({"kind": 0.5}, "kind"), ({"kind": "cyst"}, "kind"),
    ({"kind": True}, "kind"), ({"snap_radius": -1}, "snap_radius"), ({"mask_level": float("inf")}, "mask_level"),
])
def test_bad_values_are_input_errors(bad, match):
    with pytest.raises(InputError, match=match):
        PredictOptions(**bad)


def test_from_widget_maps_the_check_boxes():
    assert PredictOptions.from_widget() == PredictOptions()
    assert PredictOptions.from_widget(kind_gate=False, grow=True) == PredictOptions(kind_gate=0.0)
    assert PredictOptions.from_widget(kind_gate=True, grow=False) == PredictOptions(grow=False)


@pytest.mark.parametrize("command", [["evaluate", "phantom:1:0"], ["predict", "x.nii.gz", "-o", "y.nii.gz"],
                                     ["benchmark"]])
def test_from_cli_reads_the_same_flags_on_every_command(command):
    parser = build_parser()
    assert PredictOptions.from_cli(parser.parse_args(command)) == PredictOptions()
    args = parser.parse_args([*command, "--kind-gate", "0.3", "--rescue", "1.6", "--no-grow", "--no-refine"])
    assert PredictOptions.from_cli(args, kind=1) == PredictOptions(kind_gate=0.3, grow=False, refine=False, kind=1,
                                                                   rescue=1.6)
    with pytest.raises(InputError, match="--kind-gate must lie in"):
        PredictOptions.from_cli(parser.parse_args([*command, "--kind-gate", "2"]))
    with pytest.raises(InputError, match="--rescue must be"):
        PredictOptions.from_cli(parser.parse_args([*command, "--rescue", "0.5"]))


def test_removed_flag_and_attributes_say_why(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "x.nii.gz", "-o", "y.nii.gz", "--point", "1", "1", "1", "--kind-scoring"])
    assert "--kind-scoring was removed: kind scoring measured no better" in capsys.readouterr().err
    p = Predictor.from_config("tiny")
    for name in ("kind_gate", "grow", "refine", "snap_radius", "mask_level"):
        with pytest.raises(AttributeError, match=f"options=PredictOptions\\({name}="):
            setattr(p, name, 0)
    for name in ("kind_scoring", "split_by_query"):
        with pytest.raises(AttributeError, match="was removed"):
            setattr(p, name, False)
    p.set_image(np.zeros((16, 16, 16), np.float32), (1, 1, 1))
    with pytest.raises(InputError, match="PredictOptions"):
        p.predict([(8, 8, 8)], options={"grow": False})


class CoreDecoder(LocalDecoder):
    """Foreground only where the pooled intensity is above 0.5: the bright core of a lesion whose
    body is dimmer, so the mask is drawn too small, as the network draws small lesions."""

    def forward(self, emb, queries, tokens, valid, kind=None, context=None, region=None):
        logits = (emb.mask_features - 0.5) * self.scale
        if region is not None:
            logits = logits[(Ellipsis, *region)]
        return [LayerOutput(logits, torch.zeros(1, 1), torch.zeros_like(logits), True)]


def test_growing_works_with_and_without_the_refiner():
    """A 6-voxel lesion whose 2.5-voxel core is all the network finds: growing reaches out into the
    lesion's body whether the mask was refined, upsampled (refine off), or the weights have no
    refiner; grow and refine both off is the plain upsampled mask."""
    rng = np.random.default_rng(0)
    vol = rng.normal(-100, 5, (32, 32, 32)).astype(np.float32)
    r2 = sum((g - 16) ** 2 for g in np.ogrid[:32, :32, :32])
    vol[r2 <= 36] = 100.0  # HU: body
    vol[r2 <= 6] = 200.0  # core
    model = LocalModel()
    model.decoder = CoreDecoder()
    p = Predictor(model, device="cpu")
    p.set_image(vol, (1, 1, 1), modality="ct")

    def size(**kw) -> int:
        lab, rows = p.predict([(16, 16, 16)], options=PredictOptions(**kw)).labels(0.0, 0.0)
        assert len(rows) == 1
        return rows[0]["voxels"]

    plain, refined = size(refine=False, grow=False), size(grow=False)
    grown_plain, grown_refined = size(refine=False), size()
    assert grown_plain > 4 * plain and grown_refined > 4 * refined
    assert max(grown_plain, grown_refined) < int((r2 <= 36).sum())  # never past the lesion's edge
    model.refiner = None  # weights without a refiner: the same as refine off
    assert size(grow=False) == plain and size() == grown_plain
