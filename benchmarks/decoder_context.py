"""Click time with the decoder's prompt-independent work (``CQRD.context``: attention keys,
background logits, kind probabilities) cached per window at embedding time, against making it again
on every click, alternating the two on the same embedding (2 threads, median of 6 clicks each).

    python benchmarks/decoder_context.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from napari_miqsam.data.phantom import make_phantom
from napari_miqsam.inference.predictor import Predictor


def main() -> None:
    torch.set_num_threads(2)
    for shape in ((128, 128, 128), (128, 256, 256)):
        case = make_phantom(1234, shape=shape, spacing=(1.5, 1.5, 1.5))
        predictor = Predictor.from_weights(None, device="cpu")
        predictor.set_image(case.image, case.spacing)
        click = np.argwhere(np.asarray(case.labels) >= 2)[0]
        cached = [cw.context for cw in predictor._windows]
        predictor.predict([click])
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(6):
            for use_cache in (True, False):
                for cw, ctx in zip(predictor._windows, cached):
                    cw.context = ctx if use_cache else None
                t0 = time.perf_counter()
                predictor.predict([click])
                times[use_cache].append(time.perf_counter() - t0)
        print(f"{'x'.join(map(str, shape))} ({len(cached)} windows): cached {np.median(times[True]) * 1e3:.0f} ms, "
              f"made per click {np.median(times[False]) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
