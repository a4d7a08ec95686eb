"""The user's own weights: where adapted weights go, and their cards (no torch, no napari imports).

Adapted weights (``training.adapt``) are new files in a user folder, never the shipped file; each
``NAME.safetensors`` has a card ``NAME.json`` beside it (base weights and their sha256, data set,
cases, held-out scores), as the shipped ``weights/miqsam_cpu.safetensors`` has its model card. The
widget's Weights list reads :func:`list_user_weights`; its "Add to data set" collects into
:func:`user_dataset_dir` unless the user picks another folder.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path

__all__ = ["DATASET_DIR_ENV", "WEIGHTS_DIR_ENV", "card_path", "list_user_weights", "new_weights_path", "read_card",
           "user_data_dir", "user_dataset_dir", "user_weights_dir"]

APP = "napari-miqsam"
#: Overrides the user weights folder (tests, shared installations).
WEIGHTS_DIR_ENV = "NAPARI_MIQSAM_WEIGHTS_DIR"
#: Overrides the widget's default data set folder.
DATASET_DIR_ENV = "NAPARI_MIQSAM_DATASET_DIR"


def user_data_dir() -> Path:
    """napari-miqsam's folder in the user's data directory (not created here).

    ``platformdirs.user_data_dir("napari-miqsam")`` (napari depends on platformdirs:
    ``~/.local/share/napari-miqsam`` on Linux, ``~/Library/Application Support/napari-miqsam`` on
    macOS, ``%LOCALAPPDATA%`` on Windows); without platformdirs the same places by hand.
    """
    try:
        from platformdirs import user_data_dir as platform_data_dir

        return Path(platform_data_dir(APP, appauthor=False))
    except ImportError:
        pass
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / APP


def user_weights_dir() -> Path:
    """The folder of the user's adapted weights (not created here): ``$NAPARI_MIQSAM_WEIGHTS_DIR``
    if set, else :func:`user_data_dir` ``/weights``."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env).expanduser() if env else user_data_dir() / "weights"


def user_dataset_dir() -> Path:
    """The default data set folder the widget collects labelled volumes into (not created here):
    ``$NAPARI_MIQSAM_DATASET_DIR`` if set, else :func:`user_data_dir` ``/datasets/my_lesions``."""
    env = os.environ.get(DATASET_DIR_ENV)
    return Path(env).expanduser() if env else user_data_dir() / "datasets" / "my_lesions"


def card_path(weights: Path | str) -> Path:
    """The card of a weights file: ``NAME.json`` beside ``NAME.safetensors``."""
    return Path(weights).with_suffix(".json")


def read_card(weights: Path | str) -> dict | None:
    """The card of a weights file, or None when it has none (or an unreadable one)."""
    try:
        return json.loads(card_path(weights).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def new_weights_path(name: str = "adapted", folder: Path | str | None = None) -> Path:
    """A free ``NAME-YYYYmmdd-HHMMSS[-k].safetensors`` in ``folder`` (default :func:`user_weights_dir`)."""
    folder = Path(folder) if folder is not None else user_weights_dir()
    stem = f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    path, k = folder / f"{stem}.safetensors", 1
    while path.exists() or card_path(path).exists():
        k += 1
        path = folder / f"{stem}-{k}.safetensors"
    return path


def list_user_weights(folder: Path | str | None = None) -> list[tuple[Path, dict | None]]:
    """(weights file, its card or None) for every ``*.safetensors`` in the user folder, newest first."""
    folder = Path(folder) if folder is not None else user_weights_dir()
    if not folder.is_dir():
        return []
    files = [p for p in folder.glob("*.safetensors") if p.is_file() and not p.name.startswith(".")]
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [(p, read_card(p)) for p in files]
