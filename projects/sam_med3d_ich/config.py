"""Every knob of a training run, with the defaults of the tool's document. `train.py` builds its
argparse flags from these defaults; `config.json` in each run folder is this dataclass (plus the
resolved architecture, AMP policy and world size)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

INTENSITY_NORMS = ("brain_window", "sam_med3d")
SCHEDULER_TYPES = ("reduce_on_plateau", "cosine", "step")
SHARED_SCHEDULER_NAMES = {"reduce_on_plateau": "plateau", "cosine": "cosine", "step": "step"}

BRAIN_WINDOW_HU = (0.0, 80.0)  # the radiologists' brain window: blood (50-90 HU) bright, CSF dark
SLIDING_WINDOW_OVERLAP = 0.25  # validation; predict.py / evaluate.py take --overlap
SAM_MED3D_SPACING_MM = (1.5, 1.5, 1.5)  # SAM-Med3D's data preparation resamples every volume to this
SELECT_BEST_BY = ("dice_1click", "dice_nclicks", "dice_automatic")

# What a resume may change without changing the experiment: where the same data and the run live,
# how many workers read it, the device, and logging. Everything else is refused (shared.run).
RESUME_MAY_CHANGE = ("train_csv", "val_csv", "mask_dir", "output_dir", "resume", "num_workers", "device",
                     "use_wandb", "wandb_project", "wandb_entity", "log_images", "log_freq")


@dataclass
class TrainConfig:
    # data
    train_csv: str | None = None
    val_csv: str | None = None
    mask_dir: str | None = None
    output_dir: str | None = None  # None: a new outputs/<timestamp>; on --resume: the checkpoint's folder
    intensity_norm: str = "brain_window"  # or "sam_med3d": clamp [-1000, 1000] HU, z-score over voxels > 0
    hu_window: tuple[float, float] | None = BRAIN_WINDOW_HU  # None under sam_med3d (it has no window)
    target_spacing: tuple[float, float, float] | None = SAM_MED3D_SPACING_MM  # mm; None keeps the native grid
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
    lr: float = 3e-3  # the recipe that learns on generated data (SAM-Med3D's train.py: 8e-4)
    weight_decay: float = 0.1  # SAM-Med3D's train.py
    prompt_decoder_lr_scale: float = 1.0  # SAM-Med3D: 0.1 (prompt encoder and decoder at 0.1x lr)
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    use_mixed_precision: bool = False
    scheduler_type: str = "reduce_on_plateau"
    step_size: int = 30  # epochs, for --scheduler_type step
    gamma: float = 0.1
    patience: int = 15  # early stopping on validation Dice
    num_clicks: int = 2  # click rounds per training crop after the automatic round (SAM-Med3D: 11)
    cls_loss_weight: float = 0.5
    ce_weight: float = 0.0  # weight of cross-entropy in DiceCE (SAM-Med3D: 1; on lesions < 1% of a crop
    # CE first drives every voxel to background, and the run stalls there)
    val_clicks: int = 5  # validation reports Dice after 1 and after this many simulated clicks
    select_best_by: str = "dice_1click"  # val metric that picks best_model.pth (ties: automatic Dice)
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
