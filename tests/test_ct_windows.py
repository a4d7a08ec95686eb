"""More CT windows as more input channels (config ``ct_extra_windows``): what each channel holds,
that one-channel weights widened with --init predict exactly as before, and that such a network trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_miqsam.data.phantom import make_phantom
from napari_miqsam.inference.predictor import Predictor
from napari_miqsam.inference.preprocess import extra_channels, normalise_and_read
from napari_miqsam.model.config import MIQSAMConfig, get_config
from napari_miqsam.model.miqsam import MIQSAM3D
from napari_miqsam.model.weights import init_from, load_weights, save_weights
from napari_miqsam.training.sampling import augment, prepare_case, sample_example

WIDE = ((-400.0, 700.0),)


def test_config_counts_a_channel_per_window():
    cfg = get_config("tiny", ct_extra_windows=[[-400, 700]])
    assert cfg.in_channels == 2 and cfg.ct_extra_windows == WIDE
    assert MIQSAMConfig.from_dict(cfg.to_dict()) == cfg  # through a weights file's JSON
    assert get_config("cpu").in_channels == 1 and get_config("cpu").ct_extra_windows == ()
    with pytest.raises(ValueError, match="in_channels must be"):
        get_config("tiny", ct_extra_windows=WIDE, in_channels=1)
    with pytest.raises(ValueError, match="half_width > 0"):
        get_config("tiny", ct_extra_windows=((0.0, 0.0),))


def test_the_wide_window_tells_lung_from_air_and_ground_glass_from_lung():
    """Lung (-850), air (-1000) and ground glass (-550) are one value on the first window and three on a wide one."""
    vol = np.full((8, 8, 8), -1000.0, np.float32)
    vol[:, :, 3:] = -850.0
    vol[:, :, 6:] = -550.0
    vol[:, :2] = 60.0  # soft tissue: the volume reads as CT
    first, read_as = normalise_and_read(vol)
    assert read_as == "ct"
    (wide,) = list(extra_channels(vol, WIDE, read_as, first))
    air, lung, glass = (float(c[4, 4, x]) for c in (first,) for x in (1, 4, 7))
    assert air == lung == glass == -1.0
    air, lung, glass = (float(wide[4, 4, x]) for x in (1, 4, 7))
    assert -1.0 < air < lung < glass < 1.0 and lung - air > 0.2
    # not read as CT: percentiles have no second window, the channel repeats the first
    (same,) = list(extra_channels(vol, WIDE, "other", first))
    assert same is first


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    """Random tiny one-channel weights, and the same widened to two channels by init_from."""
    d = tmp_path_factory.mktemp("w")
    torch.manual_seed(0)
    one = MIQSAM3D(get_config("tiny"))
    save_weights(one, d / "one.safetensors", trained=False)
    two = MIQSAM3D(get_config("tiny", ct_extra_windows=WIDE))
    fresh = init_from(two, d / "one.safetensors")
    assert fresh == []  # every tensor came from the file, the input convolutions widened
    assert two.encoder.cnn.stem[0].weight[:, 1:].abs().sum() == 0
    save_weights(two, d / "two.safetensors", trained=False)
    return d / "one.safetensors", d / "two.safetensors"


@pytest.mark.parametrize("modality", ["auto", "other"])
def test_widened_weights_predict_exactly_as_the_one_channel_ones(one_and_two, modality):
    case = make_phantom(3, shape=(40, 48, 48))
    click = tuple(int(v) for v in np.argwhere(case.labels == 2)[0])
    answers = []
    for path in one_and_two:
        p = Predictor.from_weights(path, device="cpu")
        assert p.cfg.in_channels == (1 if path == one_and_two[0] else 2)
        p.set_image(case.image, case.spacing, modality=modality)
        pred = p.predict([click])
        answers.append((pred.labels(0.0, 0)[0], pred.scores))
    assert np.array_equal(answers[0][0], answers[1][0])
    assert np.allclose(answers[0][1], answers[1][1], atol=1e-5)


def test_a_two_channel_network_reads_its_second_channel(one_and_two):
    """Give the wide channel weight: the answer changes (the channel reaches the encoder)."""
    model, _ = load_weights(one_and_two[1])
    with torch.no_grad():
        model.encoder.cnn.stem[0].weight[:, 1:] = model.encoder.cnn.stem[0].weight[:, :1]
    x = torch.full((1, 2, 16, 16, 16), -1.0)
    x[:, 1, :, :, 8:] = 0.3
    a = model.embed(x).tokens
    x[:, 1] = -1.0
    b = model.embed(x).tokens
    assert not torch.allclose(a, b)


def test_training_examples_carry_every_channel_and_contrast_curves_keep_them_one():
    cfg = get_config("tiny", ct_extra_windows=WIDE)
    case = make_phantom(1, shape=(32, 48, 48))
    prepared = prepare_case(case.image, case.labels, case.spacing, cfg)
    assert prepared.extra is not None and prepared.extra.shape == (1, *prepared.image.shape)
    rng = np.random.default_rng(0)
    ex = sample_example(prepared, 32, rng)
    assert ex.image.shape[0] == 2 and not torch.equal(ex.image[0], ex.image[1])
    curved = augment(ex, np.random.default_rng(1), random_contrast=1.0)  # another modality: percentiles
    assert curved.image.shape == ex.image.shape and torch.equal(curved.image[0], curved.image[1])
    # one channel: the example is what it was before the option existed
    one = prepare_case(case.image, case.labels, case.spacing, get_config("tiny"))
    assert one.extra is None and np.array_equal(one.image, prepared.image)
    assert sample_example(one, 32, np.random.default_rng(0)).image.shape[0] == 1


def test_two_channel_training_from_one_channel_weights(tmp_path, one_and_two):
    from napari_miqsam.training.loop import TrainOptions, train

    logs = []
    result = train(TrainOptions(config="tiny", data="phantom", batch=1, patch=32, pool=1, cases=2, warmup=1, steps=2,
                                device="cpu", phantom_shape=(32, 64, 64), out=str(tmp_path / "t"),
                                init=str(one_and_two[0]), ablation={"ct_extra_windows": [[-400, 700]]},
                                random_contrast=0.5), log=logs.append)
    model, _ = load_weights(result.weights)
    assert model.cfg.in_channels == 2 and model.cfg.ct_extra_windows == WIDE
    assert model.encoder.cnn.stem[0].weight[:, 1:].abs().sum() > 0  # the new channel learned something
