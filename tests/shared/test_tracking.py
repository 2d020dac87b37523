import json

import numpy as np
import pytest

from shared.tracking import RunTracker, unique_run_dir


def test_jsonl_config_summary_and_plots(tmp_path):
    tracker = RunTracker(tmp_path / "run", {"lr": 1e-3, "path": tmp_path})
    for step in range(1, 4):
        tracker.log({"train_loss": 1.0 / step, "val_auc": 0.5 + 0.1 * step, "lr": 1e-3}, step)
    summary_path = tracker.write_summary({"best_val_auc": 0.8})
    plots = tracker.finish()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 1e-3
    rows = tracker.read_metrics()
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[2]["train_loss"] == pytest.approx(1 / 3)
    assert summary_path.name.startswith("training_summary_") and json.loads(summary_path.read_text())["best_val_auc"] == 0.8
    assert {p.name for p in plots} == {"loss_curves.png", "metric_curves.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


def test_disabled_tracker_writes_nothing(tmp_path):
    tracker = RunTracker(tmp_path / "rank1", {"a": 1}, enabled=False)
    tracker.log({"loss": 1.0}, 1)
    assert not (tmp_path / "rank1").exists() and tracker.finish() == []


def test_run_dir_never_overwrites(tmp_path):
    first = unique_run_dir(tmp_path, "exp")
    assert not first.exists()  # chosen, not created: shared.run.open_run creates it after validation
    first.mkdir()
    (first / "metrics.jsonl").write_text("{}\n")
    assert unique_run_dir(tmp_path, "exp").name == "exp_1"
    assert unique_run_dir(tmp_path, "exp", overwrite=True) == first


def test_tensorboard_scalars_and_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = RunTracker(tmp_path, {}, use_tensorboard=True)
    tracker.log({"train_loss": 0.5}, 1)
    tracker.log({"train_loss": 0.25}, 2)
    tracker.log_images("val", {"overlay": np.zeros((8, 8, 3), np.uint8)}, 2)
    tracker.finish()
    events = EventAccumulator(str(tmp_path / "runs"))
    events.Reload()
    assert [e.value for e in events.Scalars("train_loss")] == [0.5, 0.25]
    assert "val/overlay" in events.Tags()["images"]


def test_wandb_goes_offline_without_api_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = RunTracker(tmp_path, {"lr": 1}, use_wandb=True, wandb_project="proj", run_name="my-run",
                         tags=["loss_focal", "optimizer_sam"])
    assert tracker.wandb_mode == "offline"
    assert tracker.wandb_run.name == "my-run" and set(tracker.wandb_run.tags) == {"loss_focal", "optimizer_sam"}
    tracker.log({"train_loss": 0.5}, 1)
    tracker.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))
