"""How much the kind prior's mask bias does at inference: the same weights evaluated with and
without it (the bias switched off after loading; the kind head's training effect on the features
stays). Prints one row each.

    python benchmarks/kind_prior_effect.py --cases 12 --clicks 3
"""

from __future__ import annotations

import argparse


def main() -> None:
    import torch

    from napari_miqsam.data.phantom import make_phantom
    from napari_miqsam.evaluation.evaluate import evaluate
    from napari_miqsam.inference.predictor import Predictor

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="weights file (default: shipped)")
    p.add_argument("--cases", type=int, default=12, help="phantom seeds 0..cases-1")
    p.add_argument("--clicks", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cases = [make_phantom(i) for i in range(args.cases)]
    for bias in (True, False):
        predictor = Predictor.from_weights(args.weights, device="cpu")
        if predictor.model.decoder.kind_prior is None:
            raise SystemExit("these weights have no kind prior")
        if not bias:
            predictor.model.decoder.kind_prior = None
        res = evaluate(cases, predictor, clicks=args.clicks, seed=0, progress=False, baselines=False)
        row = {k: round(v, 3) for k, v in res["model"].items()}
        print(f"mask bias {'on ' if bias else 'off'} (w = {float(predictor.model.decoder.kind_prior.weight.detach()) if bias else 0:.3f}): {row}")


if __name__ == "__main__":
    main()
