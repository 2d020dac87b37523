"""The run lifecycle of train.py through shared.run, driven by the same adapter as the cross-tool test:
a changed experiment is refused on resume, bad input leaves no run folder, a killed run resumes into its
own folder with the weights of an uninterrupted run and without duplicate metric rows."""

import json

import pytest
import torch

from projects.sam_med3d_ich.import_physionet import cli as import_physionet_cli
from shared.tracking import RunTracker
from tests.sam_med3d_ich import lifecycle_adapter as adapter


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return adapter.make_data(tmp_path_factory.mktemp("lifecycle_data"))


def metric_rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_resume_with_a_changed_lr_or_seed_is_refused_naming_the_key(data, tmp_path, capsys):
    assert adapter.run(adapter.train_argv(data, tmp_path, lr=1e-3, epochs=1)) == 0
    folder = adapter.run_folder(tmp_path)
    config_before = (folder / "config.json").read_text()
    checkpoint = adapter.latest_checkpoint(folder)
    assert adapter.run(adapter.train_argv(data, tmp_path, lr=2e-3, epochs=1, resume=checkpoint)) == 2
    assert "lr: 0.001 -> 0.002" in capsys.readouterr().err
    argv = adapter.train_argv(data, tmp_path, lr=1e-3, epochs=1, resume=checkpoint)
    argv[argv.index("--seed") + 1] = "7"
    assert adapter.run(argv) == 2
    assert "seed: 0 -> 7" in capsys.readouterr().err
    assert (folder / "config.json").read_text() == config_before  # a refused resume rewrites nothing


def test_bad_data_path_exits_2_and_leaves_no_run_folder(tmp_path, capsys):
    run_root = tmp_path / "runs"
    assert adapter.run(adapter.bad_data_argv(tmp_path / "missing", run_root)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing/train.csv: CSV file does not exist" in err
    assert not run_root.exists() or not any(run_root.iterdir())


def test_bad_checkpoint_exits_2_before_the_run_folder_exists(data, tmp_path, capsys):
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    argv = adapter.train_argv(data, tmp_path / "runs", lr=1e-3, epochs=1) + ["--checkpoint", str(tmp_path / "broken.pth")]
    assert adapter.run(argv) == 2
    assert "broken.pth: not a readable checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_killed_run_resumes_in_its_folder_with_identical_weights_and_no_duplicate_rows(data, tmp_path, monkeypatch):
    straight_root, killed_root = tmp_path / "straight", tmp_path / "killed"
    assert adapter.run(adapter.train_argv(data, straight_root, lr=1e-3, epochs=2)) == 0

    epoch1_step = {}
    original_log = RunTracker.log

    def log_then_die(self, metrics, step):
        original_log(self, metrics, step)
        if "epoch" in metrics and metrics["epoch"] == 1:
            epoch1_step["step"] = step
        elif "step" in epoch1_step and step > epoch1_step["step"]:
            raise KeyboardInterrupt  # killed in epoch 2, after the epoch-1 checkpoint

    monkeypatch.setattr(RunTracker, "log", log_then_die)
    with pytest.raises(KeyboardInterrupt):
        adapter.run(adapter.train_argv(data, killed_root, lr=1e-3, epochs=2))
    monkeypatch.setattr(RunTracker, "log", original_log)
    folder = adapter.run_folder(killed_root)
    assert any(row["step"] > epoch1_step["step"] for row in metric_rows(folder))  # a row past the checkpoint

    # no --output_dir: the resume goes back into the checkpoint's folder, not ./outputs
    monkeypatch.chdir(tmp_path)
    assert adapter.run(adapter.train_argv(data, killed_root, lr=1e-3, epochs=2,
                                          resume=adapter.latest_checkpoint(folder))) == 0
    assert not (tmp_path / "outputs").exists() and adapter.run_folder(killed_root) == folder

    expected, got = adapter.weights(adapter.run_folder(straight_root)), adapter.weights(folder)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    pairs = [(row["step"], key) for row in metric_rows(folder) for key in row if key not in ("step", "time")]
    assert len(pairs) == len(set(pairs))
    straight_pairs = [(row["step"], key) for row in metric_rows(adapter.run_folder(straight_root))
                      for key in row if key not in ("step", "time")]
    assert sorted(pairs) == sorted(straight_pairs)


def test_logged_lr_is_the_base_lr_each_step_used(data, tmp_path):
    argv = adapter.train_argv(data, tmp_path, lr=1e-3, epochs=2) + ["--prompt_decoder_lr_scale", "0.1",
                                                                     "--scheduler_type", "cosine"]
    assert adapter.run(argv) == 0
    steps = [row for row in metric_rows(adapter.run_folder(tmp_path)) if "lr" in row]
    assert steps[0]["lr"] == pytest.approx(1e-3)  # the first step used the full base lr, not the 0.1x group
    assert steps[0]["lr_prompt_decoder"] == pytest.approx(1e-4)
    assert steps[-1]["lr"] < steps[0]["lr"]  # cosine: later steps use a lower lr


def test_import_physionet_with_a_bad_root_is_one_line(tmp_path, capsys):
    assert import_physionet_cli(["--root", str(tmp_path / "nope"), "--out_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope: --root folder does not exist" in err and err.count("\n") == 1
