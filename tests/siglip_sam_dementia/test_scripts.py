"""The shell scripts run the real trainer with environment overrides (the same scripts run the demo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "projects" / "siglip_sam_dementia"


def run_script(name, corpus_dir, model_dir, output_dir, **env):
    environment = {**os.environ, "PYTHON": sys.executable, "DATA_DIR": str(corpus_dir), "MODEL_NAME": str(model_dir),
                   "NUM_EPOCHS": "1", "BATCH_SIZE": "8", "OUTPUT_DIR": str(output_dir), "LEARNING_RATE": "2e-3",
                   "EXTRA_ARGS": "--n_mels 32 --window_seconds 2.5 --no_mixed_precision",
                   **env}
    return subprocess.run(["bash", str(TOOL / name)], env=environment, capture_output=True, text=True, timeout=600)


def configs(output_dir):
    return [json.loads(p.read_text()) for p in sorted(Path(output_dir).glob("siglip-sam_*/config.json"))]


@pytest.mark.slow
def test_cross_lingual_script_holds_out_the_requested_language(corpus_dir, tiny_model_dir, tmp_path):
    result = run_script("train_sam_cross_lingual.sh", corpus_dir, tiny_model_dir, tmp_path,
                        HELD_OUT_LANGUAGES="Spanish", OPTIMIZERS="sam")
    assert result.returncode == 0, result.stderr[-2000:]
    (config,) = configs(tmp_path)
    assert config["parser"] == "cross_lingual" and config["optimizer_type"] == "sam"
    assert config["train_languages"] == ["English", "Greek", "Mandarin"] and config["test_languages"] == ["Spanish"]
    assert (config["num_epochs"], config["batch_size"], config["learning_rate"]) == (1, 8, 2e-3)
    assert "| Spanish |" in (tmp_path / "results.md").read_text()


def test_scripts_exist_and_are_valid_bash():
    for name in ("train_sam_english.sh", "train_sam_all_languages.sh", "train_sam_cross_lingual.sh",
                 "run_sam_experiments.sh", "run_optimizer_comparison.sh"):
        assert subprocess.run(["bash", "-n", str(TOOL / name)], capture_output=True).returncode == 0, name


@pytest.mark.slow
def test_two_process_ddp_run_shares_one_run_folder(corpus_dir, tiny_model_dir, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", str(TOOL / "trainer.py"), "--data_dir", str(corpus_dir),
               "--model_name", str(tiny_model_dir), "--output_dir", str(tmp_path), "--parser", "English",
               "--optimizer_type", "sam", "--num_epochs", "1", "--batch_size", "4", "--n_mels", "32",
               "--window_seconds", "2.5", "--no_mixed_precision", "--learning_rate", "2e-3"]
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]  # rank 0 named it, rank 1 used the same
    assert (run_dir / "best_model.pth").is_file() and len(list(run_dir.glob("training_summary_*.json"))) == 1
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs, steps = [r for r in rows if "val_auc" in r], [r for r in rows if "lr" in r]
    assert len(epochs) == 1 and [r["step"] for r in steps] == list(range(1, len(steps) + 1))  # only rank 0 logs


@pytest.mark.slow
def test_optimizer_comparison_gives_lion_its_own_default_rate_not_adamws(corpus_dir, tiny_model_dir, tmp_path):
    import inspect

    from lion_pytorch import Lion

    from projects.siglip_sam_dementia.config import LION_DEFAULT_LEARNING_RATE

    assert LION_DEFAULT_LEARNING_RATE == inspect.signature(Lion).parameters["lr"].default
    result = run_script("run_optimizer_comparison.sh", corpus_dir, tiny_model_dir, tmp_path, OPTIMIZERS="lion",
                        LEARNING_RATE="1e-3", PARSER="Greek")
    assert result.returncode == 0, result.stderr[-2000:]
    first = result.stdout.splitlines()[0]
    assert first == "learning rates: adamw 1e-3 | sam 1e-3 | lion 1e-4 (weight decay 0.03)"
    (config,) = configs(tmp_path)
    assert config["optimizer_type"] == "lion"
    assert (config["learning_rate"], config["weight_decay"]) == (LION_DEFAULT_LEARNING_RATE, 0.03)


def test_scripts_use_the_projects_python():
    for script in TOOL.glob("*.sh"):
        text = script.read_text()
        assert "python " not in text.replace('"$PYTHON" ', ""), script.name  # never a bare python
        if script.name != "_common.sh":
            assert 'source "$(dirname "$0")/../../shared/python.sh"' in text, script.name
