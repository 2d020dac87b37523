"""End to end through train.py's main(): a short tiny-model run shared by the tests below, resume,
strict reloads, evaluation and prediction, and what every training flag does."""

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from monai.transforms import RandCropByPosNegLabeld

from projects.sam_med3d_ich.config import TrainConfig
from projects.sam_med3d_ich.dataloader import VolumeDataset, load_case, load_volume, read_cases
from projects.sam_med3d_ich.evaluate import main as evaluate_main
from projects.sam_med3d_ich.inference import load_model_for_inference, predict_volume
from projects.sam_med3d_ich.model import ARCHITECTURES, build_ich_model, load_sam_checkpoint
from projects.sam_med3d_ich.modeling import ICHClassificationHead, ImageEncoderViT3D, VisualTokenHead
from projects.sam_med3d_ich.predict import main as predict_main
from projects.sam_med3d_ich.train import build_parser, config_from_args
from projects.sam_med3d_ich.train import main as train_main
from projects.sam_med3d_ich.trainer import Trainer
from shared.checkpoint import load_checkpoint, save_checkpoint

TINY = ["--model_type", "tiny", "--visual_tokens", "8", "--visual_token_dim", "32", "--num_workers", "0",
        "--num_clicks", "2", "--val_clicks", "2", "--batch_size", "2", "--lr", "2e-3", "--prompt_decoder_lr_scale",
        "1", "--target_spacing", "native"]


def data_args(root, train="train.csv", val="val.csv"):
    return ["--train_csv", str(root / train), "--val_csv", str(root / val), "--mask_dir", str(root / "masks")]


