"""Atomic writes, clear errors for bad files, foreign formats, and exact RNG restore."""

import argparse
import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from shared.checkpoint import (
    CheckpointError,
    capture_training_state,
    extract_model_state,
    load_checkpoint,
    load_model_state,
    restore_training_state,
    save_checkpoint,
)


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))


def test_atomic_save_keeps_last_good_checkpoint_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "latest_model.pth"
    save_checkpoint(path, {"model_state_dict": model().state_dict(), "epoch": 1})

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest_model.pth"]  # no temp file left


def test_truncated_file_error_names_the_file(tmp_path):
    path = tmp_path / "best_model.pth"
    save_checkpoint(path, {"model_state_dict": model().state_dict()})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"best_model\.pth: not a readable checkpoint"):
        load_checkpoint(path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"truncated")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "pickled Python objects" warning for mere garbage
        with pytest.raises(CheckpointError, match=r"garbage\.pth: not a readable checkpoint"):
            load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")


def test_other_model_lists_missing_unexpected_and_mismatched_keys(tmp_path):
    path = tmp_path / "other.pth"
    other = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    save_checkpoint(path, {"model_state_dict": other.state_dict()})
    with pytest.raises(CheckpointError) as error:
        load_model_state(model(), path)
    message = str(error.value)
    assert "other.pth" in message and "2 missing keys: 1.bias, 1.weight" in message
    assert "2 unexpected keys: 2.bias, 2.weight" in message and "0.weight (5, 3) vs model (4, 3)" in message
    report = load_model_state(model(), path, strict=False)
    assert report.missing == ["1.bias", "1.weight"] and len(report.mismatched) == 2


@pytest.mark.parametrize("wrap", ["model_state_dict", "state_dict", "model", "bare"])
def test_foreign_layouts_and_module_prefix(wrap):
    source = model()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    payload = state if wrap == "bare" else {wrap: state, "epoch": 3}
    assert set(extract_model_state(payload)) == set(source.state_dict())
    target = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    assert load_model_state(target, payload).ok
    torch.testing.assert_close(target[0].weight, source[0].weight)


def test_pickled_objects_load_with_warning(tmp_path):
    path = tmp_path / "sam_med3d_turbo.pth"
    torch.save({"model_state_dict": model().state_dict(), "args": argparse.Namespace(lr=1)}, path)
    with pytest.warns(UserWarning, match="weights_only=False"):
        payload = load_checkpoint(path)
    assert payload["args"].lr == 1


def test_training_state_restores_rng_exactly(tmp_path):
    net = model()
    optimizer = torch.optim.AdamW(net.parameters())
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    path = save_checkpoint(tmp_path / "s.pth", capture_training_state(
        model=net, optimizer=optimizer, epoch=4, step=40, best_metric=0.7, extra={"note": "x"}))
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    state = restore_training_state(path, model=model(), optimizer=optimizer)
    assert state == {"epoch": 4, "step": 40, "best_metric": 0.7, "extra": {"note": "x"}}
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    with pytest.raises(CheckpointError, match="not a resumable training checkpoint"):
        save_checkpoint(tmp_path / "w.pth", {"model_state_dict": net.state_dict()})
        restore_training_state(tmp_path / "w.pth", model=net)
