"""Model selection (--select_by, ties to the lower validation loss, --early_stopping_patience), class
weights, and a text-only run on a corpus without audio."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from projects.siglip_sam_dementia import trainer
from projects.siglip_sam_dementia.losses import auto_class_weights, build_loss
from projects.siglip_sam_dementia.selection import ModelSelection, selection_rule
from shared.checkpoint import load_checkpoint


def scores(auc, loss, f1=0.5):
    return {"val_auc": auc, "val_loss": loss, "val_macro_f1": f1, "per_language_mean_auc": auc}


def test_ties_go_to_the_lower_validation_loss_and_patience_stops():
    selection = ModelSelection("val_auc", patience=2)
    history = [scores(0.9, 0.60), scores(1.0, 0.50), scores(1.0, 0.30), scores(1.0, 0.35), scores(1.0, 0.31)]
    improved = [selection.update(epoch, s) for epoch, s in enumerate(history)]
    assert improved == [True, True, True, False, False]
    assert selection.best.epoch == 2 and selection.stopped_early  # two epochs without a better choice
    by_loss = ModelSelection("val_loss")
    for epoch, s in enumerate(history):
        by_loss.update(epoch, s)
    assert by_loss.best.epoch == 2 and not by_loss.stopped_early
    nan_first = ModelSelection("val_auc")
    nan_first.update(0, scores(math.nan, 0.1))
    assert nan_first.update(1, scores(0.5, 0.9))  # a real AUC beats an undefined one
    restored = ModelSelection("val_auc", patience=2)
    restored.load_state_dict(json.loads(json.dumps(selection.state_dict())))  # as it travels in a checkpoint
    assert restored.state_dict() == selection.state_dict()
    assert selection_rule("val_macro_f1") == "val_macro_f1 (ties: lower val_loss)"


def test_auto_class_weights_weight_every_loss():
    weights = auto_class_weights([0, 0, 0, 1])
    torch.testing.assert_close(weights, torch.tensor([4 / 6, 4 / 2]))
    logits, labels = torch.randn(6, 2), torch.tensor([0, 0, 0, 1, 1, 0])
    expected = F.cross_entropy(logits, labels, weight=weights)
    torch.testing.assert_close(build_loss("cross_entropy", class_weights=weights)(logits, labels), expected)
    torch.testing.assert_close(build_loss("focal", focal_gamma=0.0, class_weights=weights)(logits, labels), expected)
    one = torch.randn(6, 1)
    per_sample = F.binary_cross_entropy_with_logits(one.squeeze(1), labels.float(), reduction="none")
    torch.testing.assert_close(build_loss("bce", class_weights=weights)(one, labels),
                               (per_sample * weights[labels]).sum() / weights[labels].sum())


@pytest.fixture(scope="module")
def text_only_run(corpus_dir, tiny_model_dir, tmp_path_factory):
    """A corpus without any audio, trained --modality text until validation AUC saturates."""
    data = tmp_path_factory.mktemp("text_only")
    (data / "English").mkdir()
    frame = pd.read_csv(corpus_dir / "English" / "metadata.csv", dtype=str)
    frame.drop(columns=["audio_path"]).to_csv(data / "English" / "metadata.csv", index=False)
    summary = trainer.main(["--data_dir", str(data), "--model_name", str(tiny_model_dir), "--output_dir",
                            str(data / "runs"), "--parser", "English", "--modality", "text", "--batch_size", "4",
                            "--num_epochs", "6", "--learning_rate", "3e-3", "--no_mixed_precision", "--seed", "0",
                            "--class_weights", "auto", "--early_stopping_patience", "3"])
    return Path(summary["run_dir"]), summary


def test_saturated_auc_keeps_the_tied_epoch_with_the_lowest_validation_loss(text_only_run):
    run_dir, summary = text_only_run
    epochs = [row for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "val_auc" in row]
    best_auc = max(row["val_auc"] for row in epochs)
    tied = [row for row in epochs if row["val_auc"] == best_auc]
    assert len(tied) >= 2  # the situation the rule is for: AUC saturated over several epochs
    chosen = min(tied, key=lambda row: row["val_loss"])
    assert summary["best_epoch"] == chosen["epoch"] != tied[0]["epoch"]  # a strict `auc > best` keeps tied[0]
    assert load_checkpoint(run_dir / "best_model.pth")["epoch"] + 1 == chosen["epoch"]
    assert summary["selection_rule"] == "val_auc (ties: lower val_loss)"
    if summary["stopped_early"]:  # patience 3: stopped 3 epochs after the chosen one
        assert summary["epochs_trained"] == summary["best_epoch"] + 3 < 6
    else:
        assert summary["epochs_trained"] == 6


def test_text_only_run_reads_no_audio_and_weights_classes_from_the_training_split(text_only_run):
    run_dir, summary = text_only_run
    assert summary["cache_hits"] == summary["cache_misses"] == 0 and summary["skipped_samples"] == 0
    train = pd.read_csv(run_dir / "predictions_train.csv")
    torch.testing.assert_close(torch.tensor(summary["class_weights"]), auto_class_weights(train["label"].tolist()))
    assert summary["test_auc"] > 0.5


def test_validation_scores_per_language_mean_auc_skips_one_class_languages():
    from projects.siglip_sam_dementia.selection import validation_scores

    val = pd.DataFrame({"language": ["English"] * 4 + ["Greek"] * 4 + ["Basque"] * 2,
                        "label": [0, 0, 1, 1, 0, 1, 0, 1, 1, 1],
                        "probability": [0.1, 0.2, 0.8, 0.9, 0.6, 0.4, 0.3, 0.7, 0.5, 0.6]})
    scores = validation_scores(val, threshold=0.5, val_loss=0.3)
    assert scores["per_language_mean_auc"] == pytest.approx((1.0 + 0.75) / 2)  # Basque has one class: no AUC
    assert scores["val_loss"] == 0.3 and 0 <= scores["val_macro_f1"] <= 1
    selection = ModelSelection("per_language_mean_auc")
    assert selection.score_of(scores) == pytest.approx(0.875)
