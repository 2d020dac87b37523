"""Every knob of a training run, with the defaults of the tool's document. `train.py` builds its
argparse flags from these defaults; `config.json` in each run folder is this dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

INTENSITY_NORMS = ("brain_window", "sam_med3d")
SCHEDULER_TYPES = ("reduce_on_plateau", "cosine", "step")
SHARED_SCHEDULER_NAMES = {"reduce_on_plateau": "plateau", "cosine": "cosine", "step": "step"}

BRAIN_WINDOW_HU = (0.0, 80.0)  # the radiologists' brain window: blood (50-90 HU) bright, CSF dark
SLIDING_WINDOW_OVERLAP = 0.25  # validation; predict.py / evaluate.py take --overlap


@dataclass
class TrainConfig:
    # data
    train_csv: str | None = None
    val_csv: str | None = None
    mask_dir: str | None = None
    output_dir: str = "./outputs"
    intensity_norm: str = "brain_window"  # or "sam_med3d": z-score over voxels > 0, as SAM-Med3D was pretrained
    hu_window: tuple[float, float] = BRAIN_WINDOW_HU
    target_spacing: tuple[float, float, float] | None = None  # mm; None keeps the native grid
    pos_ratio: float = 0.75  # share of training crops centred on a haemorrhage voxel
    augmentation_prob: float = 0.5
    num_workers: int = 4
    # model
    model_type: str = "vit_b_ori"
    checkpoint: str | None = None
    visual_tokens: int = 256
    visual_token_dim: int = 768
    freeze_encoder: bool = False
    use_gradient_checkpointing: bool = False
    # optimisation
    epochs: int = 200
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-4
    prompt_decoder_lr_scale: float = 0.1  # SAM-Med3D trains prompt encoder and decoder at 0.1x lr
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    use_mixed_precision: bool = False
    scheduler_type: str = "reduce_on_plateau"
    step_size: int = 30  # epochs, for --scheduler_type step
    gamma: float = 0.1
    patience: int = 15  # early stopping on validation Dice
    num_clicks: int = 11  # interaction rounds per training crop (round 0 has no click)
    cls_loss_weight: float = 0.5
    ce_weight: float = 1.0  # weight of cross-entropy in DiceCE (SAM-Med3D: 1); lower it for tiny lesions
    seed: int = 42
    resume: str | None = None
    device: str | None = None  # None: CUDA when available
    # tracking
    use_wandb: bool = False
    wandb_project: str = "sam-med3d-ich"
    wandb_entity: str | None = None
    log_images: bool = False
    log_freq: int = 10
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
