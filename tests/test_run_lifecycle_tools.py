"""The run lifecycle is the same in all four tools (shared.run): each tool's
`tests/<tool>/lifecycle_adapter.py` says how to make its data and call its trainer; this file
checks, for every tool, that
(a) a resume with a changed learning rate is refused, naming the key as `old -> new`;
(b) a bad data path exits 2 and leaves no run folder behind;
(c) a run killed after its epoch-1 checkpoint (while in epoch 2) and resumed ends with the weights
    of an uninterrupted run, and `metrics.jsonl` holds no (step, key) twice."""

from __future__ import annotations

import importlib
from collections import Counter
from pathlib import Path

import pytest
import torch

from shared.checkpoint import load_checkpoint
from shared.tracking import RunTracker, read_jsonl

TOOLS = ("siglip_sam_dementia", "sam_med3d_ich", "sam_finetune", "dformer_sam_attention")
LR, OTHER_LR = 1e-3, 2e-3


@pytest.fixture(params=TOOLS)
def adapter(request):
    return importlib.import_module(f"tests.{request.param}.lifecycle_adapter")


@pytest.fixture
def data(adapter, tmp_path):
    return adapter.make_data(tmp_path / "data")


def test_resume_with_a_changed_learning_rate_is_refused(adapter, data, tmp_path, capsys):
    root = tmp_path / "runs"
    assert adapter.run(adapter.train_argv(data, root, lr=LR, epochs=1)) == 0
    folder = adapter.run_folder(root)
    checkpoint = adapter.latest_checkpoint(folder)
    before = checkpoint.read_bytes()
    capsys.readouterr()
    code = adapter.run(adapter.train_argv(data, root, lr=OTHER_LR, epochs=2, resume=checkpoint))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err and err[-1].startswith("error: ") and str(checkpoint.name) in err[-1]
    assert "0.001 -> 0.002" in err[-1] or "1e-3 -> 2e-3" in err[-1], err[-1]
    assert checkpoint.read_bytes() == before


def test_bad_data_path_exits_2_and_leaves_no_run_folder(adapter, tmp_path, capsys):
    root = tmp_path / "runs"
    missing = tmp_path / "no_such_data"
    assert adapter.run(adapter.bad_data_argv(missing, root)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "no_such_data" in err[-1]
    assert not root.exists() or not any(root.iterdir())


def test_killed_after_a_checkpoint_resumes_to_the_same_weights_without_duplicate_rows(adapter, data, tmp_path,
                                                                                       monkeypatch):
    full_root, killed_root = tmp_path / "full", tmp_path / "killed"
    assert adapter.run(adapter.train_argv(data, full_root, lr=LR, epochs=2)) == 0
    expected = adapter.weights(adapter.run_folder(full_root))

    original_log = RunTracker.log
    checkpoint_step: dict[str, int] = {}

    def log_then_die(self, metrics, step):
        original_log(self, metrics, step)
        latest = self.output_dir / "latest_model.pth"
        if "step" not in checkpoint_step and latest.exists():
            payload = load_checkpoint(latest)
            if payload.get("epoch") is not None and payload["step"] > 0:
                checkpoint_step["step"] = payload["step"]
        if "step" in checkpoint_step and step > checkpoint_step["step"]:
            raise KeyboardInterrupt  # killed right after this row reached the disk

    monkeypatch.setattr(RunTracker, "log", log_then_die)
    with pytest.raises(KeyboardInterrupt):
        adapter.run(adapter.train_argv(data, killed_root, lr=LR, epochs=2))
    monkeypatch.setattr(RunTracker, "log", original_log)
    folder = adapter.run_folder(killed_root)
    steps_before = [row["step"] for row in read_jsonl(folder / "metrics.jsonl")]
    assert max(steps_before) > checkpoint_step["step"]  # rows past the checkpoint were written

    assert adapter.run(adapter.train_argv(data, killed_root, lr=LR, epochs=2,
                                          resume=adapter.latest_checkpoint(folder))) == 0
    assert adapter.run_folder(killed_root) == folder
    got = adapter.weights(folder)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    pairs = Counter((row["step"], key) for row in read_jsonl(folder / "metrics.jsonl")
                    for key in row if key not in ("step", "time", "epoch"))
    assert not [pair for pair, count in pairs.items() if count > 1]


def test_every_tool_has_an_adapter():
    for tool in TOOLS:
        assert (Path(__file__).parent / tool / "lifecycle_adapter.py").is_file(), tool
