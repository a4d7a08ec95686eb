"""Model weights as safetensors (no pickle) with the config in the file's metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..data.io import atomic_write
from ..errors import WeightsError
from .config import MIQSAMConfig
from .kind import widen_kind_head
from .miqsam import MIQSAM3D

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "miqsam_cpu.safetensors"


def save_weights(model: MIQSAM3D, path: str | Path, *, trained: bool, extra: dict | None = None) -> Path:
    """Write ``model``'s parameters and config to ``path`` atomically (``data.io.atomic_write``)."""
    from safetensors.torch import save

    path = Path(path)
    meta = {"config": json.dumps(model.cfg.to_dict()), "trained": "true" if trained else "false",
            "format": "napari-miqsam/1"}
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    old_mode = path.stat().st_mode & 0o777 if path.exists() else None

    def write(tmp: Path) -> None:
        # serialised here and written by Python: safetensors' own save_file makes the file private
        # (0600); a new file gets the umask's mode, a rewrite keeps the old file's
        with open(tmp, "wb") as fh:
            fh.write(save(state, metadata=meta))
        if old_mode is not None:
            os.chmod(tmp, old_mode)

    return atomic_write(path, write, overwrite=True)


def read_metadata(path: str | Path) -> dict:
    """The string metadata of a weights file (config JSON, trained flag, provenance)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises several types for truncated/foreign files
        raise WeightsError(f"{path} is not a readable safetensors weights file ({exc})") from exc


def update_metadata(path: str | Path, extra: dict) -> Path:
    """Rewrite a weights file with ``extra`` merged into its metadata (tensors and other keys kept;
    atomic, like :func:`save_weights`). E.g. ``{"inference_spacing": [1.3, 1.3, 1.3]}`` after
    measuring on validation data which model-grid spacing the weights predict best at."""
    model, meta = load_weights(path)
    keep = {k: v for k, v in meta.items() if k not in ("config", "trained", "format")}
    return save_weights(model, path, trained=meta.get("trained") == "true", extra={**keep, **extra})


def update_config(path: str | Path, **fields) -> Path:
    """Rewrite a weights file with config fields that change how the network runs but none of its
    tensors (e.g. ``kv_pool``, ``max_window``); every tensor and metadata key is kept (atomic).
    Raises WeightsError when the new config does not hold the same tensors."""
    from dataclasses import replace

    model, meta = load_weights(path)
    new = MIQSAM3D(replace(model.cfg, **fields))
    try:
        result = new.load_state_dict(model.state_dict(), strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        raise WeightsError(f"{sorted(fields)} change the tensors of {path}; train instead of rewriting") from exc
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(f"{sorted(fields)} change the tensors of {path}; train instead of rewriting")
    keep = {k: v for k, v in meta.items() if k not in ("config", "trained", "format")}
    return save_weights(new, path, trained=meta.get("trained") == "true", extra=keep)


def load_weights(path: str | Path, device: str = "cpu") -> tuple[MIQSAM3D, dict]:
    """Build the model described by the file's metadata and load its parameters (never unpickles).

    Raises WeightsError naming the file when it is missing, truncated, or for another architecture.
    """
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    if "config" not in meta:
        raise WeightsError(f"{path} has no napari-miqsam config in its metadata; it was not made by this project")
    try:
        cfg = MIQSAMConfig.from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"{path} has an unreadable config: {exc}") from exc
    model = MIQSAM3D(cfg)
    try:
        state = load_file(str(path), device=device)
    except Exception as exc:
        raise WeightsError(f"{path} could not be read ({exc}); the file may be truncated") from exc
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{path} does not fit the MIQ-SAM3D architecture of its config: "
            f"{len(result.missing_keys)} missing and {len(result.unexpected_keys)} unexpected tensors"
        )
    return model.to(device).eval(), meta


#: The convolutions that read the input volume: a model with more input channels than a weights file
#: gets the file's kernels for the first channels and zeros for the rest, so it predicts exactly as
#: the file's network until training gives the new channels a say.
INPUT_CONVS = ("encoder.cnn.stem.0.weight", "encoder.patch_embed.proj.weight")


def _wider_input(have, want) -> bool:
    return len(have) == len(want) == 5 and have[0] == want[0] and have[2:] == want[2:] and have[1] < want[1]


def init_from(model: MIQSAM3D, path: str | Path) -> list[str]:
    """Warm start: copy every tensor of a weights file whose name and shape fit ``model`` (never unpickles).

    For fine-tuning the shipped weights on new data, or for a model that adds parts to the
    architecture of the file; a kind head with more lesion kinds than the file's is widened
    (:func:`.kind.widen_kind_head`), and so are the input convolutions of a model with more input
    channels (``INPUT_CONVS``: zero kernels for the new channels). Returns the names of the model's tensors that kept their fresh
    initialisation. Raises WeightsError when nothing fits.
    """
    from safetensors.torch import load_file

    read_metadata(path)  # clear errors for a missing or foreign file
    state = load_file(str(path))
    own = model.state_dict()
    head = "encoder.kind_head."
    if head + "weight" in state and head + "weight" in own and state[head + "weight"].shape[0] < own[head + "weight"].shape[0]:
        # a model with more lesion kinds than the file (relative kinds): each trained kind seeds a block
        state[head + "weight"], state[head + "bias"] = widen_kind_head(
            state[head + "weight"], state[head + "bias"], own[head + "weight"].shape[0] - 1)
    for name in INPUT_CONVS:  # more input channels than the file (ct_extra_windows): the new ones start at zero
        if name in state and name in own and _wider_input(state[name].shape, own[name].shape):
            wide = torch.zeros(own[name].shape, dtype=state[name].dtype)
            wide[:, : state[name].shape[1]] = state[name]
            state[name] = wide
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fits:
        raise WeightsError(f"no tensor of {path} fits the {model.cfg.name!r} model")
    model.load_state_dict(fits, strict=False)
    return sorted(set(own) - set(fits))
