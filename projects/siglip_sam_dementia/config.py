"""Every knob of the dementia classifier, its CLI (the document's flag spellings) and the run name."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.argtypes import open_fraction, positive_int

# The documented default languages; any language folder (or `language` value) present in the data works.
LANGUAGES = ("English", "Greek", "Spanish", "Mandarin")
DEFAULT_MODEL_NAME = "google/siglip2-base-patch16-naflex"
DEFAULT_CROSS_LINGUAL_TRAIN = ("English", "Spanish", "Mandarin")
DEFAULT_CROSS_LINGUAL_TEST = ("Greek",)

# AdamW defaults; Lion's (lr / 3, wd x 3: its authors advise 3-10x) are derived by shared.optim when the
# user does not pass --learning_rate / --weight_decay.
ADAMW_LEARNING_RATE = 2e-5
ADAMW_WEIGHT_DECAY = 0.01
# lion-pytorch's own documented default (`Lion(params, lr=1e-4)`): what run_optimizer_comparison.sh
# gives Lion unless LION_LEARNING_RATE is set (a test keeps it equal to the library's default).
LION_DEFAULT_LEARNING_RATE = 1e-4

# Accepted spellings of the two classes (case-insensitive): 0 = control, 1 = dementia.
LABEL_ALIASES = {
    "0": 0, "control": 0, "hc": 0, "cc": 0, "cn": 0, "healthy": 0,
    "1": 1, "dementia": 1, "ad": 1, "cd": 1, "probablead": 1,
}

OPTIMIZERS = ("adamw", "lion", "sam")
SAM_BASES = ("adamw", "sgd", "lion")
LOSSES = ("cross_entropy", "focal", "bce")
POOLED_PARSERS = ("all", "cross_lingual")  # anything else given to --parser is one language of the data
MODALITIES = ("multimodal", "audio", "text")
FUSIONS = ("concat", "gated", "cross_attention")
SELECT_BY = ("val_auc", "val_macro_f1", "val_loss", "per_language_mean_auc")
CLASS_WEIGHTS = ("none", "auto")


@dataclass
class TrainingConfig:
    data_dir: str = "../training_dset"
    output_dir: str | None = None  # None: ./outputs (a resume continues in the checkpoint's folder)
    model_name: str = DEFAULT_MODEL_NAME
    # optimisation
    optimizer_type: str = "adamw"
    sam_rho: float = 0.05
    sam_adaptive: bool = False
    sam_base: str = "adamw"
    learning_rate: float | None = None  # None: 2e-5 for AdamW, rescaled for Lion
    weight_decay: float | None = None  # None: 0.01 for AdamW, rescaled for Lion
    warmup_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    batch_size: int = 32
    num_epochs: int = 100
    mixed_precision: bool = True
    # loss
    loss_type: str = "cross_entropy"
    focal_gamma: float = 2.0
    focal_alpha: float | None = None  # weight of the dementia class in the focal loss
    class_weights: str = "none"  # "auto": inverse class frequency of the training split
    # model selection
    select_by: str = "val_auc"  # ties broken by the lower validation loss
    early_stopping_patience: int | None = None  # epochs without a better selection score before stopping
    # data
    parser: str = "English"
    languages: list[str] | None = None  # None: every language in the data (--parser all)
    train_languages: list[str] = field(default_factory=lambda: list(DEFAULT_CROSS_LINGUAL_TRAIN))
    test_languages: list[str] = field(default_factory=lambda: list(DEFAULT_CROSS_LINGUAL_TEST))
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    sample_rate: int = 16000
    n_mels: int = 128
    hop_length: int = 160
    n_fft: int = 400
    window_seconds: float = 10.0
    max_num_patches: int | None = None  # None: the processor's own (256 for naflex)
    cache_dir: str | None = None  # None: <data_dir>/.logmel_cache
    # model
    modality: str = "multimodal"
    fusion: str = "concat"
    freeze_vision: bool = False
    freeze_text: bool = False
    gradient_checkpointing: bool = False  # both towers, transformers' own gradient_checkpointing_enable
    # run
    seed: int = 42
    num_workers: int = 0
    resume: str | None = None
    use_wandb: bool = False
    wandb_project: str = "dementia-prediction-siglip-sam"

    @property
    def num_logits(self) -> int:
        """BCE uses one logit and its sigmoid everywhere; the other losses two logits and a softmax."""
        return 1 if self.loss_type == "bce" else 2

    def to_dict(self) -> dict:
        return asdict(self)

    def language_tag(self) -> str:
        if self.parser == "cross_lingual":
            return f"{'-'.join(self.train_languages)}_to_{'-'.join(self.test_languages)}"
        if self.parser == "all":
            return "all" if self.languages is None else "-".join(self.languages)
        return self.parser

    def run_name(self, now: float | None = None) -> str:
        """siglip-sam_<langs>_<model>_<loss>_<optimizer>_bs<bs>_lr<lr>_<YYYYmmdd-HHMMSS>."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        model = Path(self.model_name.rstrip("/")).name
        return (f"siglip-sam_{self.language_tag()}_{model}_{self.loss_type}_{self.optimizer_type}"
                f"_bs{self.batch_size}_lr{self.learning_rate:g}_{stamp}")

    def wandb_tags(self) -> list[str]:
        tags = [f"loss_{self.loss_type}", f"optimizer_{self.optimizer_type}", f"batch_size_{self.batch_size}"]
        if self.optimizer_type == "sam":
            tags.append("sam_optimizer")
        return tags


