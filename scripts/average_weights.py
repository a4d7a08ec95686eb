"""Average the parameters of several weights files of one architecture (a uniform "model soup",
Wortsman et al. 2022): fine-tunes of one network usually sit in one basin of the loss, and their
mean often generalises better than any of them.

    python scripts/average_weights.py OUT.safetensors A.safetensors B.safetensors [...]

The files must share the config (same tensor names and shapes); OUT takes the first file's
metadata, with ``averaged_from`` naming the inputs. Never unpickles.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from napari_miqsam.errors import WeightsError
from napari_miqsam.model.weights import load_weights, save_weights


def average(paths: list[Path]) -> tuple[torch.nn.Module, dict]:
    """The first file's model with every tensor replaced by its mean over ``paths``."""
    if len(paths) < 2:
        raise WeightsError("averaging needs at least two weights files")
    model, meta = load_weights(paths[0])
    first = model.state_dict()
    total = {k: v.detach().double().clone() for k, v in first.items()}
    for path in paths[1:]:
        other, other_meta = load_weights(path)
        if json.loads(other_meta["config"]) != json.loads(meta["config"]):
            raise WeightsError(f"{path} has another config than {paths[0]}; only one architecture can be averaged")
        for k, v in other.state_dict().items():
            total[k] += v.detach().double()
    state = {k: (v / len(paths)).to(first[k].dtype) for k, v in total.items()}
    model.load_state_dict(state)
    return model, meta


def main(out: str, *sources: str) -> None:
    paths = [Path(s) for s in sources]
    model, meta = average(paths)
    keep = {k: v for k, v in meta.items() if k not in ("config", "trained", "format")}
    keep["averaged_from"] = json.dumps([str(p) for p in paths])
    save_weights(model, Path(out), trained=meta.get("trained") == "true", extra=keep)
    print(f"wrote {out}: the mean of {len(paths)} files")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], *sys.argv[2:])
