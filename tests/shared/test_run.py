"""The shared run lifecycle (shared.run): the resume check, the run folder, metric rows after a
resume, wandb continuity, one-line errors for missing models, and the scripts' Python."""

import json
import os
import subprocess
import sys

import pytest
import torch

from shared.checkpoint import save_checkpoint
from shared.hub import ModelNotFoundError, from_pretrained_or_error
from shared.run import (
    RunError,
    choose_run_dir,
    config_differences,
    drop_rows_after,
    load_resume,
    open_run,
)
from shared.toy_trainer import cli
from shared.tracking import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = ["--n_train", "64", "--n_test", "64", "--batch_size", "32", "--seed", "3"]


def test_differences_name_each_changed_key_by_its_path():
    old = {"lr": 1e-3, "optim": {"name": "sam", "rho": 0.05}, "data": {"dir": "/a", "workers": 2}, "seed": 0}
    new = {"lr": 2e-3, "optim": {"name": "sam", "rho": 0.1}, "data": {"dir": "/b", "workers": 8}, "seed": 0}
    assert config_differences(old, new, may_change=("data.dir", "*.workers")) == [
        "lr: 0.001 -> 0.002", "optim.rho: 0.05 -> 0.1"]
    assert config_differences(old, new, may_change=("data", "optim", "lr")) == []


def test_epochs_may_grow_but_not_shrink_and_tuples_equal_saved_lists():
    assert config_differences({"epochs": 5, "betas": [0.9, 0.99]}, {"epochs": 8, "betas": (0.9, 0.99)}) == []
    assert config_differences({"epochs": 5}, {"epochs": 3}) == ["epochs: 5 -> 3"]
    assert config_differences({"epochs": 5}, {"epochs": 8}, may_increase=()) == ["epochs: 5 -> 8"]
    assert config_differences({"a": 1}, {"b": 1}) == ["a: 1 -> <absent>", "b: <absent> -> 1"]


def _checkpoint(path, config, step=4):
    return save_checkpoint(path, {"model_state_dict": {"w": torch.zeros(1)}, "step": step, "epoch": 1,
                                  "extra": {"config": config}})


def test_load_resume_refuses_a_changed_experiment_in_one_line(tmp_path):
    ckpt = _checkpoint(tmp_path / "run" / "latest_model.pth", {"lr": 1e-3, "seed": 0, "num_workers": 2})
    with pytest.raises(RunError) as error:
        load_resume(ckpt, {"lr": 3e-4, "seed": 1, "num_workers": 4}, may_change=("num_workers",))
    message = str(error.value)
    assert "\n" not in message and str(ckpt) in message
    assert "lr: 0.001 -> 0.0003; seed: 0 -> 1" in message
    point = load_resume(ckpt, {"lr": 1e-3, "seed": 0, "num_workers": 4}, may_change=("num_workers",))
    assert point.step == 4 and point.epoch == 1 and point.config["num_workers"] == 2


def test_config_json_beside_an_old_checkpoint_is_the_stored_config(tmp_path):
    ckpt = tmp_path / "run" / "latest_model.pth"
    save_checkpoint(ckpt, {"model_state_dict": {"w": torch.zeros(1)}, "step": 2, "epoch": 0})
    with pytest.raises(RunError, match="holds no training config"):
        load_resume(ckpt, {"lr": 1})
    (ckpt.parent / "config.json").write_text(json.dumps({"lr": 1}))
    assert load_resume(ckpt, {"lr": 1}).step == 2
    with pytest.raises(RunError, match="lr: 1 -> 2"):
        load_resume(ckpt, {"lr": 2})


