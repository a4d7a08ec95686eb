"""A/B timing: per-click maps from LayerOutput.winners vs the materialised (1 + N)-slot softmax, on the
same embedding, alternating (shipped weights, phantoms at 1.5 mm, 2 threads, median of 6 clicks).

    python benchmarks/winners_ab.py
"""
import time, numpy as np, torch
from napari_miqsam.model.head import LayerOutput
from napari_miqsam.data.phantom import make_phantom
from napari_miqsam.inference.predictor import Predictor
torch.set_num_threads(2)
new = LayerOutput.winners
def old(self):
    slots = torch.softmax(self.slot_logits(), dim=1)
    best_p, best_q = slots[:, 1:].max(dim=1)
    return torch.where(best_p > slots[:, 0], best_q + 1, torch.zeros_like(best_q)), 1.0 - slots[:, 0]
for shape in ((128, 128, 128), (128, 256, 256)):
    c = make_phantom(3, shape=shape, spacing=(1.5, 1.5, 1.5))
    p = Predictor.from_weights(None, device="cpu"); p.set_image(c.image, c.spacing)
    z, y, x = np.argwhere(np.asarray(c.labels) == 2)[0]
    t = {"winners": [], "softmax": []}
    for i in range(7):
        for name, fn in (("winners", new), ("softmax", old)):
            LayerOutput.winners = fn
            t0 = time.perf_counter(); p.predict([(z, y, x)]); t[name].append(time.perf_counter() - t0)
    print(shape, {k: round(1000 * float(np.median(v[1:])), 1) for k, v in t.items()})
