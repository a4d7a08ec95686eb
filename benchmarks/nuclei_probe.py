"""A probe of images the model was not made from: what the shipped CT weights do on fluorescence
nuclei (``--family nuclei``, the default) or on lung nodules (``--family thorax``), and what a few
labelled volumes and ``miqsam adapt`` make of them.

    python benchmarks/nuclei_probe.py --out runs/nuclei                       # about 5 min on 2 cores
    python benchmarks/nuclei_probe.py --out runs/nuclei --steps 48,300 --train all
    python benchmarks/nuclei_probe.py --family thorax --out runs/thorax --labelled 5 --test 20 --steps 48,300

Thorax: the out-of-family chest phantoms (data/ood_thorax.py, solid nodules kind 2, ground glass
kind 3), labelled volumes from seed 1000 on and test volumes from seed 0 (``ood-thorax:N:0``, what
``make evaluate-ood`` scores), so the adapted weights never see a test case; adapting to a family
and scoring on the same family's other seeds measures adaptation to that family, not a general gain.

Synthetic nuclei (written here, not a training generator): bright ellipsoids of 6-18 voxels across,
flattened along z, on a dark background with smooth noise and Poisson counts, 64 x 160 x 160 voxels
at 2 x 1 x 1 "mm". The scale is the point: the model's grid is 1.3 mm and it was made for lesions of
3-60 mm, so a microscopy volume is given a scale at which its objects are that many units across
(here 1 per in-plane voxel; at its true 0.2 um a nucleus would be a fraction of one model voxel).

Writes ``--labelled`` volumes (adapt holds the last out) to OUT/labelled and ``--test`` others to
OUT/test (KiTS layout, nuclei as lesion kind 2), then runs ``miqsam evaluate OUT/test`` with the
shipped weights, ``miqsam adapt OUT/labelled --steps S`` for each S, ``miqsam evaluate`` with each
adapted file, and ``miqsam compare`` of each against the shipped weights. A rerun reuses what exists.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

SHAPE = (64, 160, 160)
SPACING = (2.0, 1.0, 1.0)
TEST_SEED = 10_000  # test volumes use seeds from here; labelled ones from 0
THORAX_LABELLED_SEED = 1000  # chest phantoms to adapt on; the test ones are seeds 0.. (make evaluate-ood)


def make_nuclei(seed: int, shape=SHAPE, count: int = 18) -> tuple[np.ndarray, np.ndarray]:
    """(image uint16, labels uint8 with every nucleus 2) of one synthetic fluorescence volume."""
    rng = np.random.default_rng(seed)
    inst = np.zeros(shape, np.uint16)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    n = 0
    for _ in range(300):
        if n >= count:
            break
        r = rng.uniform(3, 9, 3) * np.array([0.6, 1.0, 1.0])
        c = [rng.uniform(r[i] + 2, shape[i] - r[i] - 2) for i in range(3)]
        m = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
        if (inst[ndimage.binary_dilation(m, iterations=2)] > 0).any():  # nuclei do not touch
            continue
        n += 1
        inst[m] = n
    signal = np.where(inst > 0, rng.uniform(500, 1200, n + 1)[inst], rng.uniform(60, 120))
    img = ndimage.gaussian_filter(signal, (0.8, 1.2, 1.2)) + ndimage.gaussian_filter(rng.normal(0, 60, shape), 1.0)
    return rng.poisson(np.clip(img, 1, None)).astype(np.uint16), (inst > 0).astype(np.uint8) * 2


def write_set(root: Path, seeds, shape=SHAPE, family: str = "nuclei") -> Path:
    from napari_miqsam.data.user_dataset import add_case

    if not root.exists():
        for s in seeds:
            if family == "thorax":
                from napari_miqsam.data.ood_thorax import make_ood_thorax

                case = make_ood_thorax(s)
                add_case(root, case.image, case.labels, case.spacing, source=f"ood-thorax seed {s}")
                continue
            img, lab = make_nuclei(s, shape, count=max(2, round(18 * np.prod(shape) / np.prod(SHAPE))))
            add_case(root, img, lab, SPACING, source=f"nuclei seed {s}")
    return root


def main(argv: list[str] | None = None) -> None:
    from napari_miqsam.cli import main as miqsam

    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--family", default="nuclei", choices=("nuclei", "thorax"),
                   help="synthetic nuclei (microscopy) or the out-of-family chest phantoms (lung nodules)")
    p.add_argument("--labelled", type=int, default=5, help="labelled volumes (adapt trains on all but the last)")
    p.add_argument("--test", type=int, default=10, help="test volumes, never trained on")
    p.add_argument("--steps", default="300", help="adaptation steps, comma-separated")
    p.add_argument("--train", default="all", choices=("all", "decoder"))
    p.add_argument("--clicks", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads for adapt (0: every core)")
    p.add_argument("--weights", default=None, help="the weights to probe and adapt (default: the shipped ones)")
    p.add_argument("--shape", default=",".join(map(str, SHAPE)), help="nuclei volume shape z,y,x (default %(default)s)")
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    if args.family == "thorax":
        labelled = write_set(args.out / "labelled", range(THORAX_LABELLED_SEED, THORAX_LABELLED_SEED + args.labelled),
                             family="thorax")
        test = f"ood-thorax:{args.test}:0"
    else:
        labelled = write_set(args.out / "labelled", range(args.labelled), shape)
        test = write_set(args.out / "test", range(TEST_SEED, TEST_SEED + args.test), shape)
    base = ["--weights", args.weights] if args.weights else []

    def evaluate(name: str, weights: list[str]) -> Path:
        out = args.out / f"evaluate_{name}.json"  # not {name}.json: adapt writes its card there
        if not out.exists():
            code = miqsam(["evaluate", str(test), "--clicks", str(args.clicks), "--no-baselines", "--quiet",
                           "--json", str(out), *weights])
            if code:
                raise SystemExit(code)
        return out

    results = {"shipped": evaluate("shipped", base)}
    for steps in (int(s) for s in args.steps.split(",")):
        new = args.out / f"adapted_{args.train}_{steps}.safetensors"
        if not new.exists():
            threads = ["--threads", str(args.threads)] if args.threads else []
            code = miqsam(["adapt", str(labelled), "--train", args.train, "--steps", str(steps), "-o", str(new),
                           *threads, *base])
            if code:
                raise SystemExit(code)
        results[f"{args.train} {steps} steps"] = evaluate(new.stem, ["--weights", str(new)])
    what = "chest phantoms (ood-thorax)" if args.family == "thorax" else "synthetic nuclei"
    print(f"\n{args.test} test volumes of {what}, {args.clicks} clicks each; "
          f"adapted on {args.labelled - 1} labelled volumes ({args.train})")
    print("| weights | Dice | instance recall | instance precision | instance F1 |\n|---|---|---|---|---|")
    for name, path in results.items():
        m = json.loads(path.read_text())["model"]
        print(f"| {name} | {m['dice']:.3f} | {m['instance_recall']:.3f} | {m['instance_precision']:.3f} | "
              f"{m['instance_f1']:.3f} |")
    if len(results) > 1:
        miqsam(["compare", *(str(p) for p in results.values())])


if __name__ == "__main__":
    main()
