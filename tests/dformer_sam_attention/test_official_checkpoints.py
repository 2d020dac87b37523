"""Published DFormerv2 segmentor checkpoints load as published (official key layout, strict) and give the
same logits as the same weights in our checkpoint format; eval/infer take them with --config."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from projects.dformer_sam_attention.local_configs.config import ConfigError, load_config
from projects.dformer_sam_attention.models.builder import ModelSettings, build_model, settings_to_dict
from projects.dformer_sam_attention.models.official import (
    is_official_segmentor,
    load_official_segmentor,
    official_settings,
)
from projects.dformer_sam_attention.utils import eval as eval_cli
from projects.dformer_sam_attention.utils.infer import load_trained_model
from shared.checkpoint import CheckpointError

DATA = Path(__file__).resolve().parent / "data"
MANIFEST = json.loads((DATA / "dformerv2_official_segmentor_state_dict.json").read_text())
ENCODER = json.loads((DATA / "dformerv2_encoder_state_dict.json").read_text())
TINY = "local_configs.NYUDepthv2.DFormerv2_Tiny"


def official_keys(name: str) -> dict[str, list[int]]:
    entry = MANIFEST[name]
    keys = {f"backbone.{k}": v for k, v in ENCODER[entry["backbone"]].items()}
    keys.update({f"decode_head.{k}": v for k, v in entry["decode_head"].items()})
    return keys


@pytest.mark.parametrize("name", [k for k in MANIFEST if not k.startswith("_")])
def test_full_size_official_model_has_exactly_the_official_keys(name):
    dataset, backbone = name.split(".")
    config = load_config(f"local_configs.{dataset}.{backbone}")
    reference = official_keys(name)
    state = {k: torch.empty(v) for k, v in reference.items()}  # shapes only: what a published file holds
    with torch.device("meta"):
        settings = official_settings(state, config, name)
        model = build_model(settings)
    assert (settings.backbone, settings.decoder, settings.ham_channels, settings.text_guidance) == (
        backbone, "ham", 512, False)
    assert settings.decoder_embed_dim == config.decoder_embed_dim  # the config mirrors the official width
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == reference


def tiny_official_model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = load_config(TINY)
    settings = ModelSettings(backbone="DFormerv2_Tiny", decoder="ham", num_classes=config.num_classes,
                             decoder_embed_dim=32, ham_channels=32, ham_rank=config.ham_rank, drop_path_rate=0.0,
                             text_guidance=False)
    model = build_model(settings)
    for module in model.modules():  # non-trivial BatchNorm statistics, as a trained checkpoint has
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def seeded_logits(model: torch.nn.Module, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(7)  # the NMF bases are drawn at random in every forward, as upstream
    with torch.no_grad():
        return model(rgb, depth)


@pytest.mark.parametrize("wrapping", ["state_dict+module", "model", "bare"])
def test_official_layout_loads_strictly_and_gives_our_logits(tmp_path, wrapping):
    model = tiny_official_model()
    state = model.state_dict()
    official = {"state_dict+module": {"state_dict": {f"module.{k}": v for k, v in state.items()}, "meta": {}},
                "model": {"model": state, "optimizer": {}, "epoch": 500},
                "bare": dict(state)}[wrapping]
    official_path = tmp_path / "official.pth"
    torch.save(official, official_path)
    ours_path = tmp_path / "ours.pth"
    torch.save({"model_state_dict": state, "model_settings": settings_to_dict(model.settings),
                "config": {k: v for k, v in load_config(TINY).__dict__.items()}}, ours_path)
    assert is_official_segmentor(torch.load(official_path)) and not is_official_segmentor(torch.load(ours_path))
    loaded, config = load_trained_model(official_path, config_name=TINY)
    ours, _ = load_trained_model(ours_path)
    rgb, depth = torch.randn(2, 3, 64, 64), torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(seeded_logits(loaded, rgb, depth), seeded_logits(ours, rgb, depth), atol=0, rtol=0)
    torch.testing.assert_close(seeded_logits(loaded, rgb, depth), seeded_logits(model, rgb, depth), atol=0, rtol=0)


def test_official_checkpoint_errors_name_the_file(tmp_path):
    model = tiny_official_model()
    state = model.state_dict()
    path = tmp_path / "official.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ConfigError, match="official.pth: a published DFormerv2 checkpoint carries no settings"):
        load_trained_model(path)
    with pytest.raises(CheckpointError, match="classifies 5 classes but --config NYUDepthv2 has 40"):
        load_trained_model(path, config_name="local_configs.NYUDepthv2.DFormerv2_S")
    broken = dict(state)
    del broken["decode_head.align.bn.running_var"]
    torch.save({"state_dict": broken}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="broken.pth: does not fit .*decode_head.align.bn.running_var"):
        load_official_segmentor(tmp_path / "broken.pth", load_config(TINY))


def test_eval_cli_takes_a_published_checkpoint_with_amp_and_official_msf(tmp_path, small_scenes, monkeypatch):
    model = tiny_official_model()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "official.pth")
    argv = ["--checkpoint", str(tmp_path / "official.pth"), "--config", TINY, "--dataset_path", str(small_scenes)]
    plain = eval_cli.main(argv)
    assert 0 <= plain["miou"] <= 1
    seen = []
    real = eval_cli.AmpPolicy.autocast
    monkeypatch.setattr(eval_cli.AmpPolicy, "autocast", lambda self: seen.append(self.describe()) or real(self))
    eval_cli.main(argv + ["--amp"])
    assert seen and set(seen) == {"cpu: autocast bf16"}  # the autocast training uses on this device


def test_official_multiscale_sizes_are_multiples_of_32_with_align_corners():
    assert eval_cli.scaled_size(480, 640, 0.75, official=True) == (360 + 24, 480)
    assert eval_cli.scaled_size(530, 730, 0.5, official=True) == (288, 384)
    assert eval_cli.scaled_size(480, 640, 0.75, official=False) == (360, 480)
    sizes = []

    class Recorder(torch.nn.Module):
        def forward(self, rgb, depth):
            sizes.append(tuple(rgb.shape[2:]))
            return torch.zeros(rgb.shape[0], 3, *rgb.shape[2:])

    eval_cli.predict_probabilities(Recorder(), torch.randn(1, 3, 50, 70), torch.randn(1, 1, 50, 70), 3,
                                   scales=(0.5, 1.0), flip=True, official=True)
    assert sizes == [(32, 64), (32, 64), (64, 96), (64, 96)]


@pytest.fixture
def small_scenes(tmp_path):
    from projects.dformer_sam_attention.utils.synthetic_scenes import make_dataset

    return make_dataset(tmp_path / "nyu", n_train=2, n_test=2, seed=1)


def test_official_recipe_of_the_mirrored_configs():
    for name in ("NYUDepthv2.DFormerv2_S", "NYUDepthv2.DFormerv2_B", "NYUDepthv2.DFormerv2_L"):
        config = load_config(f"local_configs.{name}")
        assert (config.official_recipe, config.channel_order, config.label_folder, config.ham_channels) == (
            True, "bgr", "Label", 512)
    for size, drop_path in (("S", 0.1), ("B", 0.1), ("L", 0.27)):
        config = load_config(f"local_configs.SUNRGBD.DFormerv2_{size}")
        assert (config.lr, config.drop_path_rate, config.decoder_embed_dim, config.ham_channels, config.batch_size,
                config.nepochs, config.channel_order, config.label_folder) == (
            8e-5, drop_path, 1024, 512, 16, 300, "rgb", "labels")
    assert not replace(load_config(TINY)).official_recipe


@pytest.mark.parametrize("decoder", ["hsg", "ham"])
def test_checkpoints_of_older_versions_still_evaluate_the_same(tmp_path, decoder):
    """Before mmcv naming (`squeeze.0` / `squeeze.1`), ham_channels and the separate text-logit scale."""
    import re

    torch.manual_seed(0)
    config = load_config(TINY)
    settings = ModelSettings(backbone="DFormerv2_Tiny", decoder=decoder, num_classes=5, decoder_embed_dim=32,
                             decoder_align_heads=2, text_embed_dim=32, ham_channels=32, ham_rank=8,
                             drop_path_rate=0.0, text_dim=8)
    model = build_model(settings, torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)).eval()
    if decoder == "hsg":  # the old model scaled its text logits by the (learned) decoder temperature
        with torch.no_grad():
            model.decode_head.alignment.temperature.log_scale.fill_(1.5)
            model.decode_head.text_logit_scale.log_scale.fill_(1.5)
    old_state = {}
    for key, value in model.state_dict().items():
        if key == "decode_head.text_logit_scale.log_scale":
            continue
        key = re.sub(r"\.conv\.(?=weight|bias)", ".0.", key) if "ham_in" not in key else key.replace(".conv.", ".")
        old_state[re.sub(r"\.bn\.", ".1.", key)] = value
    assert "decode_head.fuse.0.weight" in old_state or "decode_head.squeeze.0.weight" in old_state
    old_settings = settings_to_dict(settings)
    for key in ("ham_channels", "text_logit_init", "text_logit_learnable"):
        del old_settings[key]
    torch.save({"model_state_dict": old_state, "model_settings": old_settings, "config": dict(config.__dict__)},
               tmp_path / "old.pth")
    loaded, _ = load_trained_model(tmp_path / "old.pth")
    rgb, depth = torch.randn(1, 3, 64, 64), torch.randn(1, 1, 64, 64)
    torch.testing.assert_close(seeded_logits(loaded, rgb, depth), seeded_logits(model, rgb, depth), atol=0, rtol=0)
