"""End to end through the real CLI: train (learns), resume (same weights), flags, presets, eval, infer."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from projects.dformer_sam_attention.local_configs.config import ConfigError
from projects.dformer_sam_attention.models.decoders.ham_head import LightHamHead
from projects.dformer_sam_attention.models.text_embeddings import ClassTextEmbedder
from projects.dformer_sam_attention.utils import eval as eval_cli
from projects.dformer_sam_attention.utils import infer as infer_cli
from projects.dformer_sam_attention.utils import train as train_cli
from projects.dformer_sam_attention.utils.dataloader.RGBXDataset import DatasetError
from projects.dformer_sam_attention.utils.metrics import chance_miou
from projects.dformer_sam_attention.utils.synthetic_scenes import make_dataset
from shared.checkpoint import CheckpointError
from shared.distributed import DistributedContext

PROJECT = Path(__file__).resolve().parents[2] / "projects" / "dformer_sam_attention"
CONFIG = "local_configs.NYUDepthv2.DFormerv2_Tiny"


def common(data: Path, clip: Path, runs: Path) -> list[str]:
    return ["--config", CONFIG, "--dataset_path", str(data), "--text_encoder", str(clip),
            "--checkpoint_dir", str(runs), "--no-amp"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("small") / "nyu", n_train=8, n_test=2, seed=5)


@pytest.fixture(scope="module")
def base_run(synthetic_data, tiny_clip, tmp_path_factory) -> dict:
    """Preset 1 (all defaults) for 6 epochs on 48 synthetic scenes."""
    runs = tmp_path_factory.mktemp("runs")
    summary = train_cli.main(common(synthetic_data, tiny_clip, runs) + ["--epochs", "6"])
    return {"summary": summary, "run_dir": Path(summary["run_dir"]), "runs": runs}


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "latest_model.pth", weights_only=True)["model_state_dict"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_learns_and_writes_the_run_folder(base_run):
    summary, run_dir = base_run["summary"], base_run["run_dir"]
    assert summary["validation_split"] == "val"  # checkpoints chosen on images held out of train.txt
    assert summary["best_val_miou"] > 2.5 * chance_miou(5)
    assert summary["test_miou"] > 2.5 * chance_miou(5) and summary["test_pixel_acc"] > 0.6
    for name in ("config.json", "metrics.jsonl", "best_model.pth", "latest_model.pth"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("training_summary_*.json")) and list(run_dir.glob("*.png"))
    epochs = [row for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "val_miou" in row]
    assert [row["epoch"] for row in epochs] == [1, 2, 3, 4, 5, 6]
    temps = summary["temperatures"]
    assert temps["decode_head.alignment.temperature"] != pytest.approx(14.285714, abs=1e-4)  # learnable moved
    assert all(temps[f"backbone.semantic_alignment.{i}.temperature"] == 1.0 for i in range(4))  # fixed stayed
    assert {row["class"] for row in summary["per_class_iou"]} == {"wall", "floor", "ceiling", "box", "sphere"}


def test_eval_and_infer_cli_from_the_checkpoint_alone(base_run, synthetic_data, tmp_path, monkeypatch):
    best = base_run["run_dir"] / "best_model.pth"
    result = eval_cli.main(["--checkpoint", str(best), "--dataset_path", str(synthetic_data),
                            "--output", str(tmp_path / "eval.json")])
    assert result["miou"] == pytest.approx(base_run["summary"]["test_miou"], abs=1e-6)
    assert json.loads((tmp_path / "eval.json").read_text())["table"][0]["class"] == "wall"
    mst = eval_cli.main(["--checkpoint", str(best), "--dataset_path", str(synthetic_data), "--mst", "--sliding"])
    assert mst["miou"] != result["miou"] and mst["miou"] > 2.5 * chance_miou(5)

    written = infer_cli.main(["--checkpoint", str(best), "--rgb", str(synthetic_data / "RGB" / "00050.jpg"),
                              "--depth", str(synthetic_data / "Depth" / "00050.png"), "--output_dir", str(tmp_path)])
    assert sorted(p.name for p in written) == ["00050_label.png", "00050_overlay.png"]
    classes = cv2.imread(str(tmp_path / "00050_classes.png"), cv2.IMREAD_UNCHANGED)
    truth = cv2.imread(str(synthetic_data / "Label" / "00050.png"), cv2.IMREAD_UNCHANGED).astype(int) - 1
    valid = truth >= 0
    assert (classes[valid] == truth[valid]).mean() > 0.6
    coloured = cv2.cvtColor(cv2.imread(str(tmp_path / "00050_label.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(coloured, infer_cli.palette(5)[classes])
    # folders are paired by name; --alpha 1 makes the overlay the label colours; --mst/--sliding reach the model
    folder = tmp_path / "rgb"
    folder.mkdir()
    for name in ("00050", "00051"):
        shutil.copy(synthetic_data / "RGB" / f"{name}.jpg", folder)
    seen = []
    real = infer_cli.predict_probabilities
    monkeypatch.setattr(infer_cli, "predict_probabilities",
                        lambda *a, **k: seen.append((a[4], a[5], a[6])) or real(*a, **k))
    written = infer_cli.main(["--checkpoint", str(best), "--rgb", str(folder), "--depth", str(synthetic_data / "Depth"),
                              "--output_dir", str(tmp_path / "folder"), "--alpha", "1", "--mst", "--sliding"])
    assert len(written) == 4 and seen == [((0.75, 1.0, 1.25), True, True)] * 2
    overlay = cv2.imread(str(tmp_path / "folder" / "00051_overlay.png"))
    np.testing.assert_array_equal(overlay, cv2.imread(str(tmp_path / "folder" / "00051_label.png")))
    with pytest.raises(DatasetError, match="missing.png: depth file does not exist"):
        infer_cli.main(["--checkpoint", str(best), "--rgb", str(synthetic_data / "RGB" / "00050.jpg"),
                        "--depth", str(tmp_path / "missing.png"), "--output_dir", str(tmp_path)])


def test_resume_ends_with_the_same_weights(small_data, tiny_clip, tmp_path, monkeypatch):
    args = common(small_data, tiny_clip, tmp_path / "runs") + ["--epochs", "2"]
    saved = train_cli.save_checkpoint

    def keep_epoch_one(path, payload):  # the state a run killed during epoch 2 left behind
        saved(path, payload)
        if Path(path).name == "latest_model.pth" and payload["epoch"] == 1:
            shutil.copy(path, tmp_path / "killed_latest.pth")

    monkeypatch.setattr(train_cli, "save_checkpoint", keep_epoch_one)
    uninterrupted = train_cli.main(args)
    monkeypatch.setattr(train_cli, "save_checkpoint", saved)
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(tmp_path / "killed_latest.pth", resumed_dir / "latest_model.pth")
    resumed = train_cli.main(args + ["--resume", str(resumed_dir / "latest_model.pth")])
    assert resumed["run_dir"] == str(resumed_dir)
    assert same_weights(final_weights(Path(uninterrupted["run_dir"])), final_weights(resumed_dir))
    assert resumed["final_val_miou"] == uninterrupted["final_val_miou"]


def test_flag_defaults_are_exactly_the_documented_ones():
    args = train_cli.parse_args(["--config", CONFIG])
    assert (args.sam_decoder_use_cosine, args.sam_decoder_learnable_temp, args.sam_decoder_logit_init) == (
        True, True, 14.285714)
    assert (args.sam_encoder_use_cosine, args.sam_encoder_learnable_temp, args.sam_encoder_logit_init) == (
        False, False, 1.0)
    assert args.enable_text_guidance and args.sam_enc_stages == (0, 1, 2, 3)
    assert (args.optimizer_type, args.amp, args.syncbn, args.mst, args.sliding) == ("adamw", True, False, False, False)


def built_model(argv: list[str]):
    args = train_cli.parse_args(["--config", CONFIG] + argv)
    config = train_cli.resolve_config(args)
    settings = train_cli.model_settings(args, config, text_dim=8)
    from projects.dformer_sam_attention.models.builder import build_model

    return build_model(settings, torch.zeros(config.num_classes, 8) if settings.text_guidance else None,
                       gradient_checkpointing=args.gradient_checkpointing)


@pytest.mark.parametrize("argv, check", [
    (["--no-sam-decoder-use-cosine"], lambda m: not m.decode_head.alignment.use_cosine),
    (["--no-sam-decoder-learnable-temp"], lambda m: "decode_head.alignment.temperature.log_scale"
     not in dict(m.named_parameters())),
    (["--sam-decoder-logit-init", "2.5"], lambda m: float(m.decode_head.alignment.temperature()) == pytest.approx(2.5)),
    (["--sam-encoder-use-cosine"], lambda m: all(a.use_cosine for a in m.backbone.semantic_alignment.values())),
    (["--sam-encoder-learnable-temp"], lambda m: all(a.temperature.learnable
                                                      for a in m.backbone.semantic_alignment.values())),
    (["--sam-encoder-logit-init", "3.0"], lambda m: float(m.backbone.semantic_alignment["1"].temperature())
     == pytest.approx(3.0)),
    (["--sam-enc-stages", "1,3"], lambda m: sorted(m.backbone.semantic_alignment) == ["1", "3"]),
    (["--sam-enc-stages", ""], lambda m: len(m.backbone.semantic_alignment) == 0 and m.uses_text),
    (["--no-enable-text-guidance"], lambda m: not m.uses_text and not hasattr(m.decode_head, "alignment")),
    (["--decoder", "ham"], lambda m: isinstance(m.decode_head, LightHamHead)),
    (["--text-logit-init", "3.0"], lambda m: float(m.decode_head.text_logit_scale()) == pytest.approx(3.0)),
    (["--no-text-logit-learnable"], lambda m: not m.decode_head.text_logit_scale.learnable),
    (["--gradient_checkpointing"], lambda m: all(layer.gradient_checkpointing for layer in m.backbone.layers)),
])
def test_every_model_flag_reaches_the_model(argv, check):
    default = built_model([])
    assert not check(default)
    assert check(built_model(argv))


def test_config_flags_and_bad_values(capsys):
    args = train_cli.parse_args(["--config", CONFIG, "--dataset_path", "d", "--epochs", "3", "--seed", "7",
                                 "--text_encoder", "t", "--no-gt_transform", "--pretrained_model", ""])
    config = train_cli.resolve_config(args)
    assert (config.dataset_path, config.nepochs, config.seed, config.text_encoder, config.gt_transform,
            config.pretrained_model) == ("d", 3, 7, "t", False, "")
    assert train_cli.resolve_config(train_cli.parse_args(["--config", CONFIG])).gt_transform is True
    for bad, message in ((["--sam-decoder-logit-init", "0"], "--sam-decoder-logit-init must lie in"),
                         (["--sam-enc-stages", "5"], "--sam-enc-stages"),
                         (["--decoder", "mlp"], "invalid choice"),
                         (["--optimizer_type", "lion"], "invalid choice"),
                         (["--sam_rho", "-1"], "--sam_rho must be")):
        with pytest.raises(SystemExit):
            train_cli.parse_args(["--config", CONFIG] + bad)
        assert message in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no such config module"):
        train_cli.resolve_config(train_cli.parse_args(["--config", "local_configs.Nope"]))
    for name, backbone, classes, lr in (("NYUDepthv2.DFormerv2_B", "DFormerv2_B", 40, 6e-5),
                                        ("NYUDepthv2.DFormerv2_L", "DFormerv2_L", 40, 6e-5),
                                        ("SUNRGBD.DFormerv2_S", "DFormerv2_S", 37, 8e-5),
                                        ("SUNRGBD.DFormerv2_L", "DFormerv2_L", 37, 8e-5)):
        config = train_cli.resolve_config(train_cli.parse_args(["--config", f"local_configs.{name}"]))
        assert (config.backbone, config.num_classes, config.lr, config.weight_decay) == (backbone, classes, lr, 0.01)
    config_file = PROJECT / "local_configs" / "NYUDepthv2" / "DFormerv2_S.py"
    assert train_cli.resolve_config(train_cli.parse_args(["--config", str(config_file)])).backbone == "DFormerv2_S"


def test_optimizer_seed_and_pretrained_flags_change_training(small_data, tiny_clip, tmp_path, capsys):
    base = common(small_data, tiny_clip, tmp_path / "runs") + ["--epochs", "1"]
    runs = {name: Path(train_cli.main(base + extra)["run_dir"]) for name, extra in {
        "adamw": [], "sam": ["--optimizer_type", "sam"], "sam_rho": ["--optimizer_type", "sam", "--sam_rho", "0.5"],
        "seed": ["--seed", "1"]}.items()}
    weights = {name: final_weights(run) for name, run in runs.items()}
    names = list(weights)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not same_weights(weights[a], weights[b]), (a, b)
    assert "SAM" in json.loads((runs["sam"] / "latest_model.pth").with_name("config.json").read_text())[
        "args"]["optimizer_type"].upper()

    backbone = {f"backbone.{k[len('backbone.'):]}": v for k, v in weights["adamw"].items() if k.startswith("backbone.")}
    torch.save({"state_dict": backbone}, tmp_path / "pretrained.pth")
    capsys.readouterr()
    pretrained = train_cli.main(base + ["--pretrained_model", str(tmp_path / "pretrained.pth")])
    assert "pretrained.pth into the backbone: all keys match" in capsys.readouterr().out
    assert not same_weights(final_weights(Path(pretrained["run_dir"])), weights["adamw"])
    with pytest.raises(CheckpointError, match="nowhere.pth: pretrained backbone weights not found"):
        train_cli.main(base + ["--pretrained_model", str(tmp_path / "nowhere.pth")])


def test_amp_syncbn_mst_sliding_and_skip_flags(small_data, tiny_clip, tmp_path, monkeypatch, capsys):
    base = common(small_data, tiny_clip, tmp_path / "runs") + ["--epochs", "1"]
    amp_run = train_cli.main([a for a in base if a != "--no-amp"] + ["--amp"])
    assert json.loads((Path(amp_run["run_dir"]) / "config.json").read_text())["amp"] == "cpu: autocast bf16"
    assert np.isfinite(amp_run["final_val_miou"])

    seen = []
    real_evaluate = train_cli.evaluate
    monkeypatch.setattr(train_cli, "evaluate", lambda *a, **k: seen.append((k["mst"], k["sliding"]))
                        or real_evaluate(*a, **k))
    capsys.readouterr()
    train_cli.main(base + ["--mst", "--sliding", "--syncbn"])
    assert seen == [(True, True)] * 2  # validation, then the test evaluation of the best checkpoint
    assert "--syncbn needs torchrun on GPUs" in capsys.readouterr().out
    gpu_ranks = DistributedContext(0, 0, 2, torch.device("cuda", 0))
    assert train_cli.use_sync_batchnorm(True, gpu_ranks)
    assert not train_cli.use_sync_batchnorm(False, gpu_ranks)
    assert not train_cli.use_sync_batchnorm(True, DistributedContext(0, 0, 2, torch.device("cpu")))

    broken = tmp_path / "broken"
    shutil.copytree(small_data, broken)
    (broken / "Depth" / "00003.png").unlink()
    with pytest.raises(DatasetError, match="00003.png: missing depth map for 00003.jpg"):
        train_cli.main(base + ["--dataset_path", str(broken)])
    with pytest.warns(UserWarning, match="skipping sample"):
        summary = train_cli.main(base + ["--dataset_path", str(broken), "--skip_bad_samples"])
    skipped = summary["skipped_samples"]
    assert [s["sample"] for s in skipped["train"] + skipped["val"]] == ["RGB/00003.jpg"] and not skipped["test"]


def test_val_fraction_chooses_the_validation_images(small_data, tiny_clip, tmp_path, capsys, monkeypatch):
    sizes = []
    real_evaluate = train_cli.evaluate
    monkeypatch.setattr(train_cli, "evaluate", lambda model, loader, *a, **k: sizes.append(len(loader.dataset))
                        or real_evaluate(model, loader, *a, **k))
    base = common(small_data, tiny_clip, tmp_path / "runs") + ["--epochs", "1"]
    held_out = train_cli.main(base + ["--val_fraction", "0.25"])
    assert held_out["validation_split"] == "val" and sizes == [2, 2]  # 2 of 8 train images, then the 2 test images
    sizes.clear()
    capsys.readouterr()
    on_test = train_cli.main(base + ["--val_fraction", "0"])
    assert on_test["validation_split"] == "test" and sizes == [2, 2]
    assert "validating on the test split" in capsys.readouterr().out
    assert on_test["best_val_miou"] == pytest.approx(on_test["test_miou"])
    with pytest.raises(SystemExit):
        train_cli.parse_args(["--config", CONFIG, "--val_fraction", "1"])


def test_text_embeddings_are_cached_under_the_checkpoint_dir(base_run, tiny_clip):
    cached = list((base_run["runs"] / "text_cache").glob("text_embeddings_*.pt"))
    assert len(cached) == 1
    embedder = ClassTextEmbedder(str(tiny_clip), cache_dir=base_run["runs"] / "text_cache")
    embedder.encode(("wall", "floor", "ceiling", "box", "sphere"))
    assert embedder.model_loads == 0


PRESETS = {
    "1": {},
    "2": {"sam_encoder_use_cosine": True, "sam_encoder_learnable_temp": True, "sam_encoder_logit_init": 14.285714},
    "3": {"sam_decoder_use_cosine": False, "sam_decoder_learnable_temp": False, "sam_decoder_logit_init": 1.0},
    "4": {"sam_decoder_use_cosine": False, "sam_decoder_learnable_temp": False, "sam_decoder_logit_init": 1.0,
          "sam_encoder_use_cosine": True, "sam_encoder_learnable_temp": True, "sam_encoder_logit_init": 14.285714},
    "5": {"enable_text_guidance": False, "decoder": "ham"},
    "6": {"sam_enc_stages": ()},
    "7": {"enable_text_guidance": False},
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_train_examples_presets_print_and_set_their_flags(preset):
    env = {**os.environ, "PYTHON": "echo"}  # train.sh then prints the command instead of running it
    out = subprocess.run(["bash", str(PROJECT / "train_examples.sh"), preset, "--epochs", "3"], env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith(f"preset {preset}: ") and out[1].startswith("sets: ")
    if preset == "6":
        assert out[1].strip() == "sets: --sam-enc-stages ''"  # the empty value is shown, quoted
    command = out[2].split(" ")
    assert command[0].endswith("utils/train.py")
    argv = command[1:]  # an empty argument ("" of preset 6) shows as two spaces, i.e. an empty field
    args = vars(train_cli.parse_args(argv))
    defaults = vars(train_cli.parse_args(["--config", "local_configs.NYUDepthv2.DFormerv2_S", "--epochs", "3"]))
    changed = {k: v for k, v in args.items() if defaults[k] != v and k != "explicit"}
    assert changed == PRESETS[preset]


def test_unknown_preset_fails():
    result = subprocess.run(["bash", str(PROJECT / "train_examples.sh"), "8"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown preset '8'" in result.stderr


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(small_data, tiny_clip, tmp_path):
    # prime the text cache so the workers only read it
    train_cli.class_text_embeddings(train_cli.resolve_config(train_cli.parse_args(
        common(small_data, tiny_clip, tmp_path / "runs"))), tmp_path / "runs" / "text_cache", True)
    with socket.socket() as probe:  # a free port: other suites may run torchrun at the same time
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(PROJECT / "utils" / "train.py")] + common(small_data, tiny_clip, tmp_path / "runs") + [
        "--epochs", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    run_dirs = [p for p in (tmp_path / "runs").iterdir() if p.name != "text_cache"]
    assert len(run_dirs) == 1  # rank 0 made the folder, rank 1 used it
    assert json.loads((run_dirs[0] / "config.json").read_text())["world_size"] == 2
    summary = json.loads(next(run_dirs[0].glob("training_summary_*.json")).read_text())
    assert summary["steps"] == 1  # 8 images: 4 per rank, one batch each


def test_train_sh_config_and_gpus():
    env = {**os.environ, "PYTHON": "echo", "CONFIG": CONFIG, "GPUS": "2"}
    out = subprocess.run(["bash", str(PROJECT / "train.sh"), "--epochs", "1"], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[:4] == ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
    assert out[4].endswith("utils/train.py") and out[5:] == ["--config", CONFIG, "--syncbn", "--epochs", "1"]
    single = subprocess.run(["bash", str(PROJECT / "train.sh")], env={**env, "GPUS": "1"}, capture_output=True,
                            text=True, check=True).stdout.split()
    assert single[0].endswith("utils/train.py") and single[1:] == ["--config", CONFIG]


@pytest.mark.parametrize("argv, message", [
    (["--decoder", "ham", "--sam-decoder-logit-init", "3"], "--sam-decoder-logit-init: cannot apply with --decoder ham"),
    (["--decoder", "ham", "--text-logit-init", "3"], "--text-logit-init: cannot apply with --decoder ham"),
    (["--no-enable-text-guidance", "--sam-encoder-use-cosine"], "--sam-encoder-use-cosine: cannot apply with "
                                                                 "--no-enable-text-guidance"),
    (["--no-enable-text-guidance", "--sam-enc-stages", "1"], "--sam-enc-stages: cannot apply"),
    (["--sam-enc-stages", "", "--sam-encoder-logit-init", "2"], "--sam-encoder-logit-init: cannot apply with "
                                                                 "--sam-enc-stages ''"),
    (["--sam_rho", "0.1"], "--sam_rho: cannot apply without --optimizer_type sam"),
    (["--allow_partial_pretrained"], "--allow_partial_pretrained: cannot apply without --pretrained_model"),
])
def test_flags_that_cannot_apply_are_errors_not_recorded_settings(argv, message):
    args = train_cli.parse_args(["--config", CONFIG] + argv)
    with pytest.raises(train_cli.FlagError, match=message):
        train_cli.check_flags_apply(args, train_cli.resolve_config(args))


def test_official_recipe_splits_the_total_batch_and_validates_on_test():
    nyu = train_cli.resolve_config(train_cli.parse_args(["--config", "local_configs.NYUDepthv2.DFormerv2_S"]))
    four_gpus = DistributedContext(0, 0, 4, torch.device("cpu"))
    assert nyu.official_recipe and train_cli.batch_per_process(nyu, four_gpus) == 4  # total 16 over 4 processes
    args = train_cli.parse_args(["--config", "local_configs.NYUDepthv2.DFormerv2_S", "--no-official"])
    ours = train_cli.resolve_config(args)
    assert not ours.official_recipe and train_cli.batch_per_process(ours, four_gpus) == 16  # per process
    assert (nyu.channel_order, ours.channel_order) == ("bgr", "rgb")
    assert train_cli.validation_fraction(train_cli.parse_args(["--config", "local_configs.NYUDepthv2.DFormerv2_S"]),
                                         nyu) == 0.0  # the paper protocol: the official test split
    assert train_cli.validation_fraction(args, ours) == 0.1
    with pytest.raises(train_cli.FlagError, match="total batch_size 16 is smaller than the 32 processes"):
        train_cli.batch_per_process(nyu, DistributedContext(0, 0, 32, torch.device("cpu")))


def test_output_dir_batch_size_and_partial_pretrained_flags(small_data, tiny_clip, tmp_path, capsys):
    base = common(small_data, tiny_clip, tmp_path / "runs") + ["--epochs", "1"]
    summary = train_cli.main(base + ["--output_dir", str(tmp_path / "here"), "--batch_size", "2"])
    assert summary["run_dir"] == str(tmp_path / "here") and (tmp_path / "here" / "latest_model.pth").is_file()
    assert summary["steps"] == 3  # 7 training images (1 held out) in batches of 2, the last partial one dropped
    weights = final_weights(tmp_path / "here")
    partial = {k: v for i, (k, v) in enumerate(weights.items()) if k.startswith("backbone.") and i % 3}
    torch.save(partial, tmp_path / "partial.pth")
    argv = base + ["--pretrained_model", str(tmp_path / "partial.pth")]
    assert train_cli.cli(argv) == 2
    assert "partial.pth: does not fit this encoder" in capsys.readouterr().err
    assert train_cli.cli(argv + ["--allow_partial_pretrained"]) == 0
    assert "partial.pth into the backbone:" in capsys.readouterr().out