def build_arg_parser() -> argparse.ArgumentParser:
    d = TrainingConfig()
    p = argparse.ArgumentParser(
        description="Train a SigLIP2 speech (log-mel) + transcript dementia classifier with SAM, AdamW or Lion.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default=d.data_dir, help="folder with <Language>/metadata.csv")
    p.add_argument("--output_dir", default=None,
                   help="runs are created inside it, one folder each (default ./outputs); a --resume without "
                        "it continues in the checkpoint's own folder")
    p.add_argument("--model_name", default=d.model_name, help="hub id or local folder (AutoModel/AutoProcessor)")
    p.add_argument("--optimizer_type", choices=OPTIMIZERS, default=d.optimizer_type)
    p.add_argument("--sam_rho", type=float, default=d.sam_rho, help="SAM neighbourhood size (ASAM wants ~2.0)")
    p.add_argument("--sam_adaptive", action="store_true", help="ASAM: scale the perturbation by |w|")
    p.add_argument("--sam_base", choices=SAM_BASES, default=d.sam_base, help="optimizer SAM wraps")
    p.add_argument("--loss_type", choices=LOSSES, default=d.loss_type)
    p.add_argument("--focal_gamma", type=float, default=d.focal_gamma)
    p.add_argument("--focal_alpha", type=open_fraction, default=d.focal_alpha,
                   help="focal-loss weight of the dementia class (control gets 1 - alpha); unset: no weighting")
    p.add_argument("--class_weights", choices=CLASS_WEIGHTS, default=d.class_weights,
                   help="auto: weight each class by N / (2 N_class) of the training split, in every loss")
    p.add_argument("--select_by", choices=SELECT_BY, default=d.select_by,
                   help="validation metric choosing best_model.pth; ties go to the lower val_loss")
    p.add_argument("--early_stopping_patience", type=positive_int, default=None,
                   help="stop after this many epochs without a better --select_by score (default: never)")
    p.add_argument("--parser", type=_language_or_parser, default=d.parser,
                   help="one language of the data (a <data_dir>/<Language> folder or `language` value; "
                        f"documented: {', '.join(LANGUAGES)}), all (pooled), or cross_lingual "
                        "(train on some, test on the others)")
    p.add_argument("--languages", nargs="+", type=_language, default=None,
                   help="with --parser all: which languages to pool (default: every language in the data)")
    p.add_argument("--train_languages", nargs="+", type=_language, default=None,
                   help="with --parser cross_lingual (default: English Spanish Mandarin)")
    p.add_argument("--test_languages", nargs="+", type=_language, default=None,
                   help="with --parser cross_lingual: held-out languages (default: Greek)")
    p.add_argument("--val_fraction", type=open_fraction, default=d.val_fraction,
                   help="speakers per language put in validation when metadata has no split column")
    p.add_argument("--test_fraction", type=open_fraction, default=d.test_fraction,
                   help="speakers per language put in test when metadata has no split column")
    p.add_argument("--batch_size", type=positive_int, default=d.batch_size)
    p.add_argument("--num_epochs", type=positive_int, default=d.num_epochs)
    p.add_argument("--learning_rate", type=float, default=None,
                   help=f"default {ADAMW_LEARNING_RATE:g} for AdamW (and SAM over AdamW/SGD); Lion: that / 3")
    p.add_argument("--weight_decay", type=float, default=None,
                   help=f"default {ADAMW_WEIGHT_DECAY:g} for AdamW; Lion: that x 3")
    p.add_argument("--warmup_ratio", type=float, default=d.warmup_ratio, help="fraction of steps warming up")
    p.add_argument("--max_grad_norm", type=float, default=d.max_grad_norm, help="clip; <= 0 turns clipping off")
    p.add_argument("--mixed_precision", dest="mixed_precision", action="store_true", default=d.mixed_precision,
                   help="autocast (bf16, or fp16 + GradScaler on GPUs without bf16); works with SAM too")
    p.add_argument("--no_mixed_precision", dest="mixed_precision", action="store_false", help="full fp32")
    p.add_argument("--modality", choices=MODALITIES, default=d.modality,
                   help="audio-only and text-only are the control groups")
    p.add_argument("--fusion", choices=FUSIONS, default=d.fusion, help="how audio and text embeddings are combined")
    p.add_argument("--freeze_vision", action="store_true", help="freeze the vision (spectrogram) tower")
    p.add_argument("--freeze_text", action="store_true", help="freeze the text (transcript) tower")
    p.add_argument("--gradient_checkpointing", action="store_true",
                   help="recompute the SigLIP2 towers' layer activations in backward (less memory, ~1 more "
                        "forward per pass)")
    p.add_argument("--sample_rate", type=positive_int, default=d.sample_rate)
    p.add_argument("--n_mels", type=positive_int, default=d.n_mels)
    p.add_argument("--hop_length", type=positive_int, default=d.hop_length)
    p.add_argument("--n_fft", type=positive_int, default=d.n_fft)
    p.add_argument("--window_seconds", type=float, default=d.window_seconds,
                   help="recordings are split into windows this long; their embeddings are pooled")
    p.add_argument("--max_num_patches", type=positive_int, default=None,
                   help="NaFlex patch budget per window (default: the processor's)")
    p.add_argument("--cache_dir", default=None, help="log-mel cache (default: <data_dir>/.logmel_cache)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num_workers", type=int, default=d.num_workers)
    p.add_argument("--resume", default=None, help="latest_model.pth of a run to continue")
    p.add_argument("--use_wandb", action="store_true")
    p.add_argument("--wandb_project", default=d.wandb_project)
    return p


def _language(value: str) -> str:
    name = value.strip()
    if not name or name in POOLED_PARSERS or "/" in name or name.startswith("."):
        raise argparse.ArgumentTypeError(f"invalid language {value!r}: a language folder name of the data")
    return name


def _language_or_parser(value: str) -> str:
    return value if value in POOLED_PARSERS else _language(value)


def parse_config(argv: list[str] | None = None) -> TrainingConfig:
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    if args.languages is not None and args.parser != "all":
        parser.error("--languages is only used with --parser all")
    if (args.train_languages or args.test_languages) and args.parser != "cross_lingual":
        parser.error("--train_languages/--test_languages are only used with --parser cross_lingual")
    values = vars(args)
    for key in ("languages", "train_languages", "test_languages"):
        if values[key] is None:
            values.pop(key)
    if values["max_grad_norm"] is not None and values["max_grad_norm"] <= 0:
        values["max_grad_norm"] = None
    config = TrainingConfig(**values)
    if config.parser == "cross_lingual":
        overlap = set(config.train_languages) & set(config.test_languages)
        if overlap:
            parser.error(f"--train_languages and --test_languages overlap: {', '.join(sorted(overlap))}")
    if config.val_fraction + config.test_fraction >= 1.0:
        parser.error("--val_fraction + --test_fraction must be below 1")
    if config.class_weights == "auto" and config.focal_alpha is not None:
        parser.error("--class_weights auto and --focal_alpha both weight the classes; use one")
    if config.gradient_checkpointing and config.freeze_vision and config.freeze_text:
        parser.error("--gradient_checkpointing needs a trainable tower (both are frozen)")
    return config


def selected_languages(config: TrainingConfig, available: list[str] | None = None) -> list[str]:
    """Every language the run reads, in a stable order; `--parser all` without --languages reads
    every language in the data (`available`, or the documented four when not known)."""
    if config.parser == "cross_lingual":
        return [*config.train_languages, *config.test_languages]
    if config.parser == "all":
        return list(config.languages if config.languages is not None else available or LANGUAGES)
    return [config.parser]
