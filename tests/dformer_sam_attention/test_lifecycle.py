"""The run lifecycle through the tool's CLI (shared.run): the cross-tool checks run locally, plus the
tool's own one-line errors (bad --config, offline text model, unknown paths)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from shared.tracking import RunTracker
from tests.dformer_sam_attention import lifecycle_adapter as adapter

PROJECT = Path(__file__).resolve().parents[2] / "projects" / "dformer_sam_attention"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return adapter.make_data(tmp_path_factory.mktemp("lifecycle"))


def test_resume_with_a_changed_lr_is_refused_naming_the_key(data, tmp_path, capsys):
    assert adapter.run(adapter.train_argv(data, tmp_path / "runs", lr=1e-3, epochs=1)) == 0
    checkpoint = adapter.latest_checkpoint(adapter.run_folder(tmp_path / "runs"))
    capsys.readouterr()
    assert adapter.run(adapter.train_argv(data, tmp_path / "runs", lr=2e-3, epochs=1, resume=checkpoint)) == 2
    err = capsys.readouterr().err
    assert "config.lr: 0.001 -> 0.002" in err and "args.lr: 0.001 -> 0.002" in err and len(err.splitlines()) == 1
    # a model change is refused too (it used to fail with torch's ValueError about parameter groups)
    argv = adapter.train_argv(data, tmp_path / "runs", lr=1e-3, epochs=1, resume=checkpoint)
    assert adapter.run(argv + ["--sam-enc-stages", "1"]) == 2
    assert "model.sam_enc_stages: [0,1,2,3] -> [1]" in capsys.readouterr().err.replace(", ", ",")


def test_bad_inputs_exit_2_and_leave_no_run_folder(data, tmp_path, capsys):
    runs = tmp_path / "runs"
    cases = {
        "missing data": (adapter.bad_data_argv(tmp_path / "nowhere", runs), "nowhere/train.txt: split list does not exist"),
        "bad config": (adapter.train_argv(data, runs, lr=1e-3, epochs=1)[:1] + ["local_configs.NYUDepthv2.Nope"]
                       + adapter.train_argv(data, runs, lr=1e-3, epochs=1)[2:], "no such config module"),
        "offline text model": (adapter.train_argv(data, runs, lr=1e-3, epochs=1) + ["--text_encoder", "org/no-such-model"],
                               "org/no-such-model: not a local folder and not in the Hugging Face cache"),
        "missing pretrained": (adapter.train_argv(data, runs, lr=1e-3, epochs=1) + ["--pretrained_model", "nope.pth"],
                               "nope.pth: pretrained backbone weights not found"),
        "flag that cannot apply": (adapter.train_argv(data, runs, lr=1e-3, epochs=1)
                                   + ["--decoder", "ham", "--sam-decoder-logit-init", "3"],
                                   "--sam-decoder-logit-init: cannot apply with --decoder ham"),
    }
    for name, (argv, message) in cases.items():
        assert adapter.run(argv) == 2, name
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not runs.exists() or not [p for p in runs.iterdir() if p.name != adapter.TEXT_CACHE], name


def test_killed_after_a_checkpoint_then_resumed_equals_uninterrupted(data, tmp_path, monkeypatch):
    full_root, killed_root = tmp_path / "full", tmp_path / "killed"
    assert adapter.run(adapter.train_argv(data, full_root, lr=1e-3, epochs=3)) == 0
    first_epoch_step = 1  # one step per epoch
    real_log = RunTracker.log

    def dying_log(self, metrics, step):
        real_log(self, metrics, step)
        if step > first_epoch_step:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunTracker, "log", dying_log)
    with pytest.raises(KeyboardInterrupt):
        adapter.run(adapter.train_argv(data, killed_root, lr=1e-3, epochs=3))
    monkeypatch.setattr(RunTracker, "log", real_log)
    folder = adapter.run_folder(killed_root)
    assert torch.load(adapter.latest_checkpoint(folder), weights_only=True)["epoch"] == 1
    resume_argv = adapter.train_argv(data, killed_root, lr=1e-3, epochs=3, resume=adapter.latest_checkpoint(folder))
    assert adapter.run(resume_argv) == 0
    assert adapter.run_folder(killed_root) == folder  # the resume went back into the run's own folder
    full, resumed = adapter.weights(adapter.run_folder(full_root)), adapter.weights(folder)
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    pairs = [(row["step"], key) for row in rows for key in row if key != "step"]
    assert len(pairs) == len(set(pairs)) and [row["step"] for row in rows] == [1, 2, 3]


def test_logged_lr_is_the_rate_the_step_used(data, tmp_path, monkeypatch):
    used = []
    real_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    assert adapter.run(adapter.train_argv(data, tmp_path / "runs", lr=1e-3, epochs=3)) == 0
    rows = [json.loads(line) for line in (adapter.run_folder(tmp_path / "runs") / "metrics.jsonl").read_text().splitlines()]
    assert [row["lr"] for row in rows] == used and len(set(used)) > 1  # the poly decay moved it


def test_train_sh_uses_the_project_python():
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    out = subprocess.run(["bash", "-c", f'source "{PROJECT}/../../shared/python.sh"; echo "$PYTHON"'], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out.endswith(".venv/bin/python") or out == "python3"
    assert 'source "$(dirname "$0")/../../shared/python.sh"' in (PROJECT / "train.sh").read_text()
    assert "PYTHON:-python}" not in (PROJECT / "train.sh").read_text()
