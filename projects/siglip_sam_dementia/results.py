"""Collect run folders into the two tables users expect, as markdown.

    python results.py outputs/ --output results.md

1. Optimizer comparison: train accuracy, test accuracy, generalization gap (train - test) and test
   AUC, mean ± std over the seeds of each setting.
2. Cross-lingual: per held-out language (and training languages, loss, modality), test AUC of SAM
   runs, of AdamW runs, and the difference.

Only seed replicates are averaged: each run's config.json is read, and runs that differ in any other
setting (learning rate, --sam_rho, --fusion, epochs, ...) are separate rows, with the settings that
tell rows apart shown in a `settings` column. Paths are compared resolved (`data` and `./data/` are
one data folder), and a key counts only where it affects the run's type (--test_fraction not in
cross-lingual runs, whose test set is the held-out language). Each table states how its runs chose
their checkpoint (--select_by and its tie-break).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from shared.cli_errors import run_reporting_errors

# config.json keys that are not part of the experiment: seeds are what we average over; the rest say
# where files went, how the run was logged or which machine ran it.
# --gradient_checkpointing recomputes the same activations: the same result, less memory.
NOT_SETTINGS = frozenset({"seed", "output_dir", "run_dir", "resume", "cache_dir", "num_workers", "use_wandb",
                          "wandb_project", "device", "amp", "gradient_checkpointing"})
# Settings that name a place: compared as resolved paths (a hub id that is not a local folder stays as is).
PATH_KEYS = ("data_dir", "model_name")
# Keys that have no effect on some run types: parser -> keys left out.
IGNORED_BY_PARSER = {"cross_lingual": ("test_fraction",)}
# Already columns of the tables (taken from the training summary).
SHOWN_AS_COLUMNS = frozenset({"optimizer_type", "loss_type", "modality", "parser", "languages", "train_languages",
                              "test_languages", "languages_used"})
# What SAM vs AdamW compares: the cross-lingual table pairs runs that agree on everything but these.
SAM_KEYS = ("sam_rho", "sam_adaptive", "sam_base")
FOCAL_KEYS = ("focal_gamma", "focal_alpha")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def resolved_path(value: str) -> str:
    """An absolute, normalised path for a local file or folder (or any value that looks like a path);
    a hub id such as google/siglip2-base-patch16-naflex that is not a local folder is kept as it is."""
    path = Path(value).expanduser()
    if path.exists() or path.is_absolute() or value.startswith((".", "~")):
        return str(path.resolve())
    return value


def _settings(config: dict) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """(shared settings, SAM settings) as sorted (key, JSON value) pairs; keys that cannot change the
    run (SAM's without SAM, focal's without the focal loss) are left out so they never split groups."""
    ignored = set(NOT_SETTINGS | SHOWN_AS_COLUMNS | set(SAM_KEYS)) | set(IGNORED_BY_PARSER.get(config.get("parser"), ()))
    if config.get("loss_type") != "focal":
        ignored |= set(FOCAL_KEYS)
    config = {**config, **{k: resolved_path(config[k]) for k in PATH_KEYS if isinstance(config.get(k), str)}}
    shared = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in config.items() if k not in ignored))
    sam = tuple((k, json.dumps(config.get(k))) for k in SAM_KEYS) if config.get("optimizer_type") == "sam" else ()
    return shared, sam


def find_summaries(roots: list[str | Path]) -> pd.DataFrame:
    """One row per run folder: the newest training_summary_*.json in it, and its config.json settings."""
    rows = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such run folder")
        for run_dir in sorted({p.parent for p in root.rglob("training_summary_*.json")}):
            summary = _read_json(max(run_dir.glob("training_summary_*.json")))
            if not (run_dir / "config.json").is_file():
                raise FileNotFoundError(f"{run_dir / 'config.json'}: missing, so seeds cannot be told apart "
                                        "from other settings")
            shared, sam = _settings(_read_json(run_dir / "config.json"))
            rows.append({
                "run": run_dir.name, "optimizer": summary["optimizer_type"], "loss": summary["loss_type"],
                "modality": summary.get("modality", "multimodal"), "parser": summary["parser"],
                "data": (f"{'+'.join(summary['train_languages'])} → {'+'.join(summary['test_languages'])}"
                         if summary["parser"] == "cross_lingual" else "+".join(summary["languages"])),
                "held_out": "+".join(summary["test_languages"] or []),
                "trained_on": "+".join(summary["train_languages"] or []),
                "settings": shared, "sam_settings": sam,
                "selection": summary.get("selection_rule", "val_auc (first epoch of a tie)"),
                "train_acc": summary["train_acc"], "test_acc": summary["test_acc"],
                "gap": summary["generalization_gap"], "test_auc": float(summary["test_auc"]),
            })
    return pd.DataFrame(rows)


def _mean_std(values: pd.Series) -> str:
    if len(values) == 0:
        return "—"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def _format_value(encoded: str) -> str:
    value = json.loads(encoded)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "+".join(map(str, value))
    return str(value)


def _distinguishing_labels(rows_settings: list[dict[str, str]]) -> list[str] | None:
    """Per row, `key=value` for every setting whose value differs between rows; None when all agree.
    A key only some rows have (SAM's, focal's) counts only if its value differs: its presence is
    already told by the optimizer or loss column."""
    keys = sorted({k for s in rows_settings for k in s})
    varying = [k for k in keys if len({s[k] for s in rows_settings if k in s}) > 1]
    if not varying:
        return None
    return [", ".join(f"{k}={_format_value(s[k])}" for k in varying if k in s) or "—" for s in rows_settings]


def _table(header: list[str], rows: list[list[str]], labels: list[str] | None, settings_at: int) -> str:
    """Markdown table; the settings column goes in at `settings_at` only when rows differ in settings."""
    if labels is not None:
        header = [*header[:settings_at], "settings", *header[settings_at:]]
        rows = [[*row[:settings_at], label, *row[settings_at:]] for row, label in zip(rows, labels)]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def optimizer_table(runs: pd.DataFrame) -> str:
    rows, settings = [], []
    keys = ["data", "modality", "loss", "optimizer", "parser", "settings", "sam_settings"]
    for (data, modality, loss, optimizer, _, shared, sam), group in runs.groupby(keys, sort=True):
        rows.append([data, modality, loss, optimizer, str(len(group)), _mean_std(group["train_acc"]),
                     _mean_std(group["test_acc"]), _mean_std(group["gap"]), _mean_std(group["test_auc"])])
        settings.append(dict(shared + sam))
    header = ["data (train → test)", "modality", "loss", "optimizer", "runs", "train acc", "test acc",
              "generalization gap", "test AUC"]
    return _table(header, rows, _distinguishing_labels(settings), settings_at=4)


def cross_lingual_table(runs: pd.DataFrame) -> str:
    """One row per experiment (held-out language, training languages, loss, modality and every other
    setting), SAM's seeds against the AdamW seeds that agree with them on all but the optimizer; one
    row per SAM setting (--sam_rho, --sam_base, ...) when several were run against the same AdamW."""
    header = ["held-out language", "trained on", "loss", "modality", "SAM AUC", "AdamW AUC",
              "difference (SAM - AdamW)"]
    crossing = runs[(runs["parser"] == "cross_lingual") & runs["optimizer"].isin(["sam", "adamw"])]
    if crossing.empty:
        return _table(header, [["(no cross-lingual runs found)", *["—"] * 6]], None, settings_at=4)
    rows, settings = [], []
    for (held_out, trained_on, loss, modality, shared), group in crossing.groupby(
            ["held_out", "trained_on", "loss", "modality", "settings"], sort=True):
        adamw = group.loc[group["optimizer"] == "adamw", "test_auc"]
        sam_groups = list(group[group["optimizer"] == "sam"].groupby("sam_settings", sort=True))
        for sam_settings, sam_group in sam_groups or [((), group.iloc[:0])]:
            sam = sam_group["test_auc"]
            difference = f"{sam.mean() - adamw.mean():+.3f}" if len(sam) and len(adamw) else "—"
            rows.append([held_out, trained_on, loss, modality, _mean_std(sam), _mean_std(adamw), difference])
            settings.append(dict(shared + sam_settings))
    return _table(header, rows, _distinguishing_labels(settings), settings_at=4)


def results_markdown(roots: list[str | Path]) -> str:
    runs = find_summaries(roots)
    if runs.empty:
        raise FileNotFoundError(f"no training_summary_*.json under {', '.join(map(str, roots))}")
    crossing = runs[runs["parser"] == "cross_lingual"]
    return ("## Optimizer comparison\n\n" + selection_line(runs) + optimizer_table(runs)
            + "\n\n## Cross-lingual transfer\n\n" + selection_line(crossing) + cross_lingual_table(runs) + "\n")


def selection_line(runs: pd.DataFrame) -> str:
    """How the runs of a table chose best_model.pth (several rules: the settings column tells rows apart)."""
    if runs.empty:
        return ""
    return f"Checkpoints chosen on validation by: {'; '.join(sorted(set(runs['selection'])))}.\n\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="run folders, or folders containing them")
    parser.add_argument("--output", default=None, help="also write the markdown to this file")
    args = parser.parse_args(argv)
    markdown = results_markdown(args.run_dirs)
    if args.output:
        Path(args.output).write_text(markdown)
    print(markdown)
    return markdown


def cli(argv: list[str] | None = None) -> int:
    """Missing or broken run folders: `error: <file>: <problem>`, exit code 2."""
    return run_reporting_errors(lambda: main(argv), (FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(cli())
