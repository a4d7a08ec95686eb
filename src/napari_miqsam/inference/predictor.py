"""Predictor: embed a volume once, answer many clicks from the cache (the SAM contract, in 3D).

    predictor = Predictor.from_weights()              # shipped default weights
    predictor.set_image(volume, spacing=(2.5, 0.8, 0.8))   # expensive: the encoder, once
    prediction = predictor.predict(positive=[(40, 120, 96)])  # cheap: PC-IQG + CQRD + head
    labels, table = prediction.labels(threshold=0.2)        # no model call
    predictor.predict([(40, 120, 96)], options=PredictOptions(kind_gate=0.0))  # prompt-time options

Volumes larger than one window are covered by overlapping sliding windows sized to the volume
(inference/tiling.py: the fewest windows of at most ``max_window`` a side); the queries are made
once (each click's features from the window that owns it) and decoded in every window, so lesions
anywhere in the volume are found; instances cut by window borders are merged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CancelledError, InputError, NotReadyError, OutOfMemoryError, WeightsError
from ..model.config import MIQSAMConfig, get_config
from ..model.decoder import DecoderContext
from ..model.encoder import Embedding
from ..model.kind import prompt_kind, snap_to_lesion
from ..model.miqsam import MIQSAM3D
from ..model.refine import OTHER_LOGIT, refine_instance
from ..model.weights import DEFAULT_WEIGHTS, load_weights
from .allocator import keep_freed_blocks
from .grow import grow_to_edge
from .options import KIND_GATE, MASK_LEVEL, REMOVED, SNAP_RADIUS, PredictOptions  # noqa: F401 (KIND_GATE, SNAP_RADIUS: re-exported)
from .postprocess import (
    Refine,
    instance_scores,
    keep_best,
    kind_consistency,
    pieces_at,
    select,
    split_instances,
    to_original_grid,
)
from .precision import embed_dtype
from .prediction import Prediction, named_kinds
from .preprocess import GridMap, as_volume, check_spacing, extra_channels, normalise_and_read
from .rescue import contrast_matches
from .resample import interpolate_separable, resample_to_model
from .threads import one_blas_thread
from .tiling import Window, plan_windows

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
STRIDE = 2  # mask features are at stride 2 of the model grid
FAST_SPACING_FACTOR = 1.5 / 1.3  # the widget's "Detail: fast": a grid this much coarser (0.65x the voxels)
GROW_MAX_CELLS = 100  # only instances of at most this many stride-2 cells are grown (small lesions)
GROW_REACH_MM = 4.0  # how far (mm) a mask may grow; the surroundings are read from reach to 2 x reach
MAX_INSTANCES = 255  # an untrained or confused model can return thousands of specks; keep the best


def check_model_spacing(spacing: float | Sequence[float]) -> tuple[float, float, float]:
    """A model-grid spacing as (z, y, x) mm from one number or three; InputError otherwise."""
    sp = np.atleast_1d(np.asarray(spacing, dtype=float)).ravel()
    if sp.size == 1:
        sp = np.repeat(sp, 3)
    if sp.size != 3 or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"the model spacing must be one or three positive numbers (mm), got {spacing!r}")
    return tuple(float(v) for v in sp)  # type: ignore[return-value]


def inference_spacing(meta: dict) -> tuple[float, float, float] | None:
    """The model-grid spacing a weights file asks inference to run at (its ``inference_spacing``
    metadata, chosen on validation data), or None: the training spacing of its config."""
    value = meta.get("inference_spacing")
    if value is None:
        return None
    try:
        return check_model_spacing(json.loads(value) if isinstance(value, str) else value)
    except (ValueError, InputError) as exc:
        raise WeightsError(f"the weights' inference_spacing metadata is unreadable: {value!r}") from exc


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu. Raises InputError for an unavailable device."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA GPU is available; use 'cpu' or 'auto'")
    if device == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise InputError("device 'mps' was requested but Apple MPS is not available; use 'cpu' or 'auto'")
    if device not in ("cpu", "cuda", "mps"):
        raise InputError(f"unknown device {device!r}; choose auto, cpu, cuda or mps")
    return torch.device(device)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (MemoryError, getattr(torch.cuda, "OutOfMemoryError", MemoryError))) or "out of memory" in str(exc).lower()


@dataclass
class CachedWindow:
    window: Window
    embedding: Embedding
    valid_shape: tuple[int, int, int]  # unpadded size of the window in model voxels
    context: DecoderContext | None = None  # the decoder's prompt-independent work, made once

    def float32(self) -> Embedding:
        """The cached embedding in float32 (the cache may hold float16)."""
        emb = self.embedding
        return emb if emb.tokens.dtype == torch.float32 else emb.to(torch.float32)


#: the prompt-time settings that were Predictor attributes before PredictOptions
_MOVED_TO_OPTIONS = ("kind_gate", "grow", "refine", "snap_radius", "mask_level")


class Predictor:
    """Caches the volume embedding; see the module docstring. What a click asks beyond its points
    (the kind gate, growing, refining, the kind to look for) is a :class:`PredictOptions` passed to
    :meth:`predict`; the model grid (``spacing``, ``window``) is fixed here, at construction.

    Attributes:
        trained: False when the weights are untrained (e.g. ``from_config``); say so to the user.
        embed_calls: how many times the encoder has run (one per window per ``set_image``).
        read_as: how ``set_image`` read the volume's values: 'ct' (HU window) or 'other'
            (percentiles); None before an image is set.
    """

    def __init__(self, model: MIQSAM3D, *, trained: bool = True, device: str = "auto",
                 cache_dtype: torch.dtype = torch.float32, metadata: dict | None = None,
                 window: int | None = None, overlap: int | None = None,
                 spacing: float | Sequence[float] | None = None, precision: str = "auto"):
        """``window`` / ``overlap`` (model voxels) override the config's largest sliding window
        (``max_window``) and the windows' overlap; ``spacing`` (mm, one number or (z, y, x)) the
        model grid's spacing (default: the config's, the spacing the weights were trained at; see
        :func:`inference_spacing`); ``precision`` the encoder's number format ('auto': bfloat16 on
        a CPU that computes it natively, else float32; 'float32'; 'bfloat16'; inference/precision.py)."""
        self.device = resolve_device(device)
        keep_freed_blocks()  # once per process: clicks reuse their buffers (inference/allocator.py)
        self.precision = precision
        self.embed_dtype = embed_dtype(precision, self.device)
        self.model = model.to(self.device).eval()
        self.cfg: MIQSAMConfig = model.cfg
        if window is not None or overlap is not None:
            w = window if window is not None else self.cfg.max_window
            o = overlap if overlap is not None else min(self.cfg.overlap, w // 4)
            if w % self.cfg.pad_multiple or w < 2 * self.cfg.pad_multiple or not 0 <= o < w // 2:
                raise InputError(f"window must be a multiple of {self.cfg.pad_multiple} (>= {2 * self.cfg.pad_multiple}) "
                                 f"and overlap below half of it; got window {w}, overlap {o}")
            self.cfg = replace(self.cfg, window=w, max_window=w, overlap=o)
        self.trained = trained
        self.metadata = metadata or {}
        self.cache_dtype = cache_dtype
        self.embed_calls = 0
        self._windows: list[CachedWindow] = []
        self._grid: GridMap | None = None
        self._padded: tuple[int, int, int] | None = None
        self._model_vol: torch.Tensor | None = None  # padded model-grid volume (CPU): refiner and growing
        self.read_as: str | None = None
        if spacing is not None:
            self.set_model_spacing(spacing)

    def __setattr__(self, name: str, value) -> None:
        # an old script setting a knob that is now an option (or gone) must not be silently ignored
        if name in _MOVED_TO_OPTIONS:
            raise AttributeError(f"Predictor.{name} is now a prompt-time option: pass "
                                 f"predict(..., options=PredictOptions({name}=...))")
        if name in REMOVED:
            raise AttributeError(f"Predictor.{name} was removed: {REMOVED[name]}")
        super().__setattr__(name, value)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_weights(cls, path: str | Path | None = None, device: str = "auto", **kw) -> "Predictor":
        """Load a .safetensors file (None: the shipped default weights)."""
        path = Path(path) if path is not None else DEFAULT_WEIGHTS
        if not path.exists():
            if path == DEFAULT_WEIGHTS:
                raise WeightsError(f"the shipped default weights are missing ({path}); reinstall napari-miqsam or pass a weights file")
            raise WeightsError(f"weights file not found: {path}")
        model, meta = load_weights(path)
        if kw.get("spacing") is None:
            kw["spacing"] = inference_spacing(meta)
        return cls(model, trained=meta.get("trained", "false") == "true", device=device, metadata=meta, **kw)

    @classmethod
    def from_config(cls, name: str = "tiny", seed: int = 0, device: str = "cpu", **overrides) -> "Predictor":
        """An untrained model of a named config (tests, smoke runs)."""
        torch.manual_seed(seed)
        return cls(MIQSAM3D(get_config(name, **overrides)), trained=False, device=device)

    @property
    def kind_names(self) -> tuple[str, ...]:
        """Names of the weights' lesion kinds in kind order (their ``kind_names`` metadata, written by
        training from the data set; :func:`.prediction.named_kinds`); empty without a kind head or
        without names (then kinds go by number)."""
        if not self.cfg.kind_prior or self.cfg.relative_kinds:  # relative kinds are clusters, never named
            return ()
        return named_kinds(self.cfg.kinds, self.metadata)

    # ----------------------------------------------------------------- model grid
    @property
    def model_spacing(self) -> tuple[float, float, float]:
        """The model grid's spacing (mm) that ``set_image`` resamples to."""
        return tuple(self.cfg.spacing)  # type: ignore[return-value]

    @property
    def training_spacing(self) -> tuple[float, float, float]:
        """The spacing the weights were trained at (their config's)."""
        return tuple(self.model.cfg.spacing)  # type: ignore[return-value]

    def fast_spacing(self) -> tuple[float, float, float]:
        """A grid ``FAST_SPACING_FACTOR`` coarser than the current one (shipped weights: 1.3 -> 1.5 mm):
        the widget's *Detail: fast*."""
        return tuple(round(s * FAST_SPACING_FACTOR, 6) for s in self.model_spacing)  # type: ignore[return-value]

    def set_model_spacing(self, spacing: float | Sequence[float]) -> bool:
        """Use another model-grid spacing (mm); True when it changed, which drops the embedded
        image (call ``set_image`` again). InputError for a bad value."""
        sp = check_model_spacing(spacing)
        if sp == self.model_spacing:
            return False
        self.cfg = replace(self.cfg, spacing=sp)
        self.reset_image()
        return True

    # ----------------------------------------------------------------- embedding
    @property
    def is_image_set(self) -> bool:
        return bool(self._windows)

    @property
    def grid(self) -> GridMap:
        if self._grid is None:
            raise NotReadyError("no image is set: call set_image(volume, spacing) before predict()")
        return self._grid

    def reset_image(self) -> None:
        self._windows, self._grid, self._padded, self._model_vol = [], None, None, None
        self.read_as = None

    @one_blas_thread
    def set_image(self, volume: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0), *,
                  modality: str = "auto", channel: int | None = None,
                  progress: Progress | None = None, cancel: Cancel | None = None) -> None:
        """Normalise, resample to the model spacing and run the encoder once per window.

        volume: (z, y, x) array of any numeric dtype (a 4D array needs ``channel``).
        spacing: (z, y, x) voxel size in mm. modality: 'auto' (CT detected from HU range), 'ct', 'other'.
        Raises InputError for unusable input, CancelledError if ``cancel()`` turns True between
        windows, OutOfMemoryError if the device runs out of memory. Invalid input keeps the previous
        cache; otherwise it is replaced (and left empty if the embedding is cancelled).
        """
        vol = as_volume(volume, channel)
        sp = check_spacing(spacing)
        grid = GridMap.build(vol.shape, sp, self.cfg.spacing)
        norm, read_as = normalise_and_read(vol, self.cfg.ct_level, self.cfg.ct_half_width, modality)
        self.reset_image()  # input is valid: free the old cache before building the new one
        model_vol = resample_to_model(norm, grid.model_shape)
        padded = tuple(n + (n % STRIDE) for n in grid.model_shape)
        pad = [0, padded[2] - grid.model_shape[2], 0, padded[1] - grid.model_shape[1], 0, padded[0] - grid.model_shape[0]]
        # more input channels (config ct_extra_windows): resampled one at a time; the refiner, growing
        # and the click checks read the first channel only, as they were made for it
        extra = [F.pad(resample_to_model(ch, grid.model_shape), pad, value=-1.0)
                 for ch in extra_channels(vol, self.cfg.ct_extra_windows, read_as, norm)]
        del norm
        if padded != grid.model_shape:
            model_vol = F.pad(model_vol, pad, value=-1.0)
        channels = torch.stack([model_vol, *extra]) if extra else None
        del extra
        windows = plan_windows(padded, self.cfg.max_window, self.cfg.overlap, self.cfg.pad_multiple)
        cached = []
        try:
            for i, win in enumerate(windows):
                if cancel is not None and cancel():
                    raise CancelledError("embedding cancelled")
                box = tuple(slice(a, b) for a, b in zip(win.start, win.stop))
                crop = model_vol[box] if channels is None else channels[(slice(None), *box)]
                cached.append(self._embed_window(win, crop))
                if progress is not None:
                    progress(i + 1, len(windows))
        except RuntimeError as exc:
            if is_oom(exc):
                raise OutOfMemoryError(
                    f"out of memory while embedding a {vol.shape} volume on {self.device}; try the CPU or a smaller window"
                ) from exc
            raise
        except MemoryError as exc:
            raise OutOfMemoryError(f"out of memory while embedding a {vol.shape} volume; try a smaller window") from exc
        self._windows, self._grid, self._padded, self._model_vol = cached, grid, padded, model_vol
        self.read_as = read_as

    def _embed_window(self, win: Window, crop: torch.Tensor) -> CachedWindow:
        """``crop``: (D, H, W), or (C, D, H, W) with more input channels."""
        m = self.cfg.pad_multiple
        valid = tuple(crop.shape[-3:])
        target = [-(-n // m) * m for n in valid]
        x = F.pad(crop, [0, target[2] - valid[2], 0, target[1] - valid[1], 0, target[0] - valid[0]], value=-1.0)
        x = x[None] if x.ndim == 4 else x[None, None]
        with torch.inference_mode():
            with torch.autocast(self.device.type, dtype=self.embed_dtype, enabled=self.embed_dtype != torch.float32):
                emb = self.model.embed(x.to(self.device))
            if self.embed_dtype != torch.float32:  # the decoder and everything after it: float32
                emb = emb.to(torch.float32)
            self.embed_calls += 1
            cw = CachedWindow(win, emb.to(self.cache_dtype) if self.cache_dtype != torch.float32 else emb, valid)
            cw.context = self.model.decoder.context(cw.float32())
        return cw

    # ----------------------------------------------------------------- prompting
    def _check_points(self, points, name: str) -> np.ndarray:
        pts = np.asarray(points if points is not None else [], dtype=float)
        if pts.size == 0:
            return np.zeros((0, 3))
        if pts.ndim == 1:
            pts = pts[None]
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise InputError(f"{name} points must be (z, y, x) triples, got an array of shape {pts.shape}")
        if not np.isfinite(pts).all():
            raise InputError(f"{name} points contain NaN or infinite coordinates")
        shape = np.asarray(self.grid.shape)
        outside = np.any((pts < -0.5) | (pts > shape - 0.5), axis=1)
        if outside.any():
            bad = tuple(round(float(v), 1) for v in pts[outside][0])
            raise InputError(f"{name} point {bad} (z, y, x) lies outside the volume of shape {tuple(shape)}")
        return pts

    def _owner(self, point_model: np.ndarray) -> int:
        p = np.clip(np.floor(point_model + 0.5), 0, np.asarray(self._padded) - 1)
        for i, cw in enumerate(self._windows):
            if cw.window.contains_owned(p):
                return i
        return 0

    @one_blas_thread
    def predict(self, positive: Sequence[Sequence[float]], negative: Sequence[Sequence[float]] = (), *,
                options: PredictOptions | None = None, progress: Progress | None = None,
                cancel: Cancel | None = None) -> Prediction:
        """Find every instance of the kind the positive click(s) point at.

        positive / negative: (z, y, x) voxel coordinates of the ORIGINAL volume (floats allowed).
        options: the kind gate, growing, refining, the kind to look for and the click snapping
        (:class:`PredictOptions`); None: ``PredictOptions()``, the shipped defaults.
        Returns a Prediction in the original grid. An instance containing a negative click is
        removed. Raises NotReadyError before set_image, InputError for points outside the volume,
        no positive point, or an ``options.kind`` the weights do not have, CancelledError if
        ``cancel()`` turns True between windows.
        """
        options = PredictOptions() if options is None else options
        if not isinstance(options, PredictOptions):
            raise InputError(f"options must be a PredictOptions, got {type(options).__name__}")
        kind = options.kind
        if not self._windows:
            raise NotReadyError("no image is set: call set_image(volume, spacing) before predict()")
        pos = self._check_points(positive, "positive")
        neg = self._check_points(negative, "negative")
        if len(pos) == 0:
            raise InputError("at least one positive point is needed (negative points alone say only what is NOT wanted)")
        if kind is not None:
            if not self.cfg.kind_prior:
                raise InputError("these weights have no lesion-kind head, so a kind cannot be given; leave kind=None")
            if self.cfg.relative_kinds:
                raise InputError("these weights look for lesions like the clicked one (relative kinds), so a kind "
                                 "cannot be named; leave kind=None and click a lesion of the kind wanted")
            if not kind < self.cfg.kinds:
                raise InputError(f"kind must be an index of the weights' {self.cfg.kinds} lesion kinds "
                                 f"(0..{self.cfg.kinds - 1}), got {kind!r}")
        given = kind
        grid = self.grid
        pts_model = grid.to_model(np.concatenate([pos, neg]))
        labels = torch.tensor([[1] * len(pos) + [0] * len(neg)], device=self.device)
        with torch.inference_mode():
            tokens, kinds = self._prompt_tokens(pts_model, labels, options.snap_radius)
            valid = torch.ones(labels.shape, dtype=torch.bool, device=self.device)
            queries = self.model.query_generator.queries_from_prompt(tokens, labels, valid)
            if kinds is None:
                pi = None
            elif given is not None:  # the caller's kind, all of the prompt's weight on it
                pi = torch.zeros(1, kinds.shape[-1], device=kinds.device, dtype=kinds.dtype)
                pi[0, given] = 1.0
            else:
                pi = prompt_kind(kinds, labels, valid)
            maps = self._decode_all(queries, tokens, valid, pi, options.kind_gate > 0, progress, cancel)
        slot, fg, score_map, kind_probs = maps
        ids, n = split_instances(slot)
        scores = instance_scores(ids, n, score_map)
        gated: tuple[tuple[float, float], ...] = ()
        if options.kind_gate > 0 and kind_probs is not None and n:
            clicked = pieces_at(ids, np.floor(pts_model[: len(pos)] / STRIDE))
            agree = kind_consistency(ids, n, kind_probs, clicked, pi[0].float().cpu().numpy())
            keep = agree >= options.kind_gate
            keep[clicked - 1] = True
            if options.rescue and not keep.all():
                dropped = np.nonzero(~keep)[0]
                keep[dropped] = contrast_matches(ids, self._stride_image(), clicked, dropped + 1, options.rescue)
            if not keep.all():
                cell_mm3 = float(np.prod(self.model_spacing)) * STRIDE ** 3
                cells = np.bincount(ids.ravel(), minlength=n + 1)[1:]
                gated = tuple((float(scores[k]), float(cells[k] * cell_mm3)) for k in np.nonzero(~keep)[0])
                ids, n, scores = select(ids, scores, np.nonzero(keep)[0])
        ids, n, scores = keep_best(ids, n, scores, MAX_INSTANCES)
        instances = to_original_grid(ids, n, fg, scores, grid, STRIDE, negative=neg,
                                     refine=self._mask_logits(fg, ids, options), mask_level=options.mask_level)
        # the kind read at the click, reported only where the kinds are named classes (not clusters)
        looked_for = None if pi is None or self.cfg.relative_kinds else tuple(float(v) for v in pi[0].float().cpu())
        return Prediction(grid.shape, grid.spacing, instances, pos, neg, kind=looked_for, kind_names=self.kind_names,
                          gated=gated, read_as=self.read_as, below_window=self._below_window(pts_model[: len(pos)]),
                          window_floor_hu=self.cfg.ct_level - self.cfg.ct_half_width if self.read_as == "ct" else None)

    def _below_window(self, points_model: np.ndarray) -> int:
        """How many of the (P, 3) model-grid points sit where the CT window clipped the image to its
        floor: the median of the 3x3x3 voxels around the point is the floor value (-1)."""
        if self.read_as != "ct" or self._model_vol is None:
            return 0
        vol = self._model_vol
        n = 0
        for p in np.round(np.asarray(points_model, float)).astype(int).reshape(-1, 3):
            box = tuple(slice(max(0, int(c) - 1), min(s, int(c) + 2)) for c, s in zip(p, vol.shape))
            n += bool(float(vol[box].float().median()) <= -1.0 + 1e-3)
        return n

    def _stride_image(self) -> np.ndarray:
        """The model-grid image averaged over each stride-2 cell: the grid of the slot maps."""
        with torch.inference_mode():
            return F.avg_pool3d(self._model_vol[None, None].float(), STRIDE)[0, 0].numpy()

    def _mask_logits(self, fg: np.ndarray, ids: np.ndarray, options: PredictOptions) -> Refine | None:
        """logits(k, lo, hi): instance k's stride-1 logits over stride-2 cells [lo, hi), refined
        (``options.refine`` and a refiner in the weights) and/or grown (``options.grow``, instances
        of at most ``GROW_MAX_CELLS`` cells); None for an instance neither touches, and None
        instead of the function when nothing would: ``to_original_grid`` then interpolates ``fg``."""
        refiner = self.model.refiner if options.refine else None
        if refiner is None and not options.grow:
            return None
        fg_t, ids_t = torch.from_numpy(fg), torch.from_numpy(ids)
        cells = np.bincount(ids.ravel(), minlength=int(ids.max()) + 1) if options.grow else None

        def logits(k: int, lo: tuple, hi: tuple) -> np.ndarray | None:
            small = cells is not None and cells[k] <= GROW_MAX_CELLS
            if refiner is not None:
                with torch.inference_mode():
                    out = refine_instance(refiner, self._model_vol, fg_t, ids_t, k, lo, hi).float().cpu().numpy()
            elif small:
                out = upsampled_logits(fg, ids, k, lo, hi)
            else:
                return None
            return self._grow(out, ids, k, lo, options.mask_level) if small else out

        return logits

    def _grow(self, logits: np.ndarray, ids: np.ndarray, k: int, lo: tuple, level: float = MASK_LEVEL) -> np.ndarray:
        """Instance k's stride-1 logits (voxel 0 = model voxel 2 * lo) grown to the image's edge,
        read with a margin around them so the surroundings ring is whole."""
        sp = self.model_spacing
        start = [STRIDE * a for a in lo]
        stop = [s + n for s, n in zip(start, logits.shape)]
        margin = [int(np.ceil(2 * GROW_REACH_MM / v)) + 1 for v in sp]
        a = [max(0, s - m) for s, m in zip(start, margin)]
        b = [min(n, e + m) for n, e, m in zip(self._model_vol.shape, stop, margin)]
        image = self._model_vol[tuple(slice(i, j) for i, j in zip(a, b))].numpy()  # padded to even: holds the box
        big = np.full(image.shape, OTHER_LOGIT, dtype=np.float32)  # outside the box: certainly not it
        inner = tuple(slice(s - i, e - i) for s, e, i in zip(start, stop, a))
        big[inner] = logits
        cell_ids = ids[tuple(slice(i // STRIDE, -(-j // STRIDE)) for i, j in zip(a, b))]
        up = cell_ids.repeat(STRIDE, 0).repeat(STRIDE, 1).repeat(STRIDE, 2)
        off = [i - STRIDE * (i // STRIDE) for i in a]
        up = up[tuple(slice(o, o + n) for o, n in zip(off, image.shape))]
        blocked = (up > 0) & (up != k)
        grown = grow_to_edge(image, big, level, blocked, seed=up == k, spacing=sp, reach_mm=GROW_REACH_MM)
        return grown[inner]

    def _prompt_tokens(self, pts_model: np.ndarray, labels: torch.Tensor,
                       snap_radius: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each click's embedding (1, P, C) and lesion-kind distribution (1, P, K) (None without
        the kind prior), both from the window that owns the click (a positive click snapped onto
        the most lesion-like cell within ``snap_radius`` stride-2 cells)."""
        qg = self.model.query_generator
        tokens, kinds = [], []
        for i, p in enumerate(pts_model):
            cw = self._windows[self._owner(p)]
            emb = cw.float32()
            local = torch.tensor(p - np.asarray(cw.window.start), dtype=torch.float32, device=self.device)
            if snap_radius and int(labels[0, i]) == 1 and emb.kind_logits is not None:
                local = snap_to_lesion(emb.kind_logits, local, snap_radius)
            local = local[None, None]
            tokens.append(qg.point_embeddings(emb, local, labels[:, i:i + 1]))
            kinds.append(self.model.point_kinds(emb, local))
        return torch.cat(tokens, dim=1), (torch.cat(kinds, dim=1) if kinds[0] is not None else None)

    def _decode_all(self, queries, tokens, valid, kind, gate: bool, progress, cancel):
        """Decode the queries in every window; fill stride-2 maps of the padded model grid (and
        the kind head's map when ``gate``: only the kind gate reads it)."""
        shape2 = tuple(n // STRIDE for n in self._padded)
        slot = np.zeros(shape2, dtype=np.int16)
        fg = np.zeros(shape2, dtype=np.float32)
        score_map = np.zeros(shape2, dtype=np.float32)
        with_kind = kind is not None and gate
        kind_probs = None
        for i, cw in enumerate(self._windows):
            if cancel is not None and cancel():
                raise CancelledError("prediction cancelled")
            win = cw.window
            own = tuple(slice((a - s) // STRIDE, (b - s) // STRIDE) for a, b, s in zip(win.own_start, win.own_stop, win.start))
            dst = tuple(slice(a // STRIDE, b // STRIDE) for a, b in zip(win.own_start, win.own_stop))
            # the last layer's masks only where this window owns the cells (the same numbers there)
            out = self.model.decoder(cw.float32(), queries, tokens, valid, kind, cw.context, region=own)[-1]
            conf = out.scores[0]  # (N,)
            assigned, fg_w = (t[0] for t in out.winners())  # the winning slot (0 background) and P(not background)
            best_q = (assigned - 1).clamp(min=0)
            slot[dst] = assigned.cpu().numpy()
            fg[dst] = fg_w.float().cpu().numpy()
            score_map[dst] = conf[best_q].float().cpu().numpy()
            if with_kind and cw.context is not None and cw.context.kind_probs is not None:
                probs = cw.context.kind_probs[0]  # (K, d2, h2, w2) of this window
                if kind_probs is None:
                    kind_probs = np.zeros((probs.shape[0], *shape2), dtype=np.float32)
                kind_probs[(slice(None), *dst)] = probs[(slice(None), *own)].float().cpu().numpy()
            if progress is not None:
                progress(i + 1, len(self._windows))
        # crop away the padding of the model grid
        valid2 = tuple(-(-n // STRIDE) for n in self.grid.model_shape)
        crop = tuple(slice(0, n) for n in valid2)
        if kind_probs is not None:
            kind_probs = kind_probs[(slice(None), *crop)]
        return slot[crop], fg[crop], score_map[crop], kind_probs


def upsampled_logits(fg: np.ndarray, ids: np.ndarray, k: int, lo: tuple, hi: tuple) -> np.ndarray:
    """Instance k's mask logits at stride 1 over stride-2 cells [lo, hi) without a refiner: its
    foreground probability ``fg`` (other instances' cells: 0) interpolated to the model voxels'
    centres, as logits; voxel 0 is model voxel ``STRIDE * lo``, as ``refine_instance`` returns."""
    cells = tuple(slice(a, b) for a, b in zip(lo, hi))
    p = np.where((ids[cells] == 0) | (ids[cells] == k), fg[cells], 0.0).astype(np.float32)
    centres = [(np.arange(STRIDE * (b - a)) + 0.5) / STRIDE - 0.5 for a, b in zip(lo, hi)]
    p = np.clip(interpolate_separable(p, tuple(centres)), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)
