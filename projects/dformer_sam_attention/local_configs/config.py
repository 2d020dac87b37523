"""Experiment settings: one frozen dataclass, one module per (dataset, backbone) holding `C`.

A config is named like upstream (`local_configs.NYUDepthv2.DFormerv2_S`) or by a path to a `.py`
file that defines `C`; command-line flags then override single fields (`dataclasses.replace`).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "projects.dformer_sam_attention"


@dataclass(frozen=True)
class SegConfig:
    # data
    dataset_name: str
    dataset_path: str
    class_names: tuple[str, ...]
    label_folder: str = "Label"  # SUN RGB-D's official folder is `labels/`
    gt_transform: bool = True  # labels − 1 so that 0 ("unlabelled") becomes the ignore value 255
    # the order of the colour channels fed to the network; the official loader reads BGR (OpenCV)
    # for every dataset except SUN RGB-D with DFormerv2, which it reads as RGB
    channel_order: str = "bgr"
    # official recipe: the channel order above (off: RGB for every dataset), `batch_size` is the total
    # over all processes, and checkpoints are validated on the official test split (--val_fraction 0)
    official_recipe: bool = True
    image_height: int = 480  # training crop
    image_width: int = 640
    train_scale_array: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    norm_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    norm_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    depth_mean: float = 0.48  # after /255
    depth_std: float = 0.28
    # model
    backbone: str = "DFormerv2_S"
    pretrained_model: str | None = None
    drop_path_rate: float = 0.25
    decoder: str = "hsg"  # hsg | ham
    decoder_embed_dim: int = 512
    ham_channels: int = 512  # LightHamHead's Hamburger width: fixed at 512 in the official head
    decoder_align_heads: int = 8
    text_embed_dim: int = 256  # shared pixel/text space of the HSG text logits
    ham_rank: int = 64
    text_encoder: str = "openai/clip-vit-base-patch32"
    text_template: str = "a photo of a {}."
    # optimisation
    lr: float = 6e-5
    lr_power: float = 0.9
    weight_decay: float = 0.01
    batch_size: int = 8
    nepochs: int = 500
    warm_up_epoch: int = 10
    num_workers: int = 4
    seed: int = 12345
    # evaluation
    eval_scale_array: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)
    eval_flip: bool = True
    eval_crop_size: tuple[int, int] = (480, 640)  # sliding-window size (H, W)
    eval_stride_rate: float = 2 / 3
    eval_batch_size: int = 1

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class ConfigError(ValueError):
    """A --config that names no config, or a config file that defines none; one line."""


def load_config(spec: str) -> SegConfig:
    """`local_configs.NYUDepthv2.DFormerv2_S`, a full module path, or a path to a .py file defining C."""
    path = Path(spec)
    if path.suffix == ".py":
        if not path.is_file():
            raise ConfigError(f"--config {path}: config file does not exist")
        module_spec = importlib.util.spec_from_file_location(f"_dformer_config_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        name = spec if spec.startswith(PACKAGE) else f"{PACKAGE}.{spec}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            raise ConfigError(f"--config {spec!r}: no such config module ({name}); choose one of "
                              f"{', '.join(available_configs())} or a .py file defining C") from None
    config = getattr(module, "C", None)
    if not isinstance(config, SegConfig):
        raise ConfigError(f"--config {spec!r}: the module defines no SegConfig named C")
    if config.channel_order not in ("bgr", "rgb"):
        raise ConfigError(f"--config {spec!r}: channel_order must be 'bgr' or 'rgb', got {config.channel_order!r}")
    return config


def available_configs() -> list[str]:
    """`local_configs.<Dataset>.<Model>` for every config module shipped with the tool."""
    root = Path(__file__).resolve().parent
    return sorted(f"local_configs.{p.parent.name}.{p.stem}" for p in root.glob("*/*.py")
                  if p.stem not in ("__init__", "base"))
