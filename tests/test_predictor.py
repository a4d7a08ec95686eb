"""Predictor: cache contract, coordinate mapping, original-grid outputs, tiling, errors."""

import numpy as np
import pytest
import torch

from napari_miqsam.errors import CancelledError, InputError, NotReadyError
from napari_miqsam.inference.options import PredictOptions
from napari_miqsam.inference.postprocess import split_instances, to_original_grid
from napari_miqsam.inference.prediction import Instance, Prediction
from napari_miqsam.inference.predictor import Predictor
from napari_miqsam.inference.preprocess import GridMap, normalise_and_read, normalise_intensity
from napari_miqsam.inference.resample import resample_to_model
from napari_miqsam.inference.tiling import plan_windows
from napari_miqsam.model.config import get_config
from napari_miqsam.model.encoder import Embedding
from napari_miqsam.model.head import LayerOutput
from napari_miqsam.model.refine import MaskRefiner


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_config("tiny", seed=0)


def volume(shape=(24, 40, 48), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(40, 20, shape)).astype(np.float32)


def test_predict_before_set_image_raises(predictor):
    p = Predictor.from_config("tiny")
    with pytest.raises(NotReadyError, match="set_image"):
        p.predict([(1, 1, 1)])


def test_encoder_runs_once_for_many_clicks(predictor):
    predictor.set_image(volume(), spacing=(1.0, 1.0, 1.0))
    n = predictor.embed_calls
    for pt in [(5, 10, 10), (12, 20, 30), (20, 30, 40)]:
        predictor.predict([pt])
    assert predictor.embed_calls == n


def test_labels_in_original_grid(predictor):
    shape = (13, 37, 29)
    predictor.set_image(volume(shape), spacing=(3.0, 0.7, 0.9))
    pred = predictor.predict([(6, 18, 14)], [(1, 1, 1)])
    lab, rows = pred.labels(0.0)
    assert lab.shape == shape and lab.dtype == np.uint16
    assert {r["id"] for r in rows} == set(np.unique(lab[lab > 0]).tolist())
    for r in rows:
        assert r["voxels"] == int((lab == r["id"]).sum())
        assert r["volume_mm3"] == pytest.approx(r["voxels"] * 3.0 * 0.7 * 0.9)


def test_click_mapping_with_anisotropic_spacing():
    """A click on the centre of a bright block lands on the block's centre in the model grid."""
    shape, spacing = (20, 64, 48), (2.5, 0.75, 1.25)
    grid = GridMap.build(shape, spacing, (1.0, 1.0, 1.0))
    assert grid.model_shape == (50, 48, 60)
    vol = np.zeros(shape, np.float32)
    vol[8:12, 20:28, 10:16] = 1.0  # centre (9.5, 23.5, 12.5) in original voxels
    model = resample_to_model(vol, grid.model_shape).numpy()
    com = np.array([(model * idx).sum() / model.sum() for idx in np.indices(model.shape)])
    np.testing.assert_allclose(grid.to_model([(9.5, 23.5, 12.5)])[0], com, atol=0.05)
    # round trip and physical consistency: model voxel j's centre is at (j + 0.5) * model spacing mm
    pts = np.array([[0.0, 0.0, 0.0], [19.0, 63.0, 47.0], [3.3, 7.7, 1.1]])
    np.testing.assert_allclose(grid.to_original(grid.to_model(pts)), pts, atol=1e-9)
    mm = (pts + 0.5) * spacing
    np.testing.assert_allclose((grid.to_model(pts) + 0.5) * grid.model_spacing, mm, atol=1e-9)


def test_point_outside_and_bad_inputs(predictor):
    predictor.set_image(volume(), spacing=(1, 1, 1))
    with pytest.raises(InputError, match="outside"):
        predictor.predict([(24, 5, 5)])
    with pytest.raises(InputError, match="positive"):
        predictor.predict([], [(3, 3, 3)])
    with pytest.raises(InputError, match="3D"):
        predictor.set_image(np.zeros((30, 30)), spacing=(1, 1, 1))
    with pytest.raises(InputError, match="spacing"):
        predictor.set_image(volume(), spacing=(0, 1, 1))
    with pytest.raises(InputError, match="channel"):
        predictor.set_image(np.zeros((3, 20, 20, 20)), spacing=(1, 1, 1))
    predictor.predict([(0, 0, 0)])  # a click on the edge works


