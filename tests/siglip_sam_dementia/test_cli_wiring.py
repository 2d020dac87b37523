"""Each CLI flag reaches the component it configures (one short real run, components observed)."""

from pathlib import Path

import pytest
from lion_pytorch import Lion
from transformers import AutoProcessor

import shared.run
from projects.siglip_sam_dementia import trainer
from projects.siglip_sam_dementia.config import parse_config
from projects.siglip_sam_dementia.data_processor import DementiaCollator
from projects.siglip_sam_dementia.losses import FocalLoss
from projects.siglip_sam_dementia.model import build_model
from projects.siglip_sam_dementia.sam_optimizer import SAM

from .conftest import TINY_ARGS


@pytest.fixture(scope="module")
def observed(corpus_dir, tiny_model_dir, tmp_path_factory):
    seen = {}
    patch = pytest.MonkeyPatch()

    def spy(name):
        real = getattr(trainer, name)

        def wrapper(*args, **kwargs):
            result = real(*args, **kwargs)
            seen[name] = (result, args, kwargs)
            return result

        patch.setattr(trainer, name, wrapper)

    for name in ("build_optimizer", "build_scheduler", "build_loss", "make_dataloader", "OptimizationStep",
                 "build_model"):
        spy(name)

    class OfflineTracker(shared.run.RunTracker):
        def __init__(self, output_dir, config, **kwargs):
            seen["tracker_kwargs"] = kwargs
            super().__init__(output_dir, config, **{**kwargs, "use_wandb": False})

    patch.setattr(shared.run, "RunTracker", OfflineTracker)
    out = tmp_path_factory.mktemp("wiring")
    summary = trainer.main([
        "--data_dir", str(corpus_dir), "--model_name", str(tiny_model_dir), "--output_dir", str(out),
        "--cache_dir", str(out / "cache"), *TINY_ARGS, "--parser", "Mandarin", "--num_epochs", "2",
        "--optimizer_type", "sam", "--sam_base", "lion", "--sam_rho", "0.2", "--sam_adaptive",
        "--loss_type", "focal", "--focal_gamma", "1.5", "--focal_alpha", "0.7", "--warmup_ratio", "0.5",
        "--max_grad_norm", "0.5", "--num_workers", "1", "--use_wandb", "--wandb_project", "proj-x",
        "--fusion", "gated", "--freeze_text", "--mixed_precision", "--seed", "5", "--max_num_patches", "32"])
    patch.undo()
    return seen, summary, out


def test_optimizer_flags(observed):
    seen, summary, _ = observed
    optimizer = seen["build_optimizer"][0]
    assert isinstance(optimizer, SAM) and isinstance(optimizer.base_optimizer, Lion)
    assert all(g["rho"] == 0.2 and g["adaptive"] is True for g in optimizer.param_groups)
    assert summary["learning_rate"] == 2e-3  # given explicitly, so not rescaled for Lion


def test_schedule_clip_amp_and_loader_flags(observed):
    seen, _, _ = observed
    kwargs = seen["build_scheduler"][2]
    assert kwargs["warmup_steps"] == int(0.5 * kwargs["total_steps"]) and kwargs["total_steps"] > 0
    stepper = seen["OptimizationStep"][0]
    assert stepper.max_grad_norm == 0.5 and stepper.amp.enabled  # --mixed_precision after --no_mixed_precision
    loader = seen["make_dataloader"][0]
    assert loader.num_workers == 1 and loader.collate_fn.max_num_patches == 32


def test_loss_model_and_tracking_flags(observed):
    seen, summary, out = observed
    loss = seen["build_loss"][0]
    assert isinstance(loss, FocalLoss) and (loss.gamma, loss.alpha) == (1.5, 0.7)
    model = seen["build_model"][0]
    assert model.fusion_name == "gated" and not any(p.requires_grad for p in model.text_tower.parameters())
    tracker = seen["tracker_kwargs"]
    assert tracker["use_wandb"] is True and tracker["wandb_project"] == "proj-x"
    assert tracker["tags"] == ["loss_focal", "optimizer_sam", "batch_size_8", "sam_optimizer"]
    assert tracker["run_name"] == Path(summary["run_dir"]).name
    assert summary["languages"] == ["Mandarin"] and summary["loss_type"] == "focal"
    assert (out / "cache").is_dir() and any((out / "cache").glob("*.npy"))  # --cache_dir


def test_audio_feature_flags_reach_the_cache_and_windows(tiny_model_dir, tmp_path):
    config = parse_config(["--sample_rate", "8000", "--n_fft", "256", "--hop_length", "80", "--n_mels", "24",
                           "--window_seconds", "1.5", "--cache_dir", str(tmp_path), "--max_num_patches", "32"])
    cache = trainer.log_mel_cache_for(config)
    assert cache.cache_dir == tmp_path
    assert (cache.params.sample_rate, cache.params.n_fft, cache.params.hop_length, cache.params.n_mels) == (
        8000, 256, 80, 24)
    assert cache.params.frames_per_second * config.window_seconds == 150
    assert trainer.log_mel_cache_for(parse_config(["--data_dir", "d"])).cache_dir == Path("d") / ".logmel_cache"


def test_modality_flag_builds_the_control_groups(tiny_model_dir, corpus_dir):
    audio = build_model(parse_config(["--model_name", str(tiny_model_dir), "--modality", "audio"]))
    text = build_model(parse_config(["--model_name", str(tiny_model_dir), "--modality", "text", "--loss_type", "bce"]))
    assert audio.text_tower is None and audio.vision_tower is not None
    assert text.vision_tower is None and text.classifier[-1].out_features == 1
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    item = {"windows": [], "transcript": "the boy uh", "label": 1, "language": "English", "speaker_id": "s"}
    batch = DementiaCollator(processor, "text", text.text_max_length)([item])
    assert "pixel_values" not in batch["inputs"] and text(**batch["inputs"]).shape == (1, 1)
