"""The shared core end to end: a run SIGKILLed mid-epoch resumes to the same weights as an
uninterrupted run; SAM and AdamW both learn the toy problem; bad checkpoints fail clearly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from shared.checkpoint import CheckpointError, load_checkpoint
from shared.toy_trainer import main
from shared.tracking import read_jsonl

COMMON = ["--epochs", "3", "--optimizer", "sam", "--n_train", "128", "--n_test", "256", "--checkpoint_every", "3",
          "--seed", "7"]


def toy(*args: str) -> list[str]:
    return [sys.executable, "-m", "shared.toy_trainer", *args]


def steps_logged(metrics_path) -> int:
    if not metrics_path.exists():
        return 0
    return sum(1 for line in metrics_path.read_text().splitlines() if '"train_loss"' in line)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(toy("--output_dir", str(full), *COMMON), check=True, capture_output=True, env=env)

    process = subprocess.Popen(toy("--output_dir", str(killed), *COMMON, "--step_delay", "0.3"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while steps_logged(killed / "metrics.jsonl") < 7 and time.time() < deadline:  # 4 steps per epoch
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = load_checkpoint(killed / "latest_model.pth")
    assert interrupted_at["step"] == 6 and interrupted_at["epoch"] == 1  # mid-epoch 1

    subprocess.run(toy("--output_dir", str(killed), *COMMON, "--resume", str(killed / "latest_model.pth")),
                   check=True, capture_output=True, env=env)
    expected = load_checkpoint(full / "latest_model.pth")["model_state_dict"]
    got = load_checkpoint(killed / "latest_model.pth")["model_state_dict"]
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    # step 7 was logged before the kill and again after the resume: only once in the file
    rows = read_jsonl(killed / "metrics.jsonl")
    train_steps = [row["step"] for row in rows if "train_loss" in row]
    assert train_steps == sorted(set(train_steps)) == list(range(1, 13))
    full_losses = {row["step"]: row["train_loss"] for row in read_jsonl(full / "metrics.jsonl") if "train_loss" in row}
    assert {row["step"]: row["train_loss"] for row in rows if "train_loss" in row} == full_losses


def test_sam_and_adamw_learn_and_report_the_gap(tmp_path):
    results = {}
    for optimizer in ("adamw", "sam"):
        results[optimizer] = main(["--output_dir", str(tmp_path / optimizer), "--optimizer", optimizer,
                                   "--epochs", "12", "--n_test", "1024"])
    for summary in results.values():
        assert summary["test_acc"] > 0.7  # chance is 0.5
        assert summary["generalization_gap"] == pytest.approx(summary["train_acc"] - summary["test_acc"])
    summary_files = list((tmp_path / "sam").glob("training_summary_*.json"))
    assert json.loads(summary_files[0].read_text())["optimizer"] == "sam"


def test_resume_from_a_bad_checkpoint_fails_clearly_and_keeps_the_good_one(tmp_path):
    run = tmp_path / "run"
    main(["--output_dir", str(run), "--epochs", "1", "--n_train", "64", "--n_test", "64"])
    good = (run / "latest_model.pth").read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated.pth: not a readable checkpoint"):
        main(["--output_dir", str(run), "--epochs", "2", "--n_train", "64", "--n_test", "64", "--resume", str(truncated)])
    foreign = tmp_path / "foreign.pth"
    torch.save({**load_checkpoint(run / "latest_model.pth"), "model_state_dict": {"encoder.weight": torch.zeros(2)}},
               foreign)
    with pytest.raises(CheckpointError, match=r"foreign.pth: does not fit ToyClassifier: .*missing keys"):
        main(["--output_dir", str(run), "--epochs", "2", "--n_train", "64", "--n_test", "64", "--resume", str(foreign)])
    assert (run / "latest_model.pth").read_bytes() == good
