"""Collect run folders into the two tables users expect, as markdown.

    python results.py outputs/ --output results.md

1. Optimizer comparison: train accuracy, test accuracy, generalization gap (train - test) and test
   AUC, mean ± std over the runs (seeds) of each setting.
2. Cross-lingual: per held-out language (and training languages, loss, modality), test AUC of SAM
   runs, of AdamW runs, and the difference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def find_summaries(roots: list[str | Path]) -> pd.DataFrame:
    """One row per run folder: the newest training_summary_*.json in it."""
    rows = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such run folder")
        for run_dir in sorted({p.parent for p in root.rglob("training_summary_*.json")}):
            path = max(run_dir.glob("training_summary_*.json"))
            summary = json.loads(path.read_text())
            rows.append({
                "run": run_dir.name, "optimizer": summary["optimizer_type"], "loss": summary["loss_type"],
                "modality": summary.get("modality", "multimodal"), "parser": summary["parser"],
                "data": (f"{'+'.join(summary['train_languages'])} → {'+'.join(summary['test_languages'])}"
                         if summary["parser"] == "cross_lingual" else "+".join(summary["languages"])),
                "held_out": "+".join(summary["test_languages"] or []),
                "trained_on": "+".join(summary["train_languages"] or []),
                "train_acc": summary["train_acc"], "test_acc": summary["test_acc"],
                "gap": summary["generalization_gap"], "test_auc": float(summary["test_auc"]),
            })
    return pd.DataFrame(rows)


def _mean_std(values: pd.Series) -> str:
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def optimizer_table(runs: pd.DataFrame) -> str:
    lines = ["| data (train → test) | modality | loss | optimizer | runs | train acc | test acc | generalization gap | test AUC |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for keys, group in runs.groupby(["data", "modality", "loss", "optimizer"], sort=True):
        lines.append(f"| {keys[0]} | {keys[1]} | {keys[2]} | {keys[3]} | {len(group)} | {_mean_std(group['train_acc'])} | "
                     f"{_mean_std(group['test_acc'])} | {_mean_std(group['gap'])} | {_mean_std(group['test_auc'])} |")
    return "\n".join(lines)


def cross_lingual_table(runs: pd.DataFrame) -> str:
    """One row per (held-out language, training languages, loss, modality): runs that differ in any of
    these are different experiments and are never averaged together."""
    lines = ["| held-out language | trained on | loss | modality | SAM AUC | AdamW AUC | difference (SAM - AdamW) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    crossing = runs[runs["parser"] == "cross_lingual"]
    if crossing.empty:
        lines.append("| (no cross-lingual runs found) | — | — | — | — | — | — |")
    for keys, group in crossing.groupby(["held_out", "trained_on", "loss", "modality"], sort=True):
        sam = group.loc[group["optimizer"] == "sam", "test_auc"]
        adamw = group.loc[group["optimizer"] == "adamw", "test_auc"]
        difference = f"{sam.mean() - adamw.mean():+.3f}" if len(sam) and len(adamw) else "—"
        lines.append(f"| {' | '.join(keys)} | {_mean_std(sam) if len(sam) else '—'} | "
                     f"{_mean_std(adamw) if len(adamw) else '—'} | {difference} |")
    return "\n".join(lines)


def results_markdown(roots: list[str | Path]) -> str:
    runs = find_summaries(roots)
    if runs.empty:
        raise FileNotFoundError(f"no training_summary_*.json under {', '.join(map(str, roots))}")
    return ("## Optimizer comparison\n\n" + optimizer_table(runs) + "\n\n## Cross-lingual transfer\n\n"
            + cross_lingual_table(runs) + "\n")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="run folders, or folders containing them")
    parser.add_argument("--output", default=None, help="also write the markdown to this file")
    args = parser.parse_args(argv)
    try:
        markdown = results_markdown(args.run_dirs)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    if args.output:
        Path(args.output).write_text(markdown)
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()
