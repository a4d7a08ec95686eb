"""The adaptation curve: default weights vs weights adapted (``miqsam adapt``) on 1, 2 and 4 labelled
volumes of a family the default was not trained on, scored on held-out volumes with paired intervals.

    python benchmarks/adaptation_curve.py --out runs/curve                  # the docs/results.md curve
    python benchmarks/adaptation_curve.py --out runs/curve --volumes 2 --minutes 5 --train all

The labelled volumes are out-of-family phantoms (``data.ood_phantom``, seeds ``--train-seed`` ..,
disjoint from the held-out seeds); the held-out check is ``ood:N:SEED`` (``--eval``) and, as a check
only (never tuned on), the real CT case of ``miqsam fetch-real-ct`` (``--real``, the default). For every (volumes, minutes, train mode): ``training.adapt.adapt`` from the shipped
weights with no internal held-out split, then ``evaluation.evaluate`` of the new weights on the same
rows as the default, and ``evaluation.compare`` (cluster bootstrap over cases, 95 %).

A budget of M minutes "on 2 cores" is run as a fixed number of steps, M * 60 / ``--step-seconds``
of that train mode (the medians ``benchmarks/adapt_step_time.py --config cpu --patch 128`` measured
on an idle 2-core machine), so a busy machine changes the wall time, not the result. Every result
goes to ``OUT/curve.json`` as it comes; a rerun skips what is done (delete OUT to start again).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

#: Seconds per adaptation step on 2 idle cores, cpu config, 128-voxel patch, batch 1 (adapt_step_time.py),
#: as measured on 2026-12-05 and kept so that the curve's budgets stay the same step counts; on the code
#: of 2026-12-06 adapt_step_time.py measures 0.38 / 0.83 s, so a budget's wall time is now far shorter
#: (docs/results.md reports steps and wall minutes).
STEP_SECONDS = {"decoder": 3.1, "all": 6.3}
METRICS = ("dice", "nsd_1mm", "instance_recall", "instance_precision", "instance_f1", "wrong_class_rate")


def write_cases(cases, root: Path) -> Path:
    """Cases (``data.phantom.Case``) into a KiTS folder ``root`` (case_00000 ..), once."""
    from napari_miqsam.data.io import write_image, write_labels

    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(cases):
        folder = root / f"case_{i:05d}"
        if (folder / "segmentation.nii.gz").exists():
            continue
        folder.mkdir(exist_ok=True)
        write_image(folder / "imaging.nii.gz", np.round(case.image).astype(np.int16), spacing=case.spacing,
                    affine=case.affine, overwrite=True)
        write_labels(folder / "segmentation.nii.gz", case.labels, spacing=case.spacing, affine=case.affine,
                     overwrite=True)
    return root


def score(weights, cases, clicks: int, targets, lesion_classes=None, threads: int = 0) -> dict:
    from napari_miqsam.evaluation.evaluate import evaluate
    from napari_miqsam.inference.predictor import Predictor

    if threads:
        import torch

        torch.set_num_threads(threads)
    return evaluate(cases, Predictor.from_weights(str(weights) if weights else None, device="cpu"), clicks=clicks,
                    seed=0, targets=targets, progress=False, baselines=False, lesion_classes=lesion_classes)


def summary_row(cmp: dict) -> dict:
    """metric -> (default, adapted, difference, low, high, verdict) from ``evaluation.compare``."""
    return {k: [round(m["first"], 4), round(m["second"], 4), round(m["difference"], 4), round(m["ci_low"], 4),
                round(m["ci_high"], 4), m["verdict"]] for k, m in cmp["metrics"].items() if k in METRICS}


def run_curve(out: Path, train_cases: list, eval_sets: dict, volumes, minutes, modes, base="default",
              step_seconds=None, patch: int = 128, clicks: int = 3, threads: int = 0, log=print) -> dict:
    """The whole curve; ``eval_sets``: name -> (cases, targets, lesion_classes). Returns curve.json's dict."""
    from napari_miqsam.evaluation.compare import compare
    from napari_miqsam.training.adapt import adapt

    step_seconds = dict(STEP_SECONDS, **(step_seconds or {}))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "curve.json"
    state = json.loads(path.read_text()) if path.exists() else {"default": {}, "runs": {}}

    def save() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)

    default_rows = {}
    for name, (cases, targets, classes) in eval_sets.items():
        cached = out / f"default_{name}.json"
        if not cached.exists():
            t0 = time.perf_counter()
            res = score(base if base != "default" else None, cases, clicks, targets, classes, threads)
            cached.write_text(json.dumps(res))
            log(f"default on {name}: {time.perf_counter() - t0:.0f} s, "
                + ", ".join(f"{k} {res['model'][k]:.3f}" for k in METRICS if k in res["model"]))
        default_rows[name] = json.loads(cached.read_text())
        state["default"][name] = {k: default_rows[name]["model"].get(k) for k in METRICS}
    save()
    for mode in modes:
        for m in minutes:
            for n in volumes:
                key = f"{n}vol_{m:g}min_{mode}"
                if key in state["runs"]:
                    continue
                data = write_cases(train_cases[:n], out / f"data_{n}")
                weights = out / f"{key}.safetensors"
                steps = max(1, round(m * 60 / step_seconds[mode]))
                t0 = time.perf_counter()
                res = adapt(data, base, weights, minutes=0, steps=steps, train=mode, held_out=0, patch=patch,
                            threads=threads, overwrite=True, log=lambda *a: None)
                run = {"volumes": n, "minutes": m, "train": mode, "steps": res.steps,
                       "wall_minutes": round((time.perf_counter() - t0) / 60, 2), "eval": {}}
                for name, (cases, targets, classes) in eval_sets.items():
                    new = score(weights, cases, clicks, targets, classes, threads)
                    (out / f"{key}_{name}.json").write_text(json.dumps(new))
                    run["eval"][name] = summary_row(compare(default_rows[name], new))
                state["runs"][key] = run
                save()
                log(f"{key}: {res.steps} steps, {run['wall_minutes']} min; " + "; ".join(
                    f"{name} F1 {r['instance_f1'][0]:.3f} -> {r['instance_f1'][1]:.3f} "
                    f"[{r['instance_f1'][3]:+.3f}, {r['instance_f1'][4]:+.3f}], Dice {r['dice'][0]:.3f} -> "
                    f"{r['dice'][1]:.3f} [{r['dice'][3]:+.3f}, {r['dice'][4]:+.3f}]"
                    for name, r in run["eval"].items()))
    return state