def test_run_folder_resume_goes_home_and_nothing_is_created_before_open(tmp_path):
    ckpt = _checkpoint(tmp_path / "runs" / "exp" / "latest_model.pth", {"lr": 1})
    point = load_resume(ckpt, {"lr": 1})
    assert choose_run_dir(resume=point, output_dir=None, root=tmp_path / "elsewhere") == ckpt.parent.resolve()
    assert choose_run_dir(resume=point, output_dir=tmp_path / "given") == tmp_path / "given"
    fresh = choose_run_dir(resume=None, output_dir=None, root=tmp_path / "runs", name="exp")
    assert fresh == tmp_path / "runs" / "exp_1" and not fresh.exists()  # exp is taken, exp_1 not made yet
    tracker = open_run(fresh, {"lr": 1})
    assert json.loads((fresh / "config.json").read_text()) == {"lr": 1}
    tracker.finish()


def test_resume_drops_rows_past_the_checkpoint_step(tmp_path):
    run = tmp_path / "run"
    tracker = open_run(run, {"lr": 1})
    for step in range(1, 7):
        tracker.log({"train_loss": 1.0 / step}, step)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 7, "train_lo')  # the process died mid-write
    ckpt = _checkpoint(run / "latest_model.pth", {"lr": 1}, step=4)
    resumed = open_run(run, {"lr": 1}, resume=load_resume(ckpt, {"lr": 1}))
    assert [row["step"] for row in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4]
    resumed.log({"train_loss": 0.2}, 5)
    assert [row["step"] for row in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert drop_rows_after(run / "missing.jsonl", 3) == 0


def test_resume_continues_the_same_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    run = tmp_path / "run"
    first = open_run(run, {"lr": 1}, use_wandb=True, wandb_project="p")
    first_id = first.wandb_run.id
    first.log({"loss": 1.0}, 1)
    first.finish()
    ckpt = _checkpoint(run / "latest_model.pth", {"lr": 1}, step=1)
    second = open_run(run, {"lr": 1}, resume=load_resume(ckpt, {"lr": 1}), use_wandb=True, wandb_project="p")
    assert second.wandb_run.id == first_id == (run / "wandb_run_id").read_text().strip()
    second.finish()
    fresh = open_run(tmp_path / "other", {"lr": 1}, use_wandb=True, wandb_project="p")
    assert fresh.wandb_run.id != first_id
    fresh.finish()


def test_toy_trainer_cli_refuses_a_changed_lr_and_resumes_in_its_own_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(["--output_dir", str(run), "--epochs", "1", "--lr", "1e-3", *TOY]) == 0
    ckpt = run / "latest_model.pth"
    capsys.readouterr()
    assert cli(["--epochs", "2", "--lr", "2e-3", "--resume", str(ckpt), *TOY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "lr: 0.001 -> 0.002" in err
    before = ckpt.read_bytes()
    # epochs may grow; without --output_dir the run continues in the checkpoint's folder
    assert cli(["--epochs", "2", "--lr", "1e-3", "--resume", str(ckpt), *TOY]) == 0
    assert ckpt.read_bytes() != before and json.loads((run / "config.json").read_text())["epochs"] == 2
    assert sorted({row["epoch"] for row in read_jsonl(run / "metrics.jsonl")}) == [0, 1]


def test_offline_missing_model_is_one_line_with_the_way_out(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError) as error:
        from_pretrained_or_error(transformers.AutoConfig.from_pretrained, "google/no-such-model-here",
                                 flag="--model_name")
    message = str(error.value)
    assert "\n" not in message and message.startswith("google/no-such-model-here: not a local folder")
    assert "--model_name DIR" in message
    folder = tmp_path / "empty_model"
    folder.mkdir()
    with pytest.raises(ModelNotFoundError, match=f"^{folder}: "):
        from_pretrained_or_error(transformers.AutoConfig.from_pretrained, str(folder))


@pytest.mark.parametrize("preset", [None, "/custom/python"])
def test_scripts_use_the_project_venv_unless_told_otherwise(preset):
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    if preset:
        env["PYTHON"] = preset
    out = subprocess.run(["bash", "-c", f'source "{REPO}/shared/python.sh" && echo "$PYTHON"'], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    venv_python = os.path.join(REPO, ".venv", "bin", "python")
    assert out == (preset or (venv_python if os.path.exists(venv_python) else "python3"))
    assert sys.executable  # the suite itself runs from that venv under `make test`
