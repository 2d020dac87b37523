"""End to end through trainer.main: learn, evaluate, resume, predict, tabulate."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from projects.siglip_sam_dementia import predict, results, trainer
from projects.siglip_sam_dementia.metrics import choose_threshold, classification_metrics
from shared.checkpoint import load_checkpoint
from shared.run import RunError

from .conftest import TINY_ARGS


def run_trainer(corpus_dir, model_dir, output_dir, *args):
    return trainer.main(["--data_dir", str(corpus_dir), "--model_name", str(model_dir), "--output_dir",
                         str(output_dir), *TINY_ARGS, *args])  # log-mel cache shared in <corpus>/.logmel_cache


README = Path(__file__).resolve().parents[2] / "projects" / "siglip_sam_dementia" / "README.md"


def readme_train_command() -> list[str]:
    """The README's `python trainer.py ...` example, continuation lines joined, as an argv."""
    text = README.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.strip().startswith("python trainer.py --data_dir"))
    return line.split("python trainer.py", 1)[1].split()


@pytest.fixture(scope="module")
def sam_run(corpus_dir, tiny_model_dir, tmp_path_factory):
    """The README's example command on generated data, with the tiny model and a few epochs."""
    out = tmp_path_factory.mktemp("runs")
    argv = readme_train_command()
    assert argv[argv.index("--optimizer_type") + 1] == "sam" and argv[argv.index("--parser") + 1] == "all"
    summary = trainer.main([*argv, "--data_dir", str(corpus_dir), "--model_name", str(tiny_model_dir), "--output_dir",
                            str(out), *TINY_ARGS, "--num_epochs", "5", "--seed", "0", "--val_fraction", "0.25",
                            "--test_fraction", "0.25"])
    return Path(summary["run_dir"]), summary


def test_sam_run_learns_well_above_chance(sam_run):
    _, summary = sam_run
    assert summary["test_auc"] > 0.85
    assert summary["metrics"]["test"]["all"]["accuracy"] > 0.7
    assert summary["skipped_samples"] == 0


def test_run_folder_has_every_documented_output(sam_run):
    run_dir, summary = sam_run
    for name in ["config.json", "metrics.jsonl", "best_model.pth", "latest_model.pth"]:
        assert (run_dir / name).is_file(), name
    for split in ("train", "val", "test"):
        for name in (f"predictions_{split}.csv", f"roc_{split}.png", f"confusion_{split}.png"):
            assert (run_dir / name).is_file(), name
    assert len(list(run_dir.glob("training_summary_*.json"))) == 1
    frame = pd.read_csv(run_dir / "predictions_test.csv")
    assert {"speaker", "language", "probability", "label"} <= set(frame.columns)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [row for row in rows if "val_auc" in row]
    assert [row["epoch"] for row in epochs] == [1, 2, 3, 4, 5]
    assert {"train_loss", "val_auc", "val_loss", "val_macro_f1", "data_time_s"} <= set(epochs[0])
    steps = [row for row in rows if "lr" in row]
    assert [row["step"] for row in steps] == list(range(1, len(steps) + 1)) and epochs[-1]["step"] == len(steps)
    # the logged lr is the one each step used: the schedule's value before its step_iteration
    from shared.optim import build_scheduler

    schedule = build_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2e-3), "cosine",
                               total_steps=len(steps), warmup_steps=int(0.1 * len(steps)))
    used = []
    with warnings.catch_warnings():  # no optimizer step here: torch's order warning does not apply
        warnings.simplefilter("ignore")
        for _ in steps:
            used.append(schedule.get_last_lr()[0])
            schedule.step_iteration()
    assert [row["lr"] for row in steps] == pytest.approx(used, rel=1e-12) and used[0] != used[1]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["optimizer_type"] == "sam" and config["learning_rate"] == 2e-3
    assert run_dir.name.startswith("siglip-sam_all_") and "_cross_entropy_sam_bs8_lr0.002_" in run_dir.name