@pytest.fixture(scope="module")
def trained_run(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("med3d_run") / "run"
    summary = train_main(data_args(synthetic_root) + TINY + ["--output_dir", str(out), "--epochs", "2",
                                                             "--log_images", "--log_freq", "1"])
    return summary


def make_trainer(root, tmp_path, *extra):
    """A Trainer on the small split; later flags override TINY's."""
    parser = build_parser()
    args = parser.parse_args(data_args(root, "small_train.csv", "small_val.csv") + TINY
                             + ["--output_dir", str(tmp_path / "run"), *extra])
    return Trainer(config_from_args(args, parser))


def test_run_writes_every_output(trained_run):
    out = trained_run["output_dir"]
    names = {p.name for p in Path(out).iterdir()}
    assert {"best_model.pth", "latest_model.pth", "sam_encoder.pth", "config.json", "metrics.jsonl",
            "dataset_stats.json", "loss_curves.png"} <= names
    assert any(n.startswith("training_summary_") and n.endswith(".json") for n in names)
    rows = [json.loads(line) for line in open(f"{out}/metrics.jsonl")]
    epochs = [r for r in rows if "epoch" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert {"val_dice_automatic", "val_dice_1click", "val_dice_nclicks", "val_dice_all", "val_iou", "val_auc",
            "train_loss", "peak_rss_mb"} <= set(epochs[0])
    steps = [r for r in rows if "train_step_loss" in r]
    assert [r["step"] for r in steps] == list(range(1, trained_run["global_steps"] + 1))
    assert epochs[-1]["step"] == trained_run["global_steps"]  # epoch rows carry the optimiser step
    stats = json.loads(open(f"{out}/dataset_stats.json").read())
    assert stats["train"]["cases"] > 0 and "lesion_volume_ml" in stats["train"]
    assert trained_run["epochs_completed"] == 2 and trained_run["skipped_cases"] == 0


def test_log_images_writes_overlays_every_log_freq_epochs(trained_run):
    import matplotlib.pyplot as plt

    samples = sorted(p.name for p in (Path(trained_run["output_dir"]) / "samples").iterdir())
    assert [s[:8] for s in samples] == ["epoch001", "epoch002"]
    image = plt.imread(str(Path(trained_run["output_dir"]) / "samples" / samples[0]))
    assert image.shape[1] == 3 * image.shape[0]  # image | truth | prediction


def test_best_model_reloads_strictly_and_predicts_the_same(trained_run):
    path = f"{trained_run['output_dir']}/best_model.pth"
    model, settings = load_model_for_inference(path)
    assert settings["source"] == "this tool" and settings["model_config"] == {"model_type": "tiny", "visual_tokens": 8, "visual_token_dim": 32}
    again = build_ich_model("tiny", 8, 32)
    assert load_sam_checkpoint(again, path) == []  # heads included: nothing left at its init
    image = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(image), again.eval()(image))


def test_sam_encoder_export_reloads_strictly(trained_run):
    export = load_checkpoint(f"{trained_run['output_dir']}/sam_encoder.pth")
    arch = ARCHITECTURES[export["model_type"]]
    encoder = ImageEncoderViT3D(img_size=arch.img_size, patch_size=arch.patch_size, embed_dim=arch.encoder_dim,
                                depth=arch.encoder_depth, num_heads=arch.encoder_heads, out_chans=arch.prompt_dim,
                                window_size=arch.window_size, global_attn_indexes=arch.global_attn_indexes)
    encoder.load_state_dict(export["image_encoder_state_dict"], strict=True)
    config = export["head_config"]
    assert config == {"in_dim": 48, "num_tokens": 8, "token_dim": 32}
    head = VisualTokenHead(config["in_dim"], config["num_tokens"], config["token_dim"])
    head.load_state_dict(export["representation_head_state_dict"], strict=True)
    ICHClassificationHead(config["token_dim"]).load_state_dict(export["ich_head_state_dict"], strict=True)
    with torch.no_grad():
        tokens = head(encoder(torch.randn(1, 1, 32, 32, 32)))
    assert tokens.shape == (1, 8, 32)


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(small_root, tmp_path):
    flags = ("--epochs", "2", "--scheduler_type", "cosine", "--augmentation_prob", "1", "--num_clicks", "3")
    straight = make_trainer(small_root, tmp_path / "a", *flags)
    straight.train()
    killed = make_trainer(small_root, tmp_path / "b", *flags)
    killed.train(stop_after_epoch=1)
    resumed = make_trainer(small_root, tmp_path / "b", *flags, "--resume", str(killed.output_dir / "latest_model.pth"))
    assert resumed.start_epoch == 1 and resumed.output_dir == killed.output_dir
    resumed.train()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_evaluate_reports_per_case_and_mean_metrics(trained_run, synthetic_root, tmp_path):
    summary = evaluate_main(["--checkpoint", f"{trained_run['output_dir']}/best_model.pth",
                             "--csv", str(synthetic_root / "test.csv"), "--mask_dir", str(synthetic_root / "masks"),
                             "--output_dir", str(tmp_path), "--num_clicks", "2", "--overlap", "0.25"])
    table = pd.read_csv(tmp_path / "per_case_metrics.csv")
    assert len(table) == summary["cases"] == len(pd.read_csv(synthetic_root / "test.csv"))
    for mode in ("automatic", "1click", "nclicks"):
        assert {f"dice_{mode}", f"iou_{mode}", f"hd95_mm_{mode}", f"volume_error_ml_{mode}"} <= set(table.columns)
    assert 0 <= summary["ich_auc"] <= 1 and summary["num_clicks"] == 2 and summary["source"] == "this tool"
    assert summary["mean_all"]["dice_1click"] == pytest.approx(table["dice_1click"].mean())


def test_predict_writes_a_mask_with_the_input_geometry(trained_run, synthetic_root, tmp_path):
    volume, _ = load_volume(synthetic_root / "volumes" / "001.pkl")
    big = np.pad(volume, ((0, 12), (0, 4), (0, 0)), constant_values=-1000)[:, :, :20]  # 44 x 36 x 20
    affine = np.array([[0.5, 0, 0, -10], [0, 0.5, 0, 4], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(big, affine), str(tmp_path / "scan.nii.gz"))
    checkpoint = f"{trained_run['output_dir']}/best_model.pth"
    result = predict_main(["--checkpoint", checkpoint, "--input", str(tmp_path / "scan.nii.gz"),
                           "--output", str(tmp_path / "mask.nii.gz"), "--click", "10", "12", "8", "1"])
    mask = nib.load(str(tmp_path / "mask.nii.gz"))
    assert mask.shape == big.shape and np.allclose(mask.affine, affine)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1} and result["clicks"] == 1
    with pytest.raises(Exception, match=r"click \(99, 0, 0\) lies outside the volume of shape \(44, 36, 20\)"):
        predict_main(["--checkpoint", checkpoint, "--input", str(tmp_path / "scan.nii.gz"),
                      "--output", str(tmp_path / "m2.nii.gz"), "--click", "99", "0", "0", "1"])


def resampling_checkpoint(trained_run, tmp_path, spacing):
    """best_model.pth as if trained with --target_spacing (only the stored pre-processing differs)."""
    payload = load_checkpoint(f"{trained_run['output_dir']}/best_model.pth")
    payload["extra"]["preprocessing"]["target_spacing"] = list(spacing)
    return save_checkpoint(tmp_path / "resampling_model.pth", payload)


def test_predict_with_target_spacing_writes_the_mask_on_the_input_grid(trained_run, synthetic_root, tmp_path):
    volume, _ = load_volume(synthetic_root / "volumes" / "001.pkl")
    affine = np.array([[0.5, 0, 0, -10], [0, 0.5, 0, 4], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(volume[:, :, :12], affine), str(tmp_path / "scan.nii.gz"))
    checkpoint = str(resampling_checkpoint(trained_run, tmp_path, (1.0, 1.0, 1.5)))
    masks = {}
    for threshold in ("-1", "0.5", "1"):
        predict_main(["--checkpoint", checkpoint, "--input", str(tmp_path / "scan.nii.gz"), "--output",
                      str(tmp_path / f"mask{threshold}.nii.gz"), "--click", "30", "2", "11", "1",
                      "--threshold", threshold])
        mask = nib.load(str(tmp_path / f"mask{threshold}.nii.gz"))
        assert mask.shape == (32, 32, 12) and np.allclose(mask.affine, affine)
        masks[threshold] = np.asarray(mask.dataobj)
    assert masks["-1"].all() and not masks["1"].any()  # probabilities lie in [0, 1]: --threshold decides


def test_evaluate_with_target_spacing_reports_on_the_original_grid(trained_run, synthetic_root, tmp_path):
    checkpoint = resampling_checkpoint(trained_run, tmp_path, (2.0, 2.0, 2.0))
    summary = evaluate_main(["--checkpoint", str(checkpoint), "--csv", str(synthetic_root / "test.csv"),
                             "--mask_dir", str(synthetic_root / "masks"), "--output_dir", str(tmp_path / "eval"),
                             "--overlap", "0"])
    table = pd.read_csv(tmp_path / "eval" / "per_case_metrics.csv")
    expected = {}
    for case in read_cases(synthetic_root / "test.csv", synthetic_root / "masks"):
        data = load_case(case)
        expected[case.case_id] = float(data.label.sum()) * float(np.prod(data.spacing)) / 1000.0
    assert summary["cases_resampled_to_input_grid"] == len(table) and expected and any(v > 0 for v in expected.values())
    assert dict(zip(table["case_id"], table["true_volume_ml"])) == pytest.approx(expected)


def test_sliding_windows_cover_volumes_larger_and_smaller_than_a_crop():
    torch.manual_seed(0)
    model = build_ich_model("tiny", 8, 32).eval()
    image = torch.rand(1, 1, 50, 20, 33)
    prediction = predict_volume(model, image, overlap=0.25)
    assert prediction.logits.shape == image.shape and 0 <= prediction.ich_probability <= 1
    click_map = torch.zeros(50, 20, 33)
    click_map[45, 10, 30] = 1
    clicked = predict_volume(model, image, click_map=click_map, overlap=0.25)
    changed = (clicked.logits - prediction.logits).abs().amax(dim=(0, 1, 3, 4))
    assert changed[40:].max() > 0  # windows holding the click change


# ----------------------------------------------------------------------------------------- flags


def test_parser_rejects_bad_values_naming_the_flag(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--scheduler_type", "linear"])
    assert "--scheduler_type: invalid choice: 'linear'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        config_from_args(parser.parse_args(["--train_csv", "a.csv"]), parser)
    assert "--val_csv is required" in capsys.readouterr().err


def test_defaults_are_the_documented_ones():
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.visual_tokens, cfg.scheduler_type,
            cfg.patience, cfg.select_best_by) == (200, 2, 3e-3, 0.1, 256, "reduce_on_plateau", 15, "dice_1click")
    assert cfg.target_spacing == (1.5, 1.5, 1.5) and cfg.intensity_norm == "brain_window"


def test_optimizer_groups_follow_lr_scale_and_weight_decay(small_root, tmp_path):
    trainer = make_trainer(small_root, tmp_path, "--prompt_decoder_lr_scale", "0.1", "--weight_decay", "0.05")
    groups = trainer.optimizer.param_groups
    assert {round(g["lr"], 8) for g in groups} == {2e-3, 2e-4}
    assert {g["weight_decay"] for g in groups} == {0.0, 0.05}
    decoder = {id(p) for p in trainer.model.mask_decoder.parameters()}
    assert all(g["lr"] == pytest.approx(2e-4) for g in groups if any(id(p) in decoder for p in g["params"]))


def test_preprocessing_flags_reach_the_datasets_and_the_checkpoint(small_root, tmp_path):
    trainer = make_trainer(small_root, tmp_path, "--hu_window", "10", "50", "--target_spacing", "2", "2", "2",
                           "--pos_ratio", "0.3")
    item, case = trainer.val_set[0], trainer.val_set.cases[0]
    windowed = VolumeDataset([case], "brain_window", (10.0, 50.0), (2.0, 2.0, 2.0))[0]["image"]
    assert item["spacing"] == pytest.approx((2.0, 2.0, 2.0)) and torch.equal(item["image"], windowed)
    assert not torch.equal(windowed, VolumeDataset([case], "brain_window", (0.0, 80.0), (2.0, 2.0, 2.0))[0]["image"])
    crop = next(t for t in trainer.train_set.transforms.transforms if isinstance(t, RandCropByPosNegLabeld))
    assert crop.cropper.pos_ratio == pytest.approx(0.3)
    assert trainer.preprocessing == {"intensity_norm": "brain_window", "hu_window": [10.0, 50.0],
                                     "target_spacing": [2.0, 2.0, 2.0]}  # stored in every checkpoint
    zscored = make_trainer(small_root, tmp_path / "z", "--intensity_norm", "sam_med3d").val_set[0]["image"]
    assert zscored.min() < 0 < zscored.max()  # z-scored, not windowed into [0, 1]


def test_freeze_encoder_and_gradient_checkpointing(small_root, tmp_path):
    trainer = make_trainer(small_root, tmp_path, "--freeze_encoder", "--use_gradient_checkpointing", "--epochs", "1")
    assert trainer.model.image_encoder.gradient_checkpointing
    encoder_before = {k: v.clone() for k, v in trainer.model.image_encoder.state_dict().items()}
    decoder_before = trainer.model.mask_decoder.iou_token.weight.clone()
    trainer.train()
    assert all(torch.equal(v, trainer.model.image_encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert not torch.equal(decoder_before, trainer.model.mask_decoder.iou_token.weight)


def test_gradient_accumulation_and_batch_size_set_the_number_of_steps(small_root, tmp_path):
    one = make_trainer(small_root, tmp_path / "a", "--batch_size", "1")
    assert one.steps_per_epoch == 4
    accumulated = make_trainer(small_root, tmp_path / "b", "--batch_size", "1", "--gradient_accumulation_steps", "4")
    assert accumulated.steps_per_epoch == 1


@pytest.mark.parametrize("name,expected", [("reduce_on_plateau", "ReduceLROnPlateau"), ("cosine", "LambdaLR"),
                                           ("step", "StepLR")])
def test_scheduler_type_selects_the_schedule(small_root, tmp_path, name, expected):
    trainer = make_trainer(small_root, tmp_path, "--scheduler_type", name, "--step_size", "3", "--gamma", "0.5")
    assert type(trainer.scheduler.scheduler).__name__ == expected
    if name == "step":
        for _ in range(3):
            trainer.scheduler.step_epoch()
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(trainer.optimizer.param_groups[0]["initial_lr"]
                                                                        * 0.5)


def test_patience_stops_when_validation_dice_stalls(small_root, tmp_path):
    trainer = make_trainer(small_root, tmp_path, "--lr", "0", "--epochs", "5", "--patience", "1", "--num_clicks", "1")
    summary = trainer.train()
    assert summary["stopped_early"] and summary["epochs_completed"] == 2


def test_loss_is_segmentation_plus_weighted_classification(small_root, tmp_path):
    for weight in ("0", "2"):
        trainer = make_trainer(small_root, tmp_path / weight, "--cls_loss_weight", weight)
        batch = next(iter(trainer.train_loader))
        loss, aux = trainer._loss(batch, torch.Generator().manual_seed(0))
        assert float(loss) == pytest.approx(aux["seg_loss"] + float(weight) * aux["cls_loss"], rel=1e-5)


def test_ce_weight_sets_the_cross_entropy_share_of_dice_ce(small_root, tmp_path):
    losses = []
    for weight in ("0", "1"):
        trainer = make_trainer(small_root, tmp_path / weight, "--ce_weight", weight, "--num_clicks", "1")
        batch = next(iter(trainer.train_loader))
        losses.append(trainer._loss(batch, torch.Generator().manual_seed(0))[1]["seg_loss"])
    assert losses[1] > losses[0]  # same weights, batch and clicks: only the CE term differs


def test_max_grad_norm_clips_and_mixed_precision_autocasts(small_root, tmp_path):
    trainer = make_trainer(small_root, tmp_path, "--max_grad_norm", "1e-6", "--use_mixed_precision", "--num_clicks", "1")
    assert trainer.amp.dtype == torch.bfloat16 and trainer.stepper.max_grad_norm == 1e-6
    batch = next(iter(trainer.train_loader))
    trainer.stepper.step(lambda b: trainer._loss(b, torch.Generator().manual_seed(0)), [batch])
    norm = torch.nn.utils.get_total_norm([p.grad for p in trainer.model.parameters() if p.grad is not None])
    assert float(norm) <= 1e-6 * 1.01
    assert make_trainer(small_root, tmp_path / "b", "--max_grad_norm", "0").stepper.max_grad_norm is None


def test_checkpoint_flag_starts_from_given_weights(small_root, tmp_path):
    source = build_ich_model("tiny", 8, 32)
    torch.save({"model_state_dict": source.state_dict()}, tmp_path / "start.pth")
    trainer = make_trainer(small_root, tmp_path, "--checkpoint", str(tmp_path / "start.pth"))
    assert torch.equal(trainer.model.image_encoder.pos_embed, source.image_encoder.pos_embed)


def test_output_dir_of_another_run_is_never_reused(small_root, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    trainer = make_trainer(small_root, tmp_path)
    assert trainer.output_dir.name == "run_1"


def test_wandb_runs_offline_with_project_and_entity(small_root, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    trainer = make_trainer(small_root, tmp_path, "--use_wandb", "--wandb_project", "ich-test",
                           "--wandb_entity", "lab")
    try:
        assert trainer.tracker.wandb_mode == "offline"
        assert trainer.tracker.wandb_run.project == "ich-test"
        assert trainer.tracker.wandb_run.config["wandb_entity"] == "lab"
    finally:
        trainer.tracker.finish()


def test_system_test_checklist_passes_and_fails_loudly(monkeypatch, capsys):
    assert train_main(["--test"]) == 0
    out = capsys.readouterr().out
    assert out.count("[PASS]") == 5 and "5/5 checks passed" in out
    import projects.sam_med3d_ich.synthetic as synthetic

    monkeypatch.setattr(synthetic, "write_dataset", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    assert train_main(["--test"]) == 1
    assert "[FAIL] synthetic data: OSError: disk full" in capsys.readouterr().out


def test_metrics_are_nan_free_where_defined(trained_run):
    final = trained_run["final_validation"]
    assert all(math.isfinite(final[k]) for k in ("val_dice_automatic", "val_dice_1click", "val_dice_nclicks",
                                                 "val_dice_all", "val_iou"))


def test_freezing_random_weights_and_ignored_hu_window_are_warned(small_root, tmp_path):
    with pytest.warns(UserWarning, match="--freeze_encoder without --checkpoint freezes a randomly initialised"):
        make_trainer(small_root, tmp_path / "a", "--freeze_encoder")
    parser = build_parser()
    args = parser.parse_args(data_args(small_root) + ["--intensity_norm", "sam_med3d", "--hu_window", "0", "80"])
    with pytest.warns(UserWarning, match="--hu_window is ignored under --intensity_norm sam_med3d"):
        cfg = config_from_args(args, parser)
    assert cfg.hu_window is None  # config.json says what runs


def test_select_best_by_picks_the_metric_and_breaks_ties_by_another(small_root, tmp_path):
    val = {"val_dice_automatic": 0.2, "val_dice_1click": 0.5, "val_dice_nclicks": 0.7}
    expected = {"dice_1click": (0.5, 0.2), "dice_nclicks": (0.7, 0.2), "dice_automatic": (0.2, 0.5)}
    for name, score in expected.items():
        trainer = make_trainer(small_root, tmp_path / name, "--select_best_by", name, "--epochs", "1")
        assert trainer.selection_score(val) == score
    summary = trainer.train()
    rows = [json.loads(line) for line in open(f"{summary['output_dir']}/metrics.jsonl") if '"epoch"' in line]
    assert summary["select_best_by"] == "dice_automatic"
    assert summary["best_val_dice"] == pytest.approx(rows[0]["val_dice_automatic"])
