"""``miqsam evaluate`` under 2 processes (gloo, CPU) gathers exactly the single-process numbers."""

import json
import socket

import pytest
import torch.multiprocessing as mp

from napari_miqsam.cli import main
from napari_miqsam.data.phantom import write_phantoms
from napari_miqsam.inference.predictor import Predictor
from napari_miqsam.model.weights import save_weights


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, argv):
    import os

    import torch

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert main(argv) == 0
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_evaluation_equals_single_process(tmp_path):
    data = tmp_path / "kits"
    write_phantoms(data, cases=3, seed=7, shape=(20, 40, 40), progress=False)
    weights = save_weights(Predictor.from_config("tiny", seed=0).model, tmp_path / "tiny.safetensors", trained=False)
    common = [str(data), "--weights", str(weights), "--clicks", "2", "--seed", "3", "--device", "cpu", "--quiet"]
    assert main(["evaluate", *common, "--json", str(tmp_path / "single.json")]) == 0
    mp.spawn(_worker, args=(2, _free_port(), ["evaluate", *common, "--json", str(tmp_path / "multi.json")]), nprocs=2, join=True)
    single = json.loads((tmp_path / "single.json").read_text())
    multi = json.loads((tmp_path / "multi.json").read_text())
    assert multi["model"] == single["model"]
    assert multi["baselines"] == single["baselines"]
    key = lambda r: (r["case"], r["class"])  # noqa: E731
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("_s")}  # noqa: E731 (timings differ)
    assert [strip(r) for r in sorted(multi["cases"], key=key)] == [strip(r) for r in sorted(single["cases"], key=key)]