def test_threshold_comes_from_validation_and_is_applied_unchanged_to_test(sam_run):
    run_dir, summary = sam_run
    val = pd.read_csv(run_dir / "predictions_val.csv")
    test = pd.read_csv(run_dir / "predictions_test.csv")
    threshold = choose_threshold(val["label"].to_numpy(), val["probability"].to_numpy())
    assert summary["threshold"] == pytest.approx(threshold, abs=1e-6)
    assert load_checkpoint(run_dir / "best_model.pth")["threshold"] == pytest.approx(threshold, abs=1e-6)
    recomputed = classification_metrics(test["label"].to_numpy(), test["probability"].to_numpy(), threshold)
    for name, value in recomputed.items():
        assert summary["metrics"]["test"]["all"][name] == pytest.approx(value)
    assert (test["prediction"] == (test["probability"] >= threshold)).all()
    per_language = summary["metrics"]["test"]
    assert set(per_language) == {"all", "English", "Greek", "Spanish", "Mandarin"}
    assert set(per_language["Greek"]) == {"accuracy", "macro_f1", "roc_auc", "sensitivity", "specificity"}


def test_predict_cli_matches_the_runs_own_test_predictions(sam_run, corpus_dir, capsys):
    run_dir, _ = sam_run
    row = pd.read_csv(run_dir / "predictions_test.csv").iloc[0]
    language, speaker = row["speaker"].split("/")
    meta = pd.read_csv(corpus_dir / language / "metadata.csv", dtype=str).set_index("speaker_id").loc[speaker]
    result = predict.main(["--checkpoint", str(run_dir / "best_model.pth"), "--audio",
                           str(corpus_dir / language / meta["audio_path"]), "--transcript", meta["transcript"],
                           "--language", language])
    assert result["probability"] == pytest.approx(row["probability"], abs=1e-5)
    assert result["language_seen_in_training"] is True
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["probability"] == result["probability"]
    assert predict.cli(["--checkpoint", str(run_dir / "best_model.pth"), "--audio",
                        str(corpus_dir / language / meta["audio_path"])]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: this multimodal model needs --transcript"


def test_batch_prediction_of_a_csv_and_a_folder_matches_the_runs_test_predictions(sam_run, corpus_dir, tmp_path,
                                                                                  monkeypatch):
    run_dir, _ = sam_run
    expected = pd.read_csv(run_dir / "predictions_test.csv")
    rows = []
    for speaker in expected["speaker"]:
        language, speaker_id = speaker.split("/")
        meta = pd.read_csv(corpus_dir / language / "metadata.csv", dtype=str).set_index("speaker_id").loc[speaker_id]
        rows.append({"id": speaker, "audio_path": str(corpus_dir / language / meta["audio_path"]),
                     "transcript": meta["transcript"], "language": language})
    rows.append({"id": "broken", "audio_path": str(tmp_path / "missing.wav"), "transcript": "the boy",
                 "language": "Basque"})
    pd.DataFrame(rows).to_csv(tmp_path / "list.csv", index=False)
    batches = []
    real = predict.DementiaPredictor.probabilities
    monkeypatch.setattr(predict.DementiaPredictor, "probabilities",
                        lambda self, items: batches.append(len(items)) or real(self, items))
    table = predict.main(["--checkpoint", str(run_dir / "best_model.pth"), "--input", str(tmp_path / "list.csv"),
                          "--output", str(tmp_path / "out.csv"), "--batch_size", "4"])
    written = pd.read_csv(tmp_path / "out.csv")
    assert list(written.columns) == list(table.columns) == predict.OUTPUT_COLUMNS
    assert len(written) == len(expected) + 1 and max(batches) == 4 and sum(batches) == len(expected)
    scored = written.iloc[:-1]
    np.testing.assert_allclose(scored["probability"], expected["probability"], atol=1e-5)
    assert scored["language_seen_in_training"].all()
    broken = written.iloc[-1]
    assert np.isnan(broken["probability"]) and "missing.wav" in broken["error"]
    assert broken["language_seen_in_training"] == False  # noqa: E712 - Basque never trained on
    # a folder: recordings with same-name .txt transcripts beside them
    folder = tmp_path / "folder"
    folder.mkdir()
    for row in rows[:3]:
        name = row["id"].replace("/", "_")
        (folder / f"{name}.wav").write_bytes(Path(row["audio_path"]).read_bytes())
        (folder / f"{name}.txt").write_text(row["transcript"])
    predict.main(["--checkpoint", str(run_dir / "best_model.pth"), "--input", str(folder),
                  "--output", str(tmp_path / "folder.csv")])
    from_folder = pd.read_csv(tmp_path / "folder.csv").set_index("id")
    for row, probability in zip(rows[:3], expected["probability"][:3]):
        assert from_folder.loc[row["id"].replace("/", "_"), "probability"] == pytest.approx(probability, abs=1e-5)


def test_predict_model_name_override_and_unseen_language(sam_run, corpus_dir, tiny_model_dir, tmp_path):
    run_dir, _ = sam_run
    payload = load_checkpoint(run_dir / "best_model.pth")
    payload["config"]["model_name"] = str(tmp_path / "moved_away")  # the backbone is elsewhere on this machine
    payload["config"]["parser"], payload["config"]["train_languages"] = "cross_lingual", ["English"]
    torch.save(payload, tmp_path / "best_model.pth")
    result = predict.main(["--checkpoint", str(tmp_path / "best_model.pth"), "--model_name", str(tiny_model_dir),
                           "--audio", str(corpus_dir / "Greek" / "audio" / "GR000.wav"), "--transcript", "το αγόρι",
                           "--language", "Greek"])
    assert 0.0 <= result["probability"] <= 1.0 and result["language_seen_in_training"] is False


def test_killed_run_resumes_to_the_same_weights(corpus_dir, tiny_model_dir, tmp_path, monkeypatch):
    args = ["--parser", "English", "--optimizer_type", "sam", "--num_epochs", "2", "--batch_size", "4", "--seed", "3"]
    full = run_trainer(corpus_dir, tiny_model_dir, tmp_path / "full", *args)
    real_save = trainer.save_checkpoint
    latest_saves = []

    def save_then_die(path, payload):
        real_save(path, payload)
        if Path(path).name == "latest_model.pth":
            latest_saves.append(path)
            raise KeyboardInterrupt  # killed right after epoch 1's checkpoint reached the disk

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_trainer(corpus_dir, tiny_model_dir, tmp_path / "killed", *args)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    # the resume may switch gradient checkpointing on: the same experiment, less memory
    resumed = run_trainer(corpus_dir, tiny_model_dir, tmp_path / "killed", *args, "--resume", str(latest_saves[0]),
                          "--gradient_checkpointing")
    assert resumed["run_dir"] == str(Path(latest_saves[0]).parent)
    final_full = load_checkpoint(Path(full["run_dir"]) / "latest_model.pth")
    final_resumed = load_checkpoint(Path(resumed["run_dir"]) / "latest_model.pth")
    assert final_resumed["epoch"] == final_full["epoch"] == 2
    for key, value in final_full["model_state_dict"].items():
        torch.testing.assert_close(final_resumed["model_state_dict"][key], value, rtol=0, atol=0)
    assert resumed["test_auc"] == full["test_auc"]
    with pytest.raises(RunError, match=r"resume would change the experiment: batch_size: 4 -> 8; "
                                        r"loss_type: cross_entropy -> focal; seed: 3 -> 42"):
        run_trainer(corpus_dir, tiny_model_dir, tmp_path / "killed", *args[:-4], "--resume", str(latest_saves[0]),
                    "--loss_type", "focal")


@pytest.fixture(scope="module")
def cross_lingual_runs(corpus_dir, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cross")
    common = ["--parser", "cross_lingual", "--train_languages", "English", "Spanish", "--test_languages", "Greek",
              "--num_epochs", "1"]
    return out, {name: run_trainer(corpus_dir, tiny_model_dir, out, *common, "--optimizer_type", name)
                 for name in ("sam", "adamw")}


def test_cross_lingual_test_language_is_only_in_test(cross_lingual_runs):
    _, runs = cross_lingual_runs
    run_dir = Path(runs["sam"]["run_dir"])
    assert set(pd.read_csv(run_dir / "predictions_test.csv")["language"]) == {"Greek"}
    assert set(pd.read_csv(run_dir / "predictions_val.csv")["language"]) == {"English", "Spanish"}
    assert set(pd.read_csv(run_dir / "predictions_train.csv")["language"]) == {"English", "Spanish"}
    assert runs["sam"]["test_languages"] == ["Greek"]
    assert "English-Spanish_to_Greek" in run_dir.name


def test_results_tables(cross_lingual_runs, sam_run, tmp_path):
    out, runs = cross_lingual_runs
    markdown = results.main([str(out), str(sam_run[0]), "--output", str(tmp_path / "results.md")])
    assert (tmp_path / "results.md").read_text() == markdown
    optimizer_rows = [line for line in markdown.split("## Cross-lingual")[0].splitlines() if line.startswith("| E")]
    assert len(optimizer_rows) == 3  # cross-lingual sam, cross-lingual adamw, pooled sam
    assert sum("| English+Spanish → Greek |" in r for r in optimizer_rows) == 2
    sam_row = next(r for r in optimizer_rows if "→" not in r and "| sam |" in r)
    summary = sam_run[1]
    assert f"| {summary['train_acc']:.3f} | {summary['test_acc']:.3f} | {summary['generalization_gap']:.3f} |" in sam_row
    cross_row = next(line for line in markdown.splitlines() if line.startswith("| Greek |"))
    sam_auc, adamw_auc = runs["sam"]["test_auc"], runs["adamw"]["test_auc"]
    assert cross_row == (f"| Greek | English+Spanish | cross_entropy | multimodal | {sam_auc:.3f} | {adamw_auc:.3f} | "
                         f"{sam_auc - adamw_auc:+.3f} |")
    with pytest.raises(FileNotFoundError, match="no training_summary"):
        results.main([str(tmp_path)])


@pytest.mark.parametrize("loss_type", ["bce", "focal"])
def test_bce_and_focal_runs_train_and_agree_with_their_predictions(corpus_dir, tiny_model_dir, tmp_path, loss_type):
    summary = run_trainer(corpus_dir, tiny_model_dir, tmp_path, "--parser", "English", "--loss_type", loss_type,
                          "--num_epochs", "2", "--focal_alpha", "0.5")
    run_dir = Path(summary["run_dir"])
    state = load_checkpoint(run_dir / "best_model.pth")["model_state_dict"]
    assert state["classifier.5.weight"].shape[0] == (1 if loss_type == "bce" else 2)
    test = pd.read_csv(run_dir / "predictions_test.csv")
    from sklearn.metrics import roc_auc_score

    assert summary["test_auc"] == pytest.approx(roc_auc_score(test["label"], test["probability"]))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite([row["loss"] for row in rows if "loss" in row]).all()


def cli_error(capsys, *argv: str) -> str:
    """The one stderr line of a failed command line (exit code 2)."""
    capsys.readouterr()
    assert trainer.cli([*TINY_ARGS, *argv]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars
    assert line.startswith("error: "), line
    return line


def test_bad_dataset_checkpoint_or_model_stops_with_one_line_and_no_run_folder(corpus_dir, tiny_model_dir, tmp_path,
                                                                               capsys):
    out = tmp_path / "out"
    common = ["--model_name", str(tiny_model_dir), "--output_dir", str(out)]
    message = cli_error(capsys, "--data_dir", str(tmp_path), *common, "--parser", "Greek")
    assert "Greek: language folder does not exist" in message
    message = cli_error(capsys, "--data_dir", str(corpus_dir), *common, "--parser", "French")
    assert "French" in message and "English, Greek, Spanish, Mandarin" in message  # the data's languages
    torch.save({"model_state_dict": {"w": torch.zeros(1000)}, "epoch": 1}, tmp_path / "whole.pth")
    whole = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "latest_model.pth").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    message = cli_error(capsys, "--data_dir", str(corpus_dir), *common, "--parser", "Greek", "--resume",
                        str(tmp_path / "latest_model.pth"))
    assert "latest_model.pth" in message
    message = cli_error(capsys, "--data_dir", str(corpus_dir), "--model_name", "google/no-such-siglip2",
                        "--output_dir", str(out), "--parser", "Greek")
    assert message.startswith("error: google/no-such-siglip2: not a local folder") and "--model_name DIR" in message
    assert not out.exists()  # every input is checked before the run folder is made



def test_prediction_follows_the_runs_mixed_precision_setting(sam_run, corpus_dir, tmp_path, monkeypatch):
    run_dir, _ = sam_run
    payload = load_checkpoint(run_dir / "best_model.pth")
    assert payload["config"]["mixed_precision"] is False  # the tests' runs are fp32
    fp32 = predict.DementiaPredictor(run_dir / "best_model.pth", device="cpu")
    payload["config"]["mixed_precision"] = True
    torch.save(payload, tmp_path / "amp_model.pth")
    amp = predict.DementiaPredictor(tmp_path / "amp_model.pth", device="cpu")
    assert not fp32.amp.enabled and amp.amp.enabled
    meta = pd.read_csv(corpus_dir / "English" / "metadata.csv", dtype=str).iloc[0]
    item = amp.item(corpus_dir / "English" / meta["audio_path"], meta["transcript"])
    full = fp32.probabilities([item])[0]
    entered = []
    real_autocast = type(amp.amp).autocast
    monkeypatch.setattr(type(amp.amp), "autocast", lambda policy: entered.append(policy.enabled) or real_autocast(policy))
    low = amp.probabilities([item])[0]
    assert entered == [True] and low == pytest.approx(full, abs=0.05)
