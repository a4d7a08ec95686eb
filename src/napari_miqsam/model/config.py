"""Named configurations of the MIQ-SAM3D network (dataclasses; modules take plain arguments).

Presets:
  * ``tiny``  - unit tests; runs in well under a second on a 64^3 volume on CPU.
  * ``cpu``   - the shipped default; sized so that a 128^3 window embeds in < 1 s on 2 CPU cores
                and trains on a 2-core CPU in about an hour.
  * ``paper`` - 128^3 patches and ViT-B-like width, for GPU training on LiTS17 / KiTS21.

Ablation switches (each defaults to the full method):
  * ``gating``      - saliency-gated hybrid encoder; False -> plain ViT blocks, branches summed.
  * ``pciqg``       - N prompt-conditioned queries; False -> one query made from the prompt alone.
  * ``competition`` - per-voxel softmax over queries + background; False -> independent sigmoids.
  * ``kind_prior``  - lesion-kind head + same-kind bias on the masks (our addition); False -> none.
  * ``relative_kinds`` - the kind head's clusters are compared with the clicked lesion instead of
                      being fixed data-set classes (our addition; see the field's comment).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace


@dataclass(frozen=True)
class MIQSAMConfig:
    name: str = "cpu"
    in_channels: int = 1
    # CNN branch: channels at strides 2, 4, 8 (the stem patchifies 2x2x2; a stride-1 stage is
    # omitted because a full-resolution 3D conv costs more than the rest of the encoder on a CPU).
    cnn_channels: tuple[int, int, int] = (16, 32, 64)
    cnn_blocks: tuple[int, int, int] = (1, 1, 1)
    # ViT branch: patch size 8 (tokens at stride 8), width, depth, heads.
    vit_dim: int = 96
    vit_depth: int = 2
    vit_heads: int = 4
    mlp_ratio: float = 3.0
    # Keys and values of the ViT's self-attention averaged over kv_pool^3 cells of tokens (model/vit.py):
    # each token still attends to the whole window, to 1/8 as many keys at 2. 1 = every token (exact;
    # the default, so weights files written before the option read as they were made). The ``cpu``
    # preset and the shipped weights use 2: on 2 CPU cores a 152^3 window embeds in 0.33 s instead of
    # 0.66 s, and the stage 9 weights (trained with 1) scored within noise of 1 on phantom:40:0 and
    # ood:40:0 (docs/results.md, issue #33).
    kv_pool: int = 1
    # Pixel decoder output (mask features at stride 2).
    mask_dim: int = 16
    # Residual conv blocks on the stride-2 features before the mask projection (pixel_decoder.MaskBlock):
    # more capacity where small lesions live. Each starts as the identity, so a network of the same
    # config with fewer blocks, loaded with ``--init``, predicts exactly as before training begins.
    mask_blocks: int = 0
    # Prompt-conditioned instance-query generator.
    num_queries: int = 16
    fourier_bands: int = 8
    # Competitive query refinement decoder.
    decoder_layers: int = 3
    decoder_heads: int = 4
    # Lesion kinds the kind head tells apart (KiTS: tumour, cyst) and whether the same-kind prior
    # biases the masks (model/kind.py).
    kinds: int = 2
    kind_prior: bool = True
    # Exemplar-relative kinds: the kind head's lesion channels are latent appearance clusters, trained
    # only to put lesions of one labelled kind in one cluster and different kinds of the same volume in
    # different ones (training.losses.relative_kind_loss), so "the same kind" means "like the clicked
    # lesion" for any lesion type, including ones never named in training. False: lesion channel k is
    # the data set's k-th lesion class (tumour, cyst), so the kinds have names.
    relative_kinds: bool = False
    # Stride-1 mask refiner (model/refine.py): redraws each found instance at the model spacing.
    refine: bool = True
    refine_width: int = 12
    # Model grid: voxels are resampled to this spacing (z, y, x) in mm before the encoder.
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    # Fourier position encodings measure distances in units of position_extent / 2 model voxels (a
    # fixed length, so 64^3 training patches and 128^3 inference windows encode positions alike).
    position_extent: int = 128
    # Sliding windows (model voxels, inference only). A volume is covered by the fewest windows of at
    # most ``max_window`` a side that overlap by ``overlap``, sized to the volume (inference/tiling.py),
    # so their total volume stays close to the volume's own. 160 from measurement (exact attention, 2
    # CPU cores): one window's embedding costs about the same per voxel from 96 to 144 voxels a
    # side, 1.3x at 160 (the ViT's attention grows with the square of the tokens) and 2x at 176, and a
    # 148^3 grid (128^3 at 1.5 mm onto the 1.3 mm grid) still fits one window. With pooled keys
    # (kv_pool 2, the ``cpu`` preset) the attention no longer dominates and 168 is used: a 315-voxel
    # side (512 voxels at 0.8 mm) then takes 2 windows instead of 3 (512x512x200: 12 windows instead
    # of 27, the embedding 7.7 -> 6.2 s); cubic windows above ~160 cost 1.4x per voxel (the stride-2
    # maps outgrow the CPU's cache), so the limit is not raised further.
    max_window: int = 160
    overlap: int = 16
    # The one fixed window size of weights made before ``max_window`` (kept so their metadata reads
    # the same); a Predictor's ``window=`` sets the largest window instead.
    window: int = 128
    # Intensity handling for CT (Hounsfield units): window centre and half-width.
    ct_level: float = 40.0
    ct_half_width: float = 200.0
    # More CT windows, each one more input channel after the first: ((level, half_width), ...) in HU.
    # The one window above clips everything under -160 HU to one flat floor, so lung reads as the air
    # outside the body and ground glass as lung; the lung window ((-600, 750),) shows them.
    # ``in_channels`` must be 1 + their number (get_config sets it). Images not read as CT (MR,
    # microscopy: percentiles) repeat their one normalised channel. Empty: one channel (the shipped
    # weights). Weights of one channel widen with ``--init`` so they predict exactly as before
    # (model.weights.init_from): the new channels start with zero weight.
    ct_extra_windows: tuple = ()
    # Ablations.
    gating: bool = True
    pciqg: bool = True
    competition: bool = True

    def __post_init__(self) -> None:
        windows = tuple(tuple(float(v) for v in w) for w in self.ct_extra_windows)
        if any(len(w) != 2 or not w[1] > 0 for w in windows):
            raise ValueError(f"ct_extra_windows must be (level, half_width) pairs with half_width > 0, got {self.ct_extra_windows!r}")
        object.__setattr__(self, "ct_extra_windows", windows)  # lists from JSON become tuples
        if self.in_channels != 1 + len(windows):
            raise ValueError(f"in_channels must be 1 + len(ct_extra_windows) = {1 + len(windows)}, got {self.in_channels}")

    @property
    def patch(self) -> int:
        """Token stride of the ViT branch and of the deepest CNN stage."""
        return 8

    @property
    def pad_multiple(self) -> int:
        """Model inputs are padded to a multiple of this many voxels on each axis: the token stride,
        all the encoder needs (its stride-2, 4 and 8 maps then line up exactly)."""
        return self.patch

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MIQSAMConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        kw.setdefault("kind_prior", False)  # files written before the kind prior existed have none
        kw.setdefault("refine", False)  # nor the refiner
        # files written before max_window (one fixed window) take the default: their networks run
        # in windows sized to the volume like any other
        return cls(**kw)


PRESETS: dict[str, MIQSAMConfig] = {
    "tiny": MIQSAMConfig(
        name="tiny", cnn_channels=(8, 8, 16), vit_dim=32, vit_depth=1, vit_heads=2,
        mask_dim=8, num_queries=8, fourier_bands=4, decoder_layers=2, decoder_heads=2,
        spacing=(1.0, 1.0, 1.0), position_extent=64, window=64, max_window=64, overlap=8,
    ),
    "cpu": MIQSAMConfig(name="cpu", kv_pool=2, max_window=168),
    "paper": MIQSAMConfig(
        name="paper", cnn_channels=(32, 64, 128), cnn_blocks=(1, 2, 2), vit_dim=384,
        vit_depth=8, vit_heads=6, mlp_ratio=4.0, mask_dim=32, num_queries=16,
        decoder_layers=6, decoder_heads=8, spacing=(1.0, 1.0, 1.0), window=128, overlap=32,
    ),
}


def get_config(name: str = "cpu", **overrides) -> MIQSAMConfig:
    """Return a preset by name, with optional field overrides (e.g. ``gating=False``; lists, as
    from JSON, become tuples, as in :meth:`MIQSAMConfig.from_dict`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(PRESETS)}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    if "ct_extra_windows" in overrides and "in_channels" not in overrides:
        overrides["in_channels"] = 1 + len(overrides["ct_extra_windows"])
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]