class LocalPrompts:
    """The prompt side of LocalModel: one query, whatever the clicks."""

    def point_embeddings(self, emb, points, labels):
        return torch.zeros(1, points.shape[1], 4)

    def queries_from_prompt(self, tokens, labels, valid):
        return torch.zeros(1, 1, 4)


class LocalDecoder(torch.nn.Module):
    """The decoder of LocalModel: foreground where the (pooled) intensity is above 0."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def context(self, emb):
        return None

    def forward(self, emb, queries, tokens, valid, kind=None, context=None, region=None):
        logits = emb.mask_features * self.scale
        if region is not None:  # as CQRD: the last output on the window's owned cells only
            logits = logits[(Ellipsis, *region)]
        return [LayerOutput(logits, torch.zeros(1, 1), torch.zeros_like(logits), True)]


class LocalModel(torch.nn.Module):
    """A stand-in network whose answer at a voxel depends on that voxel alone (foreground where the
    normalised intensity is above 0, one query): with it, sliding windows must reproduce the
    single-window result exactly, which checks the Predictor's window bookkeeping (owned regions,
    seams, padding, cropping) independently of what a trained network makes of less context."""

    def __init__(self):
        super().__init__()
        self.cfg = get_config("tiny", kind_prior=False)
        self.query_generator = LocalPrompts()
        self.decoder = LocalDecoder()
        torch.manual_seed(0)
        self.refiner = MaskRefiner(4)  # random, non-zero: the refinement must not depend on the windows
        torch.nn.init.normal_(self.refiner.body[-1].weight, std=0.3)

    def embed(self, x):
        feats = torch.nn.functional.avg_pool3d(x, 2)
        grid = tuple(n // 8 for n in x.shape[2:])
        return Embedding(torch.zeros(1, int(np.prod(grid)), 4), grid, feats, torch.zeros(1, 1, *grid), tuple(x.shape[2:]))

    def point_kinds(self, emb, points):
        return None



@pytest.mark.parametrize("shape", [(40, 40, 40), (24, 40, 56)])
def test_sliding_windows_stitch_exactly(shape):
    """A volume that fits one window, split into overlapping windows sized to it (of another size
    on each axis, an axis that fits one window taken whole), gives the same instances."""
    rng = np.random.default_rng(3)
    vol = np.full(shape, -500.0, dtype=np.float32)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    for _ in range(6):  # blobs, some across the window seams
        c = [rng.integers(4, n - 4) for n in shape]
        r = rng.integers(2, 7)
        vol[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r] = 300.0
    big = Predictor(LocalModel(), device="cpu")
    small = Predictor(big.model, device="cpu", window=32, overlap=8)
    big.set_image(vol, (1, 1, 1), modality="ct")
    small.set_image(vol, (1, 1, 1), modality="ct")
    assert len(big._windows) == 1 and len(small._windows) == (8 if shape[0] == 40 else 4)
    sizes = {tuple(b - a for a, b in zip(cw.window.start, cw.window.stop)) for cw in small._windows}
    assert sizes == ({(24, 24, 24)} if shape[0] == 40 else {(24, 24, 32)})  # sized to the volume, not 32^3
    click = tuple(n // 2 for n in shape)
    a, rows_a = big.predict([click]).labels(0.0)
    b, rows_b = small.predict([click]).labels(0.0)
    assert (a > 0).sum() > 300 and np.array_equal(a > 0, b > 0)
    assert len(rows_a) == len(rows_b) > 1  # blobs cut by a seam are still one instance each
    assert sorted(r["voxels"] for r in rows_a) == sorted(r["voxels"] for r in rows_b)


def test_window_override_is_checked():
    with pytest.raises(InputError, match="window"):
        Predictor(LocalModel(), device="cpu", window=36)


def test_cancel_between_windows():
    p = Predictor.from_config("tiny", max_window=32, overlap=8)
    calls = []
    with pytest.raises(CancelledError):
        p.set_image(volume((40, 40, 40)), (1, 1, 1), progress=lambda i, n: calls.append(i), cancel=lambda: len(calls) >= 2)
    assert len(calls) == 2 and not p.is_image_set


@pytest.mark.parametrize("shape, max_size, overlap", [((70, 130, 96), 64, 16), ((148, 296, 386), 160, 16),
                                                       ((74, 148, 162), 160, 16), ((40, 200, 34), 48, 8)])
def test_windows_tile_the_volume(shape, max_size, overlap):
    """Windows sized to the volume: at most ``max_size`` a side, as few as overlap allows, one size
    per axis (a multiple of the alignment unless the axis is one window), starts on even voxels,
    overlapping by at least ``overlap``, owned regions tiling the volume exactly, and a total length
    per axis bounded by the axis plus the overlaps plus the alignment per window."""
    align = 8
    wins = plan_windows(shape, max_size, overlap, align)
    owned = np.zeros(shape, int)
    for w in wins:
        assert all(b - a <= max_size and a % 2 == 0 for a, b in zip(w.start, w.stop))
        assert all(a <= oa and ob <= b for a, b, oa, ob in zip(w.start, w.stop, w.own_start, w.own_stop))
        owned[tuple(slice(a, b) for a, b in zip(w.own_start, w.own_stop))] += 1
    assert (owned == 1).all()
    for axis, n in enumerate(shape):
        spans = sorted({(w.start[axis], w.stop[axis]) for w in wins})
        k = len(spans)
        assert k == (1 if n <= max_size else -(-(n - overlap) // (max_size - overlap)))  # the fewest
        lengths = {b - a for a, b in spans}
        assert len(lengths) == 1
        if k > 1:
            assert lengths.pop() % align == 0
            assert all(spans[i][1] - spans[i + 1][0] >= overlap - 1 for i in range(k - 1))
        assert sum(b - a for a, b in spans) <= n + (k - 1) * overlap + k * align
    assert len(wins) == np.prod([len({(w.start[a], w.stop[a]) for w in wins}) for a in range(3)])


def test_a_connected_piece_is_one_instance_whatever_its_queries():
    slot = np.zeros((10, 10, 10), np.int16)
    slot[2:5, 2:5, 3:5] = 1  # left of a window seam at x = 5, query 1
    slot[2:5, 2:5, 5:8] = 2  # right of it, another query (another window)
    slot[7:9, 7:9, 0:2] = 3  # a separate lesion
    ids, n = split_instances(slot)
    assert n == 2 and len(np.unique(ids[2:5, 2:5, 3:8])) == 1 and ids.dtype == np.int32


def test_upsampled_masks_are_smooth_and_exact_size():
    """A sphere on a coarse map comes back as a sphere of the right volume on a finer grid."""
    grid = GridMap.build((64, 64, 64), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0))  # model 32^3, stride-2 map 16^3
    c = (np.indices((16, 16, 16)) + 0.5) * 2.0 - 16.0  # stride-2 cell centres in mm (cells of 2 mm)
    r = np.sqrt((c ** 2).sum(0))
    fg = np.clip(0.5 + (6.0 - r) / 2.0, 0, 1).astype(np.float32)  # radius 6 mm, soft edge
    slot = (fg > 0.5).astype(np.int16)
    ids, n = split_instances(slot)
    inst = to_original_grid(ids, n, fg, np.array([0.9]), grid, 2)
    assert len(inst) == 1
    vol_mm3 = inst[0].voxels * 0.125
    assert vol_mm3 == pytest.approx(4 / 3 * np.pi * 6.0 ** 3, rel=0.12)


def test_threshold_is_a_pure_function():
    m = np.ones((2, 2, 2), bool)
    pred = Prediction((6, 6, 6), (1.0, 2.0, 1.0), [
        Instance(0.9, (slice(0, 2),) * 3, m), Instance(0.3, (slice(1, 3),) * 3, m), Instance(0.6, (slice(4, 6),) * 3, m)])
    lab, rows = pred.labels(0.5, 0.0)
    assert [r["id"] for r in rows] == [1, 2] and lab[2, 2, 2] == 0
    lab, rows = pred.labels(0.0, 0.0)
    assert lab[1, 1, 1] == 1  # overlap goes to the higher score
    assert rows[2]["voxels"] == 7 and rows[2]["volume_mm3"] == 14.0
    assert pred.count(0.95, 0.0) == 0


def test_label_rows_match_the_painted_volume_with_overlaps():
    """Rows reuse each instance's cached count and centroid unless a higher-scoring box meets its
    box; either way they equal what the label volume holds."""
    rng = np.random.default_rng(3)
    inst = []
    for _ in range(25):
        lo = rng.integers(0, 24, 3)
        size = rng.integers(1, 9, 3)
        mask = rng.random(tuple(size)) < 0.7
        mask[(0,) * 3] = True
        inst.append(Instance(float(rng.random()), tuple(slice(int(a), int(a + b)) for a, b in zip(lo, size)), mask))
    pred = Prediction((32, 32, 32), (1.0, 0.5, 2.0), inst)
    for thr in (0.0, 0.4, 0.8):
        lab, rows = pred.labels(thr, 0.0)
        shown = pred.shown(thr, 0.0)
        present = [k + 1 for k in shown if (lab == k + 1).any()]
        assert [r["id"] for r in rows] == present
        for r in rows:
            where = np.argwhere(lab == r["id"])
            assert r["voxels"] == len(where) and r["volume_mm3"] == len(where) * 1.0
            assert r["centroid"] == pytest.approx(tuple(where.mean(0)))


def test_small_instances_are_hidden_unless_clicked():
    big = np.ones((4, 4, 4), bool)  # 64 voxels of 2 mm³: 128 mm³
    small = np.ones((2, 2, 2), bool)  # 16 mm³
    inst = [Instance(0.9, (slice(0, 4),) * 3, big), Instance(0.8, (slice(6, 8),) * 3, small),
            Instance(0.7, (slice(6, 8), slice(0, 2), slice(0, 2)), small)]
    pred = Prediction((8, 8, 8), (1.0, 2.0, 1.0), inst, positive=np.array([[7.2, 0.6, 1.4]]))
    assert pred.volumes.tolist() == [128.0, 16.0, 16.0]
    assert pred.clicked().tolist() == [False, False, True]
    lab, rows = pred.labels(0.5, 30.0)
    ids = [r["id"] for r in rows]
    # the sorted instances are (0.9 big, 0.8 small, 0.7 small clicked): the unclicked small one goes
    assert ids == [1, 3] and lab[7, 7, 7] == 0 and lab[7, 1, 1] == 3
    assert pred.count(0.5, 0.0) == 3 and pred.count(0.5, 200.0) == 1
    assert pred.count(0.75, 30.0) == 1  # the clicked one still needs the confidence
    assert Prediction((8, 8, 8), (1.0, 1.0, 1.0)).count() == 0


def test_normalisation_ct_and_other():
    ct = np.full((8, 8, 8), -1000.0)
    ct[2:6] = 40.0
    out = normalise_intensity(ct)
    assert out.min() == -1.0 and abs(out[3, 3, 3]) < 1e-6
    micro = np.arange(512, dtype=np.uint16).reshape(8, 8, 8)
    out = normalise_intensity(micro)
    assert out.min() == -1.0 and out.max() == 1.0
    assert (normalise_intensity(np.full((4, 4, 4), 7)) == 0).all()
    nan = np.ones((4, 4, 4), np.float32)
    nan[0, 0, 0] = np.nan
    nan[1, 1, 1] = np.inf
    assert np.isfinite(normalise_intensity(nan)).all()
    # how the volume was read: what 'auto' decided, or what was asked
    assert normalise_and_read(ct)[1] == "ct" and normalise_and_read(micro)[1] == "other"
    assert normalise_and_read(micro, modality="ct")[1] == "ct" and normalise_and_read(ct, modality="other")[1] == "other"
    assert np.array_equal(normalise_and_read(ct)[0], normalise_intensity(ct))


def test_predictor_says_how_it_read_the_image():
    predictor = Predictor.from_config("tiny", seed=0)
    assert predictor.read_as is None
    ct = np.full((16, 16, 16), -1000.0, np.float32)
    ct[4:12, 4:12, 4:12] = 60.0
    predictor.set_image(ct, (2.0, 2.0, 2.0))
    assert predictor.read_as == "ct"
    assert predictor.predict([(8, 8, 8)]).read_as == "ct"
    predictor.set_image(ct, (2.0, 2.0, 2.0), modality="other")
    assert predictor.predict([(8, 8, 8)]).read_as == "other"
    assert predictor.predict([(8, 8, 8)]).values_read() == "not CT (percentiles)"
    predictor.reset_image()
    assert predictor.read_as is None


def test_predictor_says_when_a_click_is_below_the_ct_window():
    """A click in lung-dark tissue (under -160 HU) reads as the window's flat floor: the prediction
    says so; a click on soft tissue, or the same volume read as percentiles, does not."""
    predictor = Predictor.from_config("tiny", seed=0)
    ct = np.full((24, 24, 24), -1000.0, np.float32)
    ct[2:22, 2:22, 2:22] = -850.0  # lung
    ct[4:10, 4:10, 4:10] = 40.0  # a solid nodule
    ct[14:20, 14:20, 14:20] = -550.0  # ground glass
    predictor.set_image(ct, (2.0, 2.0, 2.0))
    solid, glass = (7, 7, 7), (17, 17, 17)
    assert predictor.predict([solid]).below_window == 0 and predictor.predict([solid]).below_window_note() is None
    one = predictor.predict([glass])
    assert one.below_window == 1 and one.window_floor_hu == -160.0
    assert one.below_window_note().startswith("the click lies below the CT window (under -160 HU)")
    assert predictor.predict([glass, solid]).below_window_note().startswith("1 of the positive clicks lie")
    predictor.set_image(ct, (2.0, 2.0, 2.0), modality="other")
    assert predictor.predict([glass]).below_window == 0


def test_keep_best_caps_the_number_of_instances():
    from napari_miqsam.inference.postprocess import keep_best

    ids = np.zeros((4, 4, 4), np.int32)
    ids[0, 0, :3] = 1  # score 0.5, 3 voxels
    ids[1, 1, 0] = 2  # score 0.9
    ids[2, 2, :2] = 3  # score 0.5, 2 voxels
    out, n, scores = keep_best(ids, 3, np.array([0.5, 0.9, 0.5]), 2)
    assert n == 2 and list(scores) == [0.9, 0.5]
    assert out[1, 1, 0] == 1 and (out[0, 0, :3] == 2).all() and (out[2, 2] == 0).all()


def test_float16_cache_gives_nearly_the_same_result():
    base = Predictor.from_config("tiny", seed=2)
    half = Predictor(base.model, trained=False, device="cpu", cache_dtype=torch.float16)
    vol = volume((24, 40, 40), seed=5)
    for p in (base, half):
        p.set_image(vol, (1, 1, 1))
    assert half._windows[0].embedding.tokens.dtype == torch.float16
    a = base.predict([(12, 20, 20)]).labels(0.0)[0] > 0
    b = half.predict([(12, 20, 20)]).labels(0.0)[0] > 0
    assert (a ^ b).mean() < 0.02


def test_kind_consistency_compares_each_piece_with_the_clicked_one():
    from napari_miqsam.inference.postprocess import kind_consistency, pieces_at

    ids = np.zeros((4, 4, 8), np.int32)
    ids[:, :, 0:2], ids[:, :, 3:5], ids[:, :, 6:8] = 1, 2, 3
    probs = np.zeros((2, 4, 4, 8), np.float32)  # (tumour, cyst) per cell
    probs[:, :, :, 0:2] = np.array([0.9, 0.05])[:, None, None, None]
    probs[:, :, :, 3:5] = np.array([0.6, 0.2])[:, None, None, None]
    probs[:, :, :, 6:8] = np.array([0.1, 0.8])[:, None, None, None]
    agree = kind_consistency(ids, 3, probs, np.array([1]))
    assert agree[0] > 0.9 and agree[1] > 0.7 and agree[2] < 0.2
    agree = kind_consistency(ids, 3, probs, np.array([3]))  # a click on the cyst
    assert agree[2] > 0.85 and agree[0] < 0.2
    # a large tumour and a small cyst both clicked: another cyst is kept, as like the second click. (A
    # prototype pooled over the clicked pieces' kind mass would be mostly tumour and drop it.)
    two = np.zeros((4, 4, 16), np.int32)
    two[:, :, 0:10], two[:, :, 11:12], two[:, :, 14:16] = 1, 2, 3  # tumour 160 cells, cysts 16 and 32
    kinds = np.zeros((2, 4, 4, 16), np.float32)
    kinds[:, :, :, 0:10] = np.array([0.9, 0.05])[:, None, None, None]
    kinds[:, :, :, 11:16] = np.array([0.1, 0.8])[:, None, None, None]
    agree = kind_consistency(two, 3, kinds, np.array([1, 2]))
    assert agree[2] > 0.85 and agree[0] > 0.9
    assert kind_consistency(two, 3, kinds, np.array([1]))[2] < 0.2  # one click on the tumour: the cyst goes
    fallback = kind_consistency(ids, 3, probs, np.array([], int), fallback=np.array([0.0, 1.0]))
    assert fallback[2] > 0.85 and fallback[0] < 0.1
    undecided = kind_consistency(ids, 3, probs, np.array([], int), fallback=np.array([0.5, 0.5]))
    assert (undecided == 1.0).all()  # nothing is dropped for a kind that cannot be told
    assert kind_consistency(ids, 3, probs, np.array([], int)).tolist() == [1.0, 1.0, 1.0]
    # a click on the background right next to piece 2 reads piece 2; far from everything, nothing
    assert pieces_at(ids, np.array([[1, 1, 5], [2, 2, 1]])).tolist() == [1, 2]
    far = np.zeros((6, 6, 6), np.int32)
    far[0, 0, 0] = 1
    assert pieces_at(far, np.array([[4, 4, 4]])).tolist() == []


def test_model_spacing_comes_from_the_weights_and_can_be_overridden(tmp_path):
    """The weights' ``inference_spacing`` metadata sets the model grid; ``spacing=`` overrides it;
    the tensors survive the metadata rewrite; bad values are clear errors."""
    from napari_miqsam.errors import WeightsError
    from napari_miqsam.model.weights import load_weights, save_weights, update_metadata

    path = save_weights(Predictor.from_config("tiny", seed=0).model, tmp_path / "w.safetensors", trained=False,
                        extra={"note": "kept"})
    assert Predictor.from_weights(path, device="cpu").cfg.spacing == (1.0, 1.0, 1.0)  # the training spacing
    before = load_weights(path)[0].state_dict()
    update_metadata(path, {"inference_spacing": [2.0, 2.0, 2.0]})
    model, meta = load_weights(path)
    assert meta["note"] == "kept" and meta["trained"] == "false"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    p = Predictor.from_weights(path, device="cpu")
    assert p.cfg.spacing == (2.0, 2.0, 2.0)
    vol = volume((20, 40, 40))
    p.set_image(vol, (1.0, 1.0, 1.0))
    assert p.grid.model_shape == (10, 20, 20)  # resampled to 2 mm
    lab, _ = p.predict([(10, 20, 20)]).labels(0.0)
    assert lab.shape == vol.shape  # and answered in the original grid
    assert Predictor.from_weights(path, device="cpu", spacing=1.5).cfg.spacing == (1.5, 1.5, 1.5)
    assert Predictor.from_weights(path, device="cpu", spacing=(3, 1, 1)).cfg.spacing == (3.0, 1.0, 1.0)
    for bad in (0, -1.0, (1.0, 2.0), float("nan")):
        with pytest.raises(InputError, match="model spacing"):
            Predictor.from_weights(path, device="cpu", spacing=bad)
    update_metadata(path, {"inference_spacing": "soon"})
    with pytest.raises(WeightsError, match="inference_spacing"):
        Predictor.from_weights(path, device="cpu")


def test_a_lower_mask_level_grows_the_mask_and_zero_is_the_default():
    grid = GridMap.build((32, 32, 32), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    c = np.indices((16, 16, 16)) - 7.5
    fg = (1 / (1 + np.exp(np.sqrt((c ** 2).sum(0)) - 4.0))).astype(np.float32)  # a soft ball
    ids, n = split_instances((fg > 0.5).astype(np.int16))
    inst = {lv: to_original_grid(ids, n, fg, np.array([0.9]), grid, 2, mask_level=lv)[0] for lv in (0.0, -1.0, 1.0)}
    default = to_original_grid(ids, n, fg, np.array([0.9]), grid, 2)[0]
    assert default.voxels == inst[0.0].voxels
    assert inst[1.0].voxels < inst[0.0].voxels < inst[-1.0].voxels


def test_saved_weights_are_readable_like_any_written_file(tmp_path):
    import os

    from napari_miqsam.model.weights import save_weights, update_metadata

    path = save_weights(Predictor.from_config("tiny", seed=0).model, tmp_path / "w.safetensors", trained=False)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not safetensors' private 0600
    os.chmod(path, 0o640)
    update_metadata(path, {"note": "x"})
    assert path.stat().st_mode & 0o777 == 0o640  # a rewrite keeps the file's mode


def test_a_given_kind_replaces_the_kind_read_at_the_click():
    """PredictOptions(kind=k) hands the decoder a one-hot of kind k in place of the kind read at the
    click; kind=None hands it what the kind head reads; a kind the weights lack is an InputError."""
    p = Predictor.from_config("tiny", seed=0)
    p.set_image(volume(), spacing=(1.0, 1.0, 1.0))
    seen = []
    forward = p.model.decoder.forward

    def spy(emb, queries, prompt, valid, kind=None, context=None, region=None):
        seen.append(None if kind is None else kind.detach().cpu().clone())
        return forward(emb, queries, prompt, valid, kind, context, region=region)

    p.model.decoder.forward = spy
    p.predict([(12, 20, 24)])
    read = seen[-1]
    assert read.shape == (1, p.cfg.kinds) and float(read.sum()) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < float(read.max()) < 1.0  # an untrained head reads neither kind for certain
    assert p.predict([(12, 20, 24)]).kind == pytest.approx(tuple(read[0].tolist()))  # what it looked for
    for k in range(p.cfg.kinds):
        pred = p.predict([(12, 20, 24)], options=PredictOptions(kind=k))
        want = torch.zeros(1, p.cfg.kinds)
        want[0, k] = 1.0
        assert torch.equal(seen[-1], want)
        assert pred.kind == tuple(want[0].tolist())
        assert pred.kind_summary() == f"{('tumour', 'cyst')[k]} (1.00)"
    for bad in (-1, p.cfg.kinds, 0.5, True, "cyst"):
        with pytest.raises(InputError, match="kind"):
            p.predict([(12, 20, 24)], options=PredictOptions(kind=bad))
    q = Predictor.from_config("tiny", seed=0, kind_prior=False)
    q.set_image(volume(), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="no lesion-kind head"):
        q.predict([(12, 20, 24)], options=PredictOptions(kind=0))
    assert q.predict([(12, 20, 24)]).kind is None


def test_kind_summary_names_two_kinds_and_numbers_others():
    def with_kind(kind):
        return Prediction((2, 2, 2), (1.0, 1.0, 1.0), kind=kind)

    assert with_kind((0.07, 0.93)).kind_summary() == "cyst (0.93)"
    assert with_kind((0.6, 0.4)).kind_summary() == "tumour (0.60)"
    assert with_kind((0.2, 0.5, 0.3)).kind_summary() == "kind 2 of 3 (0.50)"
    assert with_kind((1.0,)).kind_summary() is None  # one lesion kind: nothing to tell apart
    assert with_kind(None).kind_summary() is None
    named = Prediction((2, 2, 2), (1.0, 1.0, 1.0), kind=(0.8, 0.2), kind_names=("cancer", "label 3"))
    assert named.kind_summary() == "cancer (0.80)"  # the weights' own names win


def test_kind_names_from_the_weights_metadata():
    from napari_miqsam.inference.prediction import named_kinds

    assert named_kinds(2) == ("tumour", "cyst")  # files without names: the KiTS labelling they were trained on
    assert named_kinds(3) == ()
    assert named_kinds(2, {"kind_names": '["Cancer", "label 3"]'}) == ("cancer", "label 3")
    assert named_kinds(3, {"kind_names": '["a", "b", "c"]'}) == ("a", "b", "c")
    for bad in ('["tumour"]', '["a", "a"]', '["a", ""]', "not json", '{"a": 1}'):
        assert named_kinds(2, {"kind_names": bad}) == ("tumour", "cyst")  # unusable: the fallback
    p = Predictor.from_config("tiny", seed=0)
    p.metadata = {"kind_names": '["cancer", "cyst"]'}
    p.set_image(volume(), spacing=(1.0, 1.0, 1.0))
    pred = p.predict([(12, 20, 24)], options=PredictOptions(kind=0))
    assert p.kind_names == ("cancer", "cyst") and pred.kind_summary() == "cancer (1.00)"
    assert Predictor.from_config("tiny", seed=0, kind_prior=False).kind_names == ()


def test_numpy_blas_is_held_to_one_thread_inside_the_predictor_and_restored():
    from threadpoolctl import threadpool_info

    from napari_miqsam.inference.threads import one_blas_thread

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("numpy has no BLAS library threadpoolctl can see here")
    seen = []
    before = blas_threads()
    one_blas_thread(lambda: seen.extend(blas_threads()))()
    assert seen and all(n == 1 for n in seen)
    assert blas_threads() == before
    assert Predictor.predict.__wrapped__ and Predictor.set_image.__wrapped__  # both decorated


def test_precision_names_and_the_bfloat16_encoder_stays_close_to_float32():
    from napari_miqsam.inference.precision import cpu_has_native_bf16, embed_dtype

    cpu = torch.device("cpu")
    assert embed_dtype("float32", cpu) == torch.float32 and embed_dtype("bfloat16", cpu) == torch.bfloat16
    assert embed_dtype("auto", cpu) == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    with pytest.raises(InputError):
        embed_dtype("float16", cpu)
    vol = np.random.default_rng(0).normal(0, 1, (40, 40, 40)).astype(np.float32)
    vol[14:26, 14:26, 14:26] += 4
    out = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        p = Predictor.from_config("tiny")
        p = Predictor(p.model, trained=False, device="cpu", precision=precision)
        p.set_image(vol, (1.0, 1.0, 1.0))
        emb = p._windows[0].float32()
        assert emb.mask_features.dtype == torch.float32  # the cache and the decoder stay float32
        out[precision] = emb.mask_features
    scale = out["float32"].abs().max()
    assert (out["bfloat16"] - out["float32"]).abs().max() < 0.05 * scale  # bfloat16 keeps ~3 digits
    assert not torch.equal(out["bfloat16"], out["float32"])  # and it did run in bfloat16


def test_glibc_keeps_freed_blocks_once_a_predictor_exists(monkeypatch):
    import platform
    import sys

    from napari_miqsam.inference import allocator

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    monkeypatch.setattr(allocator, "_done", False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1")
    assert allocator.keep_freed_blocks() is False  # the user's environment wins
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    Predictor.from_config("tiny")
    assert allocator._done and allocator.keep_freed_blocks() is True


@pytest.mark.parametrize("shape, model_shape", [((20, 40, 36), (31, 25, 22)), ((20, 40, 36), (20, 25, 22)),
                                                ((12, 16, 16), (30, 16, 16)), ((30, 20, 20), (18, 33, 25))])
def test_resampling_shortcuts_equal_the_3d_operators(shape, model_shape):
    """The in-plane pooling and z-only interpolation give what adaptive_avg_pool3d / trilinear give."""
    import torch.nn.functional as F

    vol = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    x = torch.from_numpy(vol)[None, None]
    down = tuple(min(n, m) for n, m in zip(shape, model_shape))
    if down != shape:
        x = F.adaptive_avg_pool3d(x, down)
    if down != model_shape:
        x = F.interpolate(x, size=model_shape, mode="trilinear", align_corners=False)
    torch.testing.assert_close(resample_to_model(vol, model_shape), x[0, 0], atol=1e-6, rtol=1e-6)
