"""Print the README's result tables (Markdown) from the JSON files the benchmarks wrote.

    python scripts/results_tables.py benchmarks/results/evaluate.json benchmarks/results/benchmark.json

The ablation table is printed by ``python benchmarks/ablation.py table`` (from benchmarks/results/ablation/).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLS = ("dice", "nsd_1mm", "nsd_2mm", "instance_recall", "instance_precision", "instance_f1", "wrong_class_rate",
        "clicked_found", "dice_std_over_clicks")


def row(name: str, m: dict) -> str:
    return f"| {name} | " + " | ".join(f"{m[k]:.3f}" if k in m else "-" for k in COLS) + " |"


def main(evaluate: str, benchmark: str) -> None:
    ev = json.loads(Path(evaluate).read_text())
    print("| method | " + " | ".join(COLS) + " |")
    print("|---" * (len(COLS) + 1) + "|")
    print(row("**MIQ-SAM3D (shipped)**", ev["model"]))
    for name, m in ev["baselines"].items():
        print(row(name, m))
    print()
    b = json.loads(Path(benchmark).read_text())
    print(f"device {b['device']}, torch {b['torch']}, {b['threads']} threads")
    print()
    print("| volume (z, y, x) | spacing (mm) | windows | set_image_s | predict_ms | threshold_ms | peak_rss_mb |")
    print("|---|---|---|---|---|---|---|")
    for r in b["results"]:
        print(f"| {'x'.join(map(str, r['shape']))} | {' x '.join(map(str, r['spacing']))} | {r['windows']} | "
              f"{r['set_image_s']:.2f} | {r['predict_ms']:.0f} | {r['threshold_ms']:.1f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
