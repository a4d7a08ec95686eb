"""Export a training checkpoint (OUT/checkpoint.pt) to .safetensors weights, e.g. to evaluate a run
that is still going.

    python scripts/export_checkpoint.py runs/cpu/checkpoint.pt runs/cpu/step.safetensors
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from napari_miqsam.model.config import get_config
from napari_miqsam.model.miqsam import MIQSAM3D
from napari_miqsam.model.weights import save_weights


def main(src: str, dst: str) -> None:
    state = torch.load(src, map_location="cpu", weights_only=True)  # never unpickles code
    options = json.loads(state["options"])
    model = MIQSAM3D(get_config(options["config"], **options.get("ablation", {})))
    model.load_state_dict(state["model"])
    save_weights(model, Path(dst), trained=True, extra={
        "steps": str(state["step"]), "train_minutes": f"{state['elapsed'] / 60:.1f}", "data": options["data"],
        "options": json.dumps(options), "world_size": "1"})
    print(f"wrote {dst} (step {state['step']}, {state['elapsed'] / 60:.1f} min)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
