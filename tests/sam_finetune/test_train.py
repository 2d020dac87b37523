"""End to end through train.py / evaluate.py / predict.py on the tiny SAM: it learns, frozen weights stay
put, every strategy exports, resume reproduces an uninterrupted run, and training keys take effect."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from segment_anything import SamPredictor

from projects.sam_finetune import evaluate, predict, train
from projects.sam_finetune.config import ConfigError, config_from_dict
from projects.sam_finetune.dataset import PromptedSegmentationDataset, collate_prompted
from projects.sam_finetune.engine import EmbeddingCache, batch_loss
from projects.sam_finetune.losses import SamFinetuneLoss
from projects.sam_finetune.modeling.build import build_sam_tiny
from projects.sam_finetune.modeling.prompted_sam import ImagePrompts, PromptedSam
from projects.sam_finetune.modeling.strategies import load_finetuned
from projects.sam_finetune.preprocess import map_intensity, read_image
from shared.checkpoint import CheckpointError, load_checkpoint
from shared.run import RunError
from shared.tracking import read_jsonl
from tests.sam_finetune.helpers import tiny_config, write_config


def _train(tmp: Path, data_dir: Path, base: Path | None, name: str, **sections) -> dict:
    config = tiny_config(data_dir, tmp / "runs", base, **sections)
    config["output"]["experiment_name"] = name
    path = write_config(tmp / f"{name}.yaml", config)
    return {"summary": train.main(["--config", str(path), "--device", "cpu"]), "config": path}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, directory_data, base_checkpoint):
    """Full fine-tuning, encoder unfrozen, 5 epochs, a checkpoint every epoch."""
    tmp = tmp_path_factory.mktemp("full")
    return _train(tmp, directory_data, base_checkpoint, "full", data={"batch_size": 2},
                  training={"num_epochs": 5, "learning_rate": 1e-2, "warmup_epochs": 0.5, "checkpoint_every": 1})


@pytest.fixture(scope="module")
def strategy_runs(tmp_path_factory, directory_data, base_checkpoint):
    tmp = tmp_path_factory.mktemp("strategies")
    return {strategy: _train(tmp, directory_data, base_checkpoint, strategy, finetuning={"strategy": strategy},
                             training={"num_epochs": 2, "learning_rate": 1e-2})
            for strategy in ("adapter", "lora")}


def _state(path: Path) -> dict[str, torch.Tensor]:
    payload = load_checkpoint(path)
    return payload.get("model_state_dict", payload)


def test_full_finetuning_learns_and_writes_its_outputs(full_run, base_checkpoint):
    summary = full_run["summary"]
    run_dir = Path(summary["run_dir"])
    for name in ("config.json", "metrics.jsonl", "best_model.pth", "best_model_sam.pth", "latest_model.pth",
                 "checkpoint_epoch_1.pth", "checkpoint_epoch_5.pth", "loss_curves.png"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("training_summary_*.json")) and list((run_dir / "runs").glob("events.out.tfevents.*"))
    rows = read_jsonl(run_dir / "metrics.jsonl")
    epochs = [r for r in rows if "val/iou" in r]
    assert len(epochs) == 5 and {"val/dice", "val/pixel_accuracy", "val/boundary_f1", "val/loss",
                                 "memory/peak_rss_mb"} <= set(epochs[0])
    assert any("lr" in r and "train/loss" in r for r in rows)
    assert summary["best_val_iou"] == max(r["val/iou"] for r in epochs)
    assert summary["embedding_cache"].startswith("off")  # the encoder trains
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "runs"), size_guidance={"images": 0}).Reload()
    assert {"val/iou", "val/dice", "val/pixel_accuracy", "train/loss", "lr"} <= set(events.Tags()["scalars"])
    assert "val_overlays/image_0" in events.Tags()["images"]

    report = evaluate.main(["--config", str(full_run["config"]), "--checkpoint", str(run_dir / "best_model.pth")])
    assert report["finetuned"]["iou"] == pytest.approx(summary["best_val_iou"], abs=1e-6)
    assert report["finetuned"]["iou"] > report["base"]["iou"] + 0.2  # learned, vs the same model untrained
    assert report["finetuned"]["boundary_f1"] > report["base"]["boundary_f1"]
    table = pd.read_csv(run_dir / "evaluation" / "per_image_metrics.csv")
    assert len(table) == 6 and {"finetuned_iou", "base_iou", "finetuned_boundary_f1", "base_pixel_accuracy"} <= set(table)
    assert table["finetuned_iou"].mean() == pytest.approx(report["finetuned"]["iou"])
    stock = evaluate.main(["--config", str(full_run["config"]), "--checkpoint", str(run_dir / "best_model_sam.pth"),
                           "--no_base", "--output_dir", str(run_dir / "eval_stock")])
    assert stock["finetuned"]["iou"] == pytest.approx(report["finetuned"]["iou"], abs=1e-4)


def test_predict_cli_single_image_folder_and_prompt_file(full_run, directory_data, coco_data, tmp_path):
    run_dir = Path(full_run["summary"]["run_dir"])
    image = directory_data / "images" / "val" / "img_0000.png"
    truth = cv2.imread(str(directory_data / "masks" / "val" / "img_0000.png"), cv2.IMREAD_GRAYSCALE) > 0
    count, labels = cv2.connectedComponents(truth.astype("uint8"))
    boxes = []
    for i in range(1, count):
        ys, xs = (labels == i).nonzero()
        boxes += ["--box", str(xs.min()), str(ys.min()), str(xs.max()), str(ys.max())]
    out = tmp_path / "mask.png"
    written = predict.main(["--checkpoint", str(run_dir / "best_model.pth"), "--image", str(image),
                            *boxes, "--out", str(out)])
    assert out in written and (tmp_path / "mask_overlay.png").is_file()
    mask = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == truth.shape and set(mask.flatten().tolist()) <= {0, 255}
    iou = ((mask > 0) & truth).sum() / ((mask > 0) | truth).sum()
    assert iou > 0.3
    cli = ["--checkpoint", "c.pth", "--image", "x.png", "--point", "30", "30", "--point", "2", "2"]
    assert predict.prompts_from_cli(predict.parse_args(cli))["point_labels"] == [1, 1]
    labelled = predict.prompts_from_cli(predict.parse_args(cli + ["--point_label", "1", "--point_label", "0"]))
    assert labelled == {"boxes": [], "points": [[30.0, 30.0], [2.0, 2.0]], "point_labels": [1, 0]}
    written = predict.main(["--checkpoint", str(run_dir / "best_model.pth"), "--image", str(image),
                            *cli[4:], "--point_label", "1", "--point_label", "0", "--out", str(tmp_path / "p.png")])
    assert cv2.imread(str(written[0])).shape[:2] == truth.shape
    with pytest.raises(ValueError, match="--point_label given 1 times for 2 --point prompts"):
        predict.main(["--checkpoint", str(run_dir / "best_model.pth"), "--image", str(image),
                      "--point", "30", "30", "--point", "2", "2", "--point_label", "1"])
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"img_0001.png": {"points": [[30, 30]], "point_labels": [1]}}))
    folder_out = tmp_path / "folder"
    written = predict.main(["--checkpoint", str(run_dir / "best_model_sam.pth"), "--model_type", "tiny",
                            "--image", str(directory_data / "images" / "val"), "--prompts", str(prompts),
                            "--output_dir", str(folder_out)])
    assert sorted(p.name for p in written) == ["img_0001_mask.png", "img_0001_mask_overlay.png"]
    coco_prompts = coco_data / "annotations" / "instances_val.json"
    written = predict.main(["--checkpoint", str(run_dir / "best_model.pth"), "--image", str(coco_data / "val"),
                            "--prompts", str(coco_prompts), "--output_dir", str(tmp_path / "coco")])
    assert len([p for p in written if p.name.endswith("_overlay.png")]) == 3
    with pytest.raises(CheckpointError, match="the model type must be given"):
        predict.main(["--checkpoint", str(run_dir / "best_model_sam.pth"), "--image", str(image), "--box", "1", "1", "9", "9"])


def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(full_run, tmp_path):
    run_dir = Path(full_run["summary"]["run_dir"])
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(run_dir / "checkpoint_epoch_2.pth", resumed_dir / "checkpoint_epoch_2.pth")
    summary = train.main(["--config", str(full_run["config"]), "--resume", str(resumed_dir / "checkpoint_epoch_2.pth")])
    assert summary["run_dir"] == str(resumed_dir)
    uninterrupted, resumed = _state(run_dir / "latest_model.pth"), _state(resumed_dir / "latest_model.pth")
    assert resumed.keys() == uninterrupted.keys()
    for key in uninterrupted:
        assert torch.equal(resumed[key], uninterrupted[key]), key
    assert load_checkpoint(resumed_dir / "latest_model.pth")["epoch"] == 4


def _run_config(run_dir: Path) -> dict:
    data = json.loads((run_dir / "config.json").read_text())
    del data["resolved"]
    return data


def test_resume_with_another_strategy_is_refused(full_run, tmp_path):
    run_dir = Path(full_run["summary"]["run_dir"])
    data = _run_config(run_dir)
    data["finetuning"]["strategy"] = "lora"
    path = write_config(tmp_path / "other.yaml", data)
    shutil.copy(run_dir / "checkpoint_epoch_1.pth", tmp_path / "checkpoint_epoch_1.pth")
    with pytest.raises(RunError, match="checkpoint_epoch_1.pth: resume would change the experiment: "
                                       "finetuning.strategy: full -> lora \\(a resume may"):
        train.main(["--config", str(path), "--resume", str(tmp_path / "checkpoint_epoch_1.pth")])


def test_resume_with_other_data_or_loss_settings_is_refused_before_training(full_run, tmp_path):
    run_dir = Path(full_run["summary"]["run_dir"])
    data = _run_config(run_dir)
    data["data"]["normalization"] = "zero_one"
    data["loss"]["segmentation_loss"]["type"] = "focal"
    data["data"]["num_workers"] = 1  # may change: alone it would not be refused, and it is not named
    path = write_config(tmp_path / "other.yaml", data)
    shutil.copy(run_dir / "checkpoint_epoch_1.pth", tmp_path / "checkpoint_epoch_1.pth")
    with pytest.raises(RunError) as refused:
        train.main(["--config", str(path), "--resume", str(tmp_path / "checkpoint_epoch_1.pth")])
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'checkpoint_epoch_1.pth'}: ")
    assert "num_workers:" not in message
    assert "data.normalization: sam -> zero_one; loss.segmentation_loss.type: dice_bce -> focal (" in message
    assert not (tmp_path / "latest_model.pth").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_resume_with_moved_data_and_more_epochs_continues(full_run, directory_data, tmp_path):
    run_dir = Path(full_run["summary"]["run_dir"])
    moved_data, resumed_dir = tmp_path / "moved_data", tmp_path / "resumed"
    shutil.copytree(directory_data, moved_data)
    resumed_dir.mkdir()
    shutil.copy(run_dir / "checkpoint_epoch_4.pth", resumed_dir / "checkpoint_epoch_4.pth")
    data = _run_config(run_dir)
    data["data"]["data_dir"] = str(moved_data)
    data["training"]["num_epochs"] = 6  # the run had 5
    data["output"]["output_dir"] = str(tmp_path / "elsewhere")
    path = write_config(tmp_path / "moved.yaml", data)
    summary = train.main(["--config", str(path), "--resume", str(resumed_dir / "checkpoint_epoch_4.pth")])
    assert summary["run_dir"] == str(resumed_dir) and summary["epochs"] == 6
    assert json.loads((resumed_dir / "config.json").read_text())["data"]["data_dir"] == str(moved_data)
    rows = read_jsonl(resumed_dir / "metrics.jsonl")
    assert [r["epoch"] for r in rows if "val/iou" in r] == [4, 5]
    assert load_checkpoint(resumed_dir / "latest_model.pth")["epoch"] == 5
    lrs = [r["lr"] for r in rows if "lr" in r]  # the cosine now spans 6 epochs: no jump, near 0 at the end
    assert len(lrs) == 24 and lrs[0] > 2e-3 and 0 < lrs[-1] < 1e-5
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    before, after = _state(resumed_dir / "checkpoint_epoch_4.pth"), _state(resumed_dir / "latest_model.pth")
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("strategy", ["adapter", "lora"])
def test_strategies_train_only_their_weights_and_export_both_files(strategy_runs, base_checkpoint, strategy):
    summary = strategy_runs[strategy]["summary"]
    run_dir = Path(summary["run_dir"])
    base = torch.load(base_checkpoint)
    trained = _state(run_dir / "latest_model.pth")  # PromptedSam keys: "sam." + the Sam's own
    encoder_base_keys = [k for k in base if k.startswith("image_encoder.")]
    for key in encoder_base_keys:  # the encoder's own weights are untouched
        name = key.replace(".attn.", ".attn.attn.", 1) if strategy == "adapter" else key
        name = name.replace(".mlp.", ".mlp.mlp.", 1) if strategy == "adapter" else name
        if strategy == "lora" and key.endswith(("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias")):
            name = key.rsplit(".", 1)[0] + ".base_layer." + key.rsplit(".", 1)[1]
        assert torch.equal(trained[f"sam.{name}"], base[key]), key
    assert not torch.equal(trained["sam.mask_decoder.iou_token.weight"], base["mask_decoder.iou_token.weight"])
    assert torch.equal(trained["sam.prompt_encoder.point_embeddings.2.weight"], base["prompt_encoder.point_embeddings.2.weight"])
    marker = ".adapter." if strategy == "adapter" else "lora_B"
    assert any(marker in k and v.abs().sum() > 0 for k, v in trained.items())  # zero-initialised, now trained
    assert summary["trainable_image_encoder"] > 0 and summary["embedding_cache"].startswith("off")
    strategy_file = load_checkpoint(run_dir / f"best_model_{strategy}.pth")
    assert strategy_file["strategy"] == strategy and strategy_file["strategy_config"]
    stock = build_sam_tiny(run_dir / "best_model_sam.pth")  # strict load into the stock classes
    assert stock.image_encoder.img_size == 64
    report = evaluate.main(["--config", str(strategy_runs[strategy]["config"]), "--checkpoint",
                            str(run_dir / "best_model.pth"), "--no_base"])
    assert report["strategy"] == strategy and report["finetuned"]["iou"] == pytest.approx(summary["best_val_iou"], abs=1e-6)


def test_frozen_encoder_uses_the_embedding_cache_and_augmentation_bypasses_it(
        tmp_path, directory_data, base_checkpoint, caplog):
    frozen = {"freeze_image_encoder": True}
    with caplog.at_level(logging.INFO):
        cached = _train(tmp_path, directory_data, base_checkpoint, "cached", model=frozen,
                        training={"num_epochs": 2})["summary"]
    assert cached["embedding_cache"].startswith("on")
    assert cached["embedding_cache_misses"] == 24 and cached["embedding_cache_hits"] == 24  # epoch 2: all hits
    # full strategy, encoder and prompt encoder frozen: only the mask decoder moved
    assert cached["trainable_image_encoder"] == cached["trainable_prompt_encoder"] == 0
    assert cached["trainable_parameters"] == cached["trainable_mask_decoder"] > 0
    base, trained = torch.load(base_checkpoint), _state(Path(cached["run_dir"]) / "latest_model.pth")
    for key in (k for k in base if k.startswith(("image_encoder.", "prompt_encoder."))):
        assert torch.equal(trained[f"sam.{key}"], base[key]), key
    assert any(not torch.equal(trained[f"sam.{k}"], v) for k, v in base.items() if k.startswith("mask_decoder."))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        augmented = _train(tmp_path, directory_data, base_checkpoint, "augmented", model=frozen,
                           data={"augment": {"flip_prob": 0.5}})["summary"]
    assert augmented["embedding_cache"].startswith("bypassed") and augmented["embedding_cache_hits"] == 0
    assert "embedding cache bypassed for training: augmentation changes pixels" in caplog.text


def test_cached_embeddings_give_the_same_loss_as_the_encoder(directory_data):
    cfg = config_from_dict(tiny_config(directory_data, Path("unused"), None))
    dataset = PromptedSegmentationDataset(cfg.data, "train", train=False)
    batch = collate_prompted([dataset[i] for i in range(3)])
    torch.manual_seed(0)
    model = PromptedSam(build_sam_tiny())
    loss_fn, cache = SamFinetuneLoss(cfg.loss), EmbeddingCache()
    direct, _ = batch_loss(model, batch, loss_fn, torch.device("cpu"), None)
    first, _ = batch_loss(model, batch, loss_fn, torch.device("cpu"), cache)
    again, _ = batch_loss(model, batch, loss_fn, torch.device("cpu"), cache)
    torch.testing.assert_close(first, direct)
    torch.testing.assert_close(again, direct)
    assert (cache.misses, cache.hits) == (3, 3)


# --- every training key changes the run -----------------------------------------------------------

VARIANTS = {
    "default": {},
    "sam": {"training": {"optimizer": {"type": "sam", "sam_rho": 0.05}}},
    "sam_rho": {"training": {"optimizer": {"type": "sam", "sam_rho": 0.5}}},
    "lion": {"training": {"optimizer": {"type": "lion"}, "learning_rate": None, "weight_decay": None}},
    "betas": {"training": {"optimizer": {"betas": [0.5, 0.9]}}},
    "linear": {"training": {"lr_scheduler": {"type": "linear"}}},
    "min_lr": {"training": {"lr_scheduler": {"min_lr": 1e-3}}},
    "warmup": {"training": {"warmup_epochs": 0.5}},
    "accumulation": {"training": {"gradient_accumulation_steps": 2}},
    "clipping": {"training": {"max_grad_norm": 1e-3}},
    "weight_decay": {"training": {"weight_decay": 0.5}},
    "amp": {"device": {"use_amp": True}},
    "focal": {"loss": {"segmentation_loss": {"type": "focal"}}},
    "iou_weight": {"loss": {"iou_loss": {"weight": 0.0}}},
    "point": {"data": {"prompt_mode": "point", "num_points": 2}},
    "zero_one": {"data": {"normalization": "zero_one"}},
    "seed": {"training": {"seed": 7}},
}


@pytest.fixture(scope="module")
def variant_runs(tmp_path_factory, directory_data, base_checkpoint):
    tmp = tmp_path_factory.mktemp("variants")
    runs = {}
    for name, sections in VARIANTS.items():
        config = tiny_config(directory_data, tmp / "runs", base_checkpoint,
                             training={"num_epochs": 1, "learning_rate": 1e-2, "checkpoint_every": 0})
        for section, values in sections.items():
            for key, value in values.items():
                if isinstance(value, dict):
                    config.setdefault(section, {}).setdefault(key, {}).update(value)
                else:
                    config.setdefault(section, {})[key] = value
        config["output"]["experiment_name"] = name
        summary = train.main(["--config", str(write_config(tmp / f"{name}.yaml", config))])
        run_dir = Path(summary["run_dir"])
        runs[name] = {"summary": summary, "weights": _state(run_dir / "latest_model.pth"),
                      "rows": read_jsonl(run_dir / "metrics.jsonl")}
    return runs


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "default"])
def test_each_training_key_changes_the_trained_weights(variant_runs, name):
    default, variant = variant_runs["default"]["weights"], variant_runs[name]["weights"]
    assert any(not torch.equal(default[k], variant[k]) for k in default), name


def test_lion_without_explicit_lr_gets_its_authors_scaling_and_no_periodic_checkpoints(variant_runs):
    run_dir = Path(variant_runs["lion"]["summary"]["run_dir"])
    resolved = json.loads((run_dir / "config.json").read_text())["resolved"]
    assert resolved["learning_rate"] == pytest.approx(1e-4 / 3) and resolved["weight_decay"] == pytest.approx(0.03)
    assert not list(run_dir.glob("checkpoint_epoch_*.pth"))  # checkpoint_every: 0


def test_schedule_keys_shape_the_learning_rate(variant_runs):
    def lrs(name):
        return [r["lr"] for r in variant_runs[name]["rows"] if "lr" in r]

    default, linear, warmup, min_lr = lrs("default"), lrs("linear"), lrs("warmup"), lrs("min_lr")
    # the lr each step used: 6 batches, the first at the base lr, the cosine's 0 comes after the last
    assert len(default) == 6 and default[0] == linear[0] == pytest.approx(1e-2)
    assert default[1] == pytest.approx(1e-2 * (1 + math.cos(math.pi / 6)) / 2) and linear[1] == pytest.approx(1e-2 * 5 / 6)
    assert default[-1] == pytest.approx(1e-2 * (1 + math.cos(5 * math.pi / 6)) / 2)
    assert min(min_lr) > 1e-3 > default[-1]
    assert warmup[0] < 0.9e-2 and max(warmup) == pytest.approx(1e-2) and warmup[-1] < 3e-3 and warmup[-1] < warmup[-2]
    assert len(lrs("accumulation")) == 3  # two batches per optimizer step
    assert variant_runs["iou_weight"]["rows"][0]["train/loss"] == pytest.approx(
        variant_runs["iou_weight"]["rows"][0]["train/segmentation_loss"])


def _sixteen_bit_data(root: Path) -> Path:
    """A val split of 12-bit images that need down- (100x150) and up-scaling (20x30) to 64 px."""
    rng = np.random.default_rng(0)
    for name, (h, w) in {"big": (100, 150), "small": (20, 30)}.items():
        image = rng.normal(400, 30, (h, w))
        mask = np.zeros((h, w), np.uint16)
        mask[h // 4:h // 2, w // 3:2 * w // 3] = 1
        image[mask > 0] = 3600
        for sub, array in (("images", np.clip(image, 0, 4095).astype(np.uint16)), ("masks", mask)):
            (root / sub / "val").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / sub / "val" / f"{name}.png"), array)
    return root


@pytest.mark.parametrize("normalization", ["sam", "zero_one"])
def test_train_and_predict_logits_agree_on_resized_16bit_images(variant_runs, tmp_path, normalization):
    """Training's dataset, predict.py and the official SamPredictor on the export (with its
    preprocessing.json) give the same logits on 16-bit images that need down- and up-scaling."""
    run = variant_runs["default" if normalization == "sam" else "zero_one"]
    run_dir = Path(run["summary"]["run_dir"])
    predictor, preprocessing, _ = predict.make_predictor(run_dir / "best_model.pth", None, "sam", torch.device("cpu"))
    stock, stock_preprocessing, _ = predict.make_predictor(run_dir / "best_model_sam.pth", "tiny", "sam",
                                                           torch.device("cpu"))
    assert preprocessing == stock_preprocessing and preprocessing.normalization == normalization
    official = SamPredictor(load_finetuned("tiny", str(run_dir / "best_model_sam.pth"), 64))
    config = config_from_dict({k: v for k, v in json.loads((run_dir / "config.json").read_text()).items()
                               if k != "resolved"})
    config.data.data_dir = str(_sixteen_bit_data(tmp_path / "data16"))
    dataset = PromptedSegmentationDataset(config.data, "val", train=False)
    assert {item["original_size"] for item in (dataset[0], dataset[1])} == {(100, 150), (20, 30)}
    for item in (dataset[0], dataset[1]):
        with torch.no_grad():
            expected = PromptedSam(predictor.model)([ImagePrompts(boxes=item["boxes"])], images=item["image"][None])[0][0]
        image = read_image(item["image_path"])
        assert image.dtype == np.uint16
        for pred in (predictor, stock):
            predict.set_image(pred, image, preprocessing)
            _, _, low_res = pred.predict_torch(None, None, boxes=item["boxes"], multimask_output=False)
            torch.testing.assert_close(low_res, expected, atol=1e-4, rtol=1e-4)
        official.set_image(map_intensity(image, preprocessing.intensity))  # what the README tells users
        _, _, low_res = official.predict_torch(None, None, boxes=item["boxes"], multimask_output=False)
        torch.testing.assert_close(low_res, expected, atol=1e-4, rtol=1e-4)


def test_evaluate_split_and_base_checkpoint_flags(full_run, tmp_path):
    run_dir = Path(full_run["summary"]["run_dir"])
    report = evaluate.main(["--config", str(full_run["config"]), "--checkpoint", str(run_dir / "best_model.pth"),
                            "--split", "train", "--base_checkpoint", str(run_dir / "best_model_sam.pth"),
                            "--output_dir", str(tmp_path)])
    assert report["split"] == "train" and report["images"] == 24
    assert report["base"] == pytest.approx(report["finetuned"], abs=1e-5)  # the same weights as the base
    assert len(pd.read_csv(tmp_path / "per_image_metrics.csv")) == 24


def test_training_skips_and_counts_bad_samples(tmp_path, directory_data, base_checkpoint):
    data = tmp_path / "data"
    shutil.copytree(directory_data, data)
    (data / "masks" / "train" / "img_0003.png").unlink()
    mask = cv2.imread(str(data / "masks" / "train" / "img_0004.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(data / "masks" / "train" / "img_0004.png"), cv2.merge([mask, mask * 0, mask]))  # colour
    summary = _train(tmp_path, data, base_checkpoint, "broken")["summary"]
    assert summary["skipped_train_samples"] == 2 and summary["skipped_val_samples"] == 0
    assert summary["skipped_by_reason"]["train"] == {"missing mask": 1, "colour mask": 1}
    saved = json.loads(next(Path(summary["run_dir"]).glob("training_summary_*.json")).read_text())
    assert saved["skipped_by_reason"] == summary["skipped_by_reason"]


def test_evaluate_refuses_a_config_with_other_preprocessing(full_run, tmp_path):
    run_dir = Path(full_run["summary"]["run_dir"])
    data = _run_config(run_dir)
    data["data"]["intensity"] = {"mode": "minmax", "percentiles": [0.5, 99.5], "window": None}
    path = write_config(tmp_path / "minmax.yaml", data)
    with pytest.raises(ConfigError, match="best_model.pth: the model was trained with preprocessing"):
        evaluate.main(["--config", str(path), "--checkpoint", str(run_dir / "best_model.pth"), "--no_base"])