def format_table(state: dict) -> str:
    lines = ["| labelled volumes | budget (steps) | train | held-out | instance F1 default -> adapted (95% interval) "
             "| Dice default -> adapted (95% interval) | wrong-class |", "|---|---|---|---|---|---|---|"]
    for run in state["runs"].values():
        for name, r in run["eval"].items():
            f1, dice, wc = r["instance_f1"], r["dice"], r.get("wrong_class_rate")
            lines.append(f"| {run['volumes']} | {run['minutes']:g} min ({run['steps']}) | {run['train']} | {name} | "
                         f"{f1[0]:.3f} -> {f1[1]:.3f} ({f1[3]:+.3f} to {f1[4]:+.3f}, {f1[5]}) | "
                         f"{dice[0]:.3f} -> {dice[1]:.3f} ({dice[3]:+.3f} to {dice[4]:+.3f}, {dice[5]}) | "
                         + (f"{wc[0]:.3f} -> {wc[1]:.3f} |" if wc else "n/a |"))
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="work folder (data sets, weights, curve.json)")
    p.add_argument("--volumes", type=_ints, default=[1, 2, 4], help="labelled volumes per run (default 1,2,4)")
    p.add_argument("--minutes", type=_floats, default=[5.0, 15.0], help="budgets on 2 cores (default 5,15)")
    p.add_argument("--train", default="decoder", help="train modes, comma-separated (decoder,all)")
    p.add_argument("--train-seed", type=int, default=1000, help="seed of the first labelled ood phantom")
    p.add_argument("--eval", default="ood:40:0",
                   help="held-out ood phantoms ood:N:SEED (default ood:40:0, as make evaluate-ood)")
    p.add_argument("--real", action=argparse.BooleanOptionalAction, default=True,
                   help="also score the cached real CT case (largest, median, smallest tumour)")
    p.add_argument("--clicks", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: every available core)")
    p.add_argument("--base", default="default", help="weights to adapt from (default: the shipped ones)")
    args = p.parse_args(argv)

    from napari_miqsam.commands.evaluate import resolve_cases
    from napari_miqsam.data.ood_phantom import make_ood_phantom

    modes = args.train.split(",")
    train_cases = [make_ood_phantom(args.train_seed + i, name=f"ood_{args.train_seed + i:05d}")
                   for i in range(max(args.volumes))]
    eval_cases = [ref.load() for ref in resolve_cases(args.eval)]
    eval_sets = {args.eval: (eval_cases, ("random",), None)}
    if args.real:
        from napari_miqsam.data.real_ct import fetch_real_ct

        real = [ref.load() for ref in resolve_cases(str(fetch_real_ct()))]  # cached after the first call
        eval_sets["real_ct"] = (real, ("largest", "median", "smallest"), (2,))
    state = run_curve(args.out, train_cases, eval_sets, args.volumes, args.minutes, modes, base=args.base,
                      clicks=args.clicks, threads=args.threads)
    print(format_table(state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
