"""The fine-tuning configuration: a typed schema, YAML loading and validation.

Every key of `config.yaml` is a field below. Loading rejects unknown keys and values of the wrong
type or outside their choices, naming the key's path (`training.optimizer.type`), so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from projects.sam_finetune.preprocess import IntensityMapping

MODEL_TYPES = ("vit_b", "vit_l", "vit_h", "tiny")


class ConfigError(ValueError):
    """A config file or value that does not match the schema."""


@dataclass
class ModelConfig:
    type: Literal["vit_b", "vit_l", "vit_h", "tiny"] = "vit_b"
    checkpoint: str | None = None  # None: random initialisation (the tiny model in tests and demo)
    freeze_image_encoder: bool = True
    freeze_prompt_encoder: bool = True
    freeze_mask_decoder: bool = False
    gradient_checkpointing: bool = False  # recompute image-encoder block activations in backward (less memory)


@dataclass
class AugmentConfig:
    flip_prob: float = 0.0  # probability of a horizontal flip
    scale_range: list[float] = field(default_factory=lambda: [1.0, 1.0])  # zoom factors, then crop/pad
    color_jitter: float = 0.0  # max relative change of brightness and contrast


@dataclass
class DataConfig:
    data_dir: str = "data/segmentation"
    dataset_type: Literal["directory", "coco"] = "directory"
    train_split: str = "train"
    val_split: str = "val"
    image_size: int = 1024
    normalization: Literal["sam", "zero_one"] = "sam"  # SAM mean/std, or MedSAM's [0, 1]
    intensity: IntensityMapping = field(default_factory=IntensityMapping)  # stored values -> 0..255
    prompt_mode: Literal["box", "point", "both"] = "box"
    num_points: int = 1
    num_negative_points: int = 0
    box_jitter: float = 0.1  # max shift of each box side, as a fraction of the box's size
    split_instances: bool = False  # directory masks: one instance per connected component
    category_ids: list[int] = field(default_factory=list)  # COCO: keep only these ([] = all)
    max_instances_per_image: int = 16
    batch_size: int = 2
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class AdapterConfig:
    bottleneck_ratio: float = 0.25  # bottleneck width = ratio * encoder width ...
    bottleneck_dim: int | None = None  # ... unless given here
    placement: Literal["attn", "mlp", "both"] = "both"
    mlp_scale: float = 0.5  # weight of the adapter that runs parallel to the MLP


@dataclass
class LoraConfigSection:
    r: int = 4
    alpha: float = 8.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["qkv", "proj"])


@dataclass
class FinetuningConfig:
    strategy: Literal["full", "adapter", "lora"] = "full"
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    lora: LoraConfigSection = field(default_factory=LoraConfigSection)


@dataclass
class SchedulerConfig:
    type: Literal["cosine", "linear"] = "cosine"
    min_lr: float = 0.0


@dataclass
class OptimizerConfig:
    type: Literal["adamw", "sam", "lion"] = "adamw"
    betas: list[float] | None = None  # None: the optimizer's defaults
    sam_rho: float = 0.05


@dataclass
class TrainingConfig:
    num_epochs: int = 10
    learning_rate: float | None = 1e-4  # None: AdamW's 1e-4, scaled for Lion
    weight_decay: float | None = 0.01
    warmup_epochs: float = 0.0
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    lr_scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    seed: int = 42
    checkpoint_every: int = 5  # write checkpoint_epoch_N.pth every N epochs (0: never)


@dataclass
class SegmentationLossConfig:
    type: Literal["dice", "bce", "dice_bce", "focal"] = "dice_bce"
    dice_weight: float = 1.0
    bce_weight: float = 1.0  # weight of the pixel-wise term (BCE, or focal for type focal)


@dataclass
class IouLossConfig:
    weight: float = 1.0


@dataclass
class LossConfig:
    segmentation_loss: SegmentationLossConfig = field(default_factory=SegmentationLossConfig)
    iou_loss: IouLossConfig = field(default_factory=IouLossConfig)


@dataclass
class DeviceConfig:
    use_amp: bool = False
    find_unused_parameters: bool = False  # DDP: needed when trainable parts get no gradient


@dataclass
class OutputConfig:
    output_dir: str = "outputs/sam_finetuning"
    experiment_name: str = "experiment"


@dataclass
class FinetuneConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetuning: FinetuningConfig = field(default_factory=FinetuningConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- parsing and validation --------------------------------------------------------------------


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return tp.__name__


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_describe(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{path}: expected null, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{path}: expected {_describe(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected {_describe(tp)}, got {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_convert(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{path}: expected {_describe(tp)}, got {value!r}")


def _build(cls: type, data: Any, path: str) -> Any:
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{path}." if path else ""
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (allowed in {where}: {', '.join(sorted(names))})")
    kwargs = {name: _convert(value, hints[name], f"{path}.{name}" if path else name)
              for name, value in data.items()}
    return cls(**kwargs)


def _check_ranges(cfg: FinetuneConfig) -> None:
    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    d, t = cfg.data, cfg.training
    require(d.image_size >= 16 and d.image_size % 16 == 0, f"data.image_size: must be a multiple of 16, got {d.image_size}")
    require(cfg.model.type == "tiny" or d.image_size == 1024,
            f"data.image_size: {cfg.model.type} checkpoints are trained at 1024, got {d.image_size}")
    require(not (cfg.model.gradient_checkpointing and cfg.finetuning.strategy == "full"
                 and cfg.model.freeze_image_encoder),
            "model.gradient_checkpointing: applies to a training image encoder, but the full strategy with "
            "model.freeze_image_encoder true keeps it frozen (set it false, or use adapter / lora)")
    require(d.num_points >= 1, f"data.num_points: must be >= 1, got {d.num_points}")
    require(d.num_negative_points >= 0, f"data.num_negative_points: must be >= 0, got {d.num_negative_points}")
    require(0.0 <= d.box_jitter < 1.0, f"data.box_jitter: must be in [0, 1), got {d.box_jitter}")
    require(d.max_instances_per_image >= 1, f"data.max_instances_per_image: must be >= 1, got {d.max_instances_per_image}")
    require(d.batch_size >= 1, f"data.batch_size: must be >= 1, got {d.batch_size}")
    require(d.num_workers >= 0, f"data.num_workers: must be >= 0, got {d.num_workers}")
    intensity_problem = d.intensity.problem()
    require(intensity_problem is None, f"data.intensity.{intensity_problem}")
    a = d.augment
    require(0.0 <= a.flip_prob <= 1.0, f"data.augment.flip_prob: must be in [0, 1], got {a.flip_prob}")
    require(len(a.scale_range) == 2 and 0 < a.scale_range[0] <= a.scale_range[1],
            f"data.augment.scale_range: must be [low, high] with 0 < low <= high, got {a.scale_range}")
    require(0.0 <= a.color_jitter < 1.0, f"data.augment.color_jitter: must be in [0, 1), got {a.color_jitter}")
    ad, lo = cfg.finetuning.adapter, cfg.finetuning.lora
    require(0 < ad.bottleneck_ratio <= 1, f"finetuning.adapter.bottleneck_ratio: must be in (0, 1], got {ad.bottleneck_ratio}")
    require(ad.bottleneck_dim is None or ad.bottleneck_dim >= 1,
            f"finetuning.adapter.bottleneck_dim: must be >= 1, got {ad.bottleneck_dim}")
    require(lo.r >= 1, f"finetuning.lora.r: must be >= 1, got {lo.r}")
    require(0 <= lo.dropout < 1, f"finetuning.lora.dropout: must be in [0, 1), got {lo.dropout}")
    require(bool(lo.target_modules) and set(lo.target_modules) <= {"qkv", "proj"},
            f"finetuning.lora.target_modules: must be a non-empty subset of ['qkv', 'proj'] "
            f"(the encoder's attention linears), got {lo.target_modules}")
    require(t.num_epochs >= 1, f"training.num_epochs: must be >= 1, got {t.num_epochs}")
    require(t.gradient_accumulation_steps >= 1,
            f"training.gradient_accumulation_steps: must be >= 1, got {t.gradient_accumulation_steps}")
    require(t.warmup_epochs >= 0, f"training.warmup_epochs: must be >= 0, got {t.warmup_epochs}")
    require(t.checkpoint_every >= 0, f"training.checkpoint_every: must be >= 0, got {t.checkpoint_every}")
    require(t.optimizer.betas is None or len(t.optimizer.betas) == 2,
            f"training.optimizer.betas: must be two numbers, got {t.optimizer.betas}")
    require(cfg.loss.iou_loss.weight >= 0, f"loss.iou_loss.weight: must be >= 0, got {cfg.loss.iou_loss.weight}")


def config_from_dict(data: dict[str, Any]) -> FinetuneConfig:
    cfg = _build(FinetuneConfig, data, "")
    _check_ranges(cfg)
    return cfg


def load_config(path: str | Path) -> FinetuneConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    try:
        return config_from_dict(data or {})
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
