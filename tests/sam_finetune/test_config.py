"""Config schema: the template documents every key, and bad keys/types fail with their path."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from projects.sam_finetune.config import (
    ConfigError,
    FinetuneConfig,
    config_from_dict,
    load_config,
)
from projects.sam_finetune.train import RESUME_MAY_CHANGE, RESUME_MAY_INCREASE
from shared.run import config_differences

TEMPLATE = Path(__file__).resolve().parents[2] / "projects" / "sam_finetune" / "config.yaml"


def _schema_paths(cls, prefix="") -> set[str]:
    paths = set()
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            paths |= _schema_paths(type(default), f"{prefix}{f.name}.")
        else:
            paths.add(prefix + f.name)
    return paths


def _yaml_paths(data: dict, prefix="") -> set[str]:
    paths = set()
    for key, value in data.items():
        if isinstance(value, dict):
            paths |= _yaml_paths(value, f"{prefix}{key}.")
        else:
            paths.add(prefix + key)
    return paths


def test_template_sets_every_schema_key_and_documents_it():
    data = yaml.safe_load(TEMPLATE.read_text())
    assert _yaml_paths(data) == _schema_paths(FinetuneConfig)
    for line in TEMPLATE.read_text().splitlines():  # every leaf key line carries a comment
        if re.match(r"^\s+\w+: \S", line) and not line.strip().startswith("#"):
            assert "#" in line or line.strip().startswith(("num_epochs", "output_dir")), line
    cfg = load_config(TEMPLATE)
    assert cfg.model.type == "vit_b" and cfg.data.image_size == 1024 and cfg.training.learning_rate == 1e-4


@pytest.mark.parametrize(("data", "message"), [
    ({"training": {"optimizer": {"typo": 1}}}, "unknown key training.optimizer.typo"),
    ({"modle": {}}, "unknown key modle"),
    ({"data": {"batch_size": "two"}}, "data.batch_size: expected int, got 'two'"),
    ({"data": {"batch_size": 2.5}}, "data.batch_size: expected int"),
    ({"model": {"freeze_image_encoder": "yes"}}, "model.freeze_image_encoder: expected bool"),
    ({"model": {"type": "vit_x"}}, "model.type: expected one of 'vit_b', 'vit_l', 'vit_h', 'tiny'"),
    ({"finetuning": {"lora": {"target_modules": ["qkv", 3]}}}, "finetuning.lora.target_modules[1]: expected str"),
    ({"finetuning": {"lora": {"target_modules": ["patch_embed.proj"]}}}, "finetuning.lora.target_modules: must be"),
    ({"data": {"augment": {"scale_range": [1.2, 0.8]}}}, "data.augment.scale_range"),
    ({"data": {"augment": []}}, "data.augment: expected a mapping"),
    ({"data": {"image_size": 512}}, "data.image_size: vit_b checkpoints are trained at 1024"),
    ({"training": {"max_grad_norm": "big"}}, "training.max_grad_norm: expected float or null"),
])
def test_bad_keys_and_types_name_the_key_path(data, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(data)
    assert message in str(error.value)


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  num_epochs: ten\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: training\.num_epochs: expected int"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_scientific_notation_and_null_are_accepted():
    cfg = config_from_dict({"training": {"learning_rate": "3e-4", "max_grad_norm": None, "weight_decay": None}})
    assert cfg.training.learning_rate == 3e-4 and cfg.training.max_grad_norm is None


def test_cli_reports_a_bad_config_in_one_line(tmp_path, monkeypatch, capsys):
    from projects.sam_finetune import evaluate, train

    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  prompt_mode: boxes\n")
    for module in (train, evaluate):
        monkeypatch.setattr("sys.argv", ["x", "--config", str(path), "--checkpoint", "x.pth"][: 3 if module is train else 5])
        assert module.cli() == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "bad.yaml: data.prompt_mode: expected one of 'box', 'point', 'both'" in err


def resume_differences(stored: dict, current: dict) -> list[str]:
    return config_differences(stored, current, may_change=RESUME_MAY_CHANGE, may_increase=RESUME_MAY_INCREASE)


def test_resume_differences_name_key_paths_and_ignore_machine_settings():
    stored = FinetuneConfig().to_dict()
    moved = FinetuneConfig().to_dict()
    moved["model"]["checkpoint"], moved["data"]["data_dir"], moved["data"]["num_workers"] = "/new/sam.pth", "/new", 4
    moved["training"]["num_epochs"], moved["training"]["checkpoint_every"] = 50, 1
    moved["output"] = {"output_dir": "/elsewhere", "experiment_name": "renamed"}
    moved["device"]["find_unused_parameters"] = True
    assert resume_differences(stored, moved) == []
    changed = FinetuneConfig().to_dict()
    changed["data"]["image_size"], changed["data"]["augment"]["scale_range"] = 512, [0.5, 1.0]
    changed["training"]["optimizer"]["type"], changed["loss"]["iou_loss"]["weight"] = "lion", 0.0
    del changed["data"]["prompt_mode"]  # a key the current schema lacks
    assert resume_differences(stored, changed) == [
        "data.augment.scale_range: [1.0, 1.0] -> [0.5, 1.0]", "data.image_size: 1024 -> 512",
        "data.prompt_mode: box -> <absent>", "loss.iou_loss.weight: 1.0 -> 0.0", "training.optimizer.type: adamw -> lion"]
