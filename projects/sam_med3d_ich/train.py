"""Fine-tune SAM-Med3D for intracranial haemorrhage segmentation (+ ICH classification, visual tokens).

    python projects/sam_med3d_ich/train.py --train_csv train.csv --val_csv val.csv --mask_dir masks/ \
        --output_dir outputs/ich --checkpoint sam_med3d_turbo.pth
    python projects/sam_med3d_ich/train.py ... --resume outputs/ich/latest_model.pth   # continues there
    python projects/sam_med3d_ich/train.py --test      # system check, no data needed
    torchrun --nproc_per_node 4 projects/sam_med3d_ich/train.py ...   # DDP
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from projects.sam_med3d_ich.config import (
    BRAIN_WINDOW_HU,
    INTENSITY_NORMS,
    SCHEDULER_TYPES,
    SELECT_BEST_BY,
    TrainConfig,
)
from projects.sam_med3d_ich.dataloader import DataError
from projects.sam_med3d_ich.model import ARCHITECTURES
from shared.argtypes import positive_int, probability
from shared.checkpoint import CheckpointError
from shared.cli_errors import run_reporting_errors
from shared.hub import ModelNotFoundError
from shared.run import RunError

EXPECTED_ERRORS = (DataError, CheckpointError, RunError, ModelNotFoundError)

DEFAULTS = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DEFAULTS
    data = p.add_argument_group("data")
    data.add_argument("--train_csv", help="CSV with columns path,ich,patient_id")
    data.add_argument("--val_csv", help="CSV with columns path,ich,patient_id")
    data.add_argument("--mask_dir", help="folder of <number>.nii masks (number from the volume file name)")
    data.add_argument("--output_dir", default=None,
                      help="run folder (NAME_1, ... when it holds another run); default outputs/<timestamp>; "
                           "with --resume: the checkpoint's folder")
    data.add_argument("--intensity_norm", choices=INTENSITY_NORMS, default=d.intensity_norm,
                      help="brain_window: --hu_window to [0, 1]; sam_med3d: SAM-Med3D's clamp to [-1000, 1000] HU "
                           "and z-score over voxels > 0")
    data.add_argument("--hu_window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                      help=f"HU window of brain_window (default {BRAIN_WINDOW_HU[0]:g} {BRAIN_WINDOW_HU[1]:g})")
    data.add_argument("--target_spacing", nargs="+", default=None, metavar="MM",
                      help="resample to X Y Z mm after reorienting to RAS (default 1.5 1.5 1.5, SAM-Med3D's); "
                           "'native' keeps each volume's own grid")
    data.add_argument("--pos_ratio", type=probability, default=d.pos_ratio,
                      help="share of training crops centred on a haemorrhage voxel")
    data.add_argument("--augmentation_prob", type=probability, default=d.augmentation_prob)
    data.add_argument("--num_workers", type=int, default=d.num_workers)
    model = p.add_argument_group("model")
    model.add_argument("--model_type", choices=list(ARCHITECTURES), default=d.model_type)
    model.add_argument("--checkpoint", help="SAM-Med3D weights to start from, e.g. sam_med3d_turbo.pth")
    model.add_argument("--visual_tokens", type=positive_int, default=d.visual_tokens)
    model.add_argument("--visual_token_dim", type=positive_int, default=d.visual_token_dim)
    model.add_argument("--freeze_encoder", action="store_true")
    model.add_argument("--use_gradient_checkpointing", action="store_true")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=positive_int, default=d.epochs)
    opt.add_argument("--batch_size", type=positive_int, default=d.batch_size)
    opt.add_argument("--lr", type=float, default=d.lr)
    opt.add_argument("--weight_decay", type=float, default=d.weight_decay)
    opt.add_argument("--prompt_decoder_lr_scale", type=float, default=d.prompt_decoder_lr_scale,
                     help="lr factor of prompt encoder and mask decoder (SAM-Med3D: 0.1)")
    opt.add_argument("--gradient_accumulation_steps", type=positive_int, default=d.gradient_accumulation_steps)
    opt.add_argument("--max_grad_norm", type=float, default=d.max_grad_norm, help="<= 0 disables clipping")
    opt.add_argument("--use_mixed_precision", action="store_true", help="bf16 autocast (fp16 + scaler on old GPUs)")
    opt.add_argument("--scheduler_type", choices=SCHEDULER_TYPES, default=d.scheduler_type)
    opt.add_argument("--step_size", type=positive_int, default=d.step_size, help="epochs, for --scheduler_type step")
    opt.add_argument("--gamma", type=float, default=d.gamma, help="lr factor, for --scheduler_type step")
    opt.add_argument("--patience", type=positive_int, default=d.patience,
                     help="stop after this many epochs without a better validation Dice")
    opt.add_argument("--num_clicks", type=positive_int, default=d.num_clicks,
                     help="click rounds per training crop after the automatic round (SAM-Med3D: 11)")
    opt.add_argument("--val_clicks", type=positive_int, default=d.val_clicks,
                     help="validation reports Dice after 1 click and after this many clicks")
    opt.add_argument("--select_best_by", choices=SELECT_BEST_BY, default=d.select_best_by,
                     help="validation metric for best_model.pth, the plateau schedule and early stopping "
                          "(dice_nclicks: after --val_clicks clicks)")
    opt.add_argument("--cls_loss_weight", type=float, default=d.cls_loss_weight)
    opt.add_argument("--ce_weight", type=float, default=d.ce_weight,
                     help="cross-entropy weight inside DiceCE; CE alone pushes tiny lesions to background early")
    opt.add_argument("--seed", type=int, default=d.seed)
    opt.add_argument("--resume", help="latest_model.pth of a run to continue, in its own folder; the experiment's "
                                      "flags must be the same (paths, workers, device and logging may change)")
    opt.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: CUDA when available")
    log = p.add_argument_group("tracking")
    log.add_argument("--use_wandb", action="store_true")
    log.add_argument("--wandb_project", default=d.wandb_project)
    log.add_argument("--wandb_entity", default=None)
    log.add_argument("--log_images", action="store_true", help="image/truth/prediction slices every --log_freq epochs")
    log.add_argument("--log_freq", type=positive_int, default=d.log_freq)
    p.add_argument("--test", action="store_true", help="run the system checklist on synthetic data and exit")
    return p


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> TrainConfig:
    for flag in ("train_csv", "val_csv", "mask_dir"):
        if getattr(args, flag) is None:
            parser.error(f"--{flag} is required (or use --test)")
    values = {k: v for k, v in vars(args).items() if k != "test"}
    if args.intensity_norm == "sam_med3d":
        if args.hu_window is not None:
            warnings.warn("--hu_window is ignored under --intensity_norm sam_med3d (it clamps to [-1000, 1000] HU "
                          "and z-scores); config.json records hu_window: null", stacklevel=2)
        values["hu_window"] = None
    else:
        values["hu_window"] = tuple(args.hu_window) if args.hu_window else BRAIN_WINDOW_HU
        if values["hu_window"][0] >= values["hu_window"][1]:
            parser.error(f"--hu_window: LOW must be below HIGH, got {values['hu_window']}")
    values["target_spacing"] = parse_target_spacing(args.target_spacing, parser)
    if values["max_grad_norm"] is not None and values["max_grad_norm"] <= 0:
        values["max_grad_norm"] = None
    return TrainConfig(**values)


def parse_target_spacing(value: list[str] | None, parser: argparse.ArgumentParser
                         ) -> tuple[float, float, float] | None:
    if value is None:
        return TrainConfig().target_spacing
    if value == ["native"]:
        return None
    try:
        spacing = tuple(float(v) for v in value)
    except ValueError:
        spacing = ()
    if len(spacing) != 3 or min(spacing) <= 0:
        parser.error(f"--target_spacing: three positive numbers (mm) or 'native', got {' '.join(value)}")
    return spacing


# ------------------------------------------------------------------------------------------ --test


def run_checklist(workdir: Path) -> list[tuple[str, bool, str]]:
    """Each check -> (name, passed, detail). Uses the tiny model and a generated dataset."""
    from projects.sam_med3d_ich.dataloader import TrainCropDataset, read_cases
    from projects.sam_med3d_ich.interaction import ClickRoundsForward
    from projects.sam_med3d_ich.model import build_ich_model, load_sam_checkpoint
    from projects.sam_med3d_ich.synthetic import write_dataset
    from projects.sam_med3d_ich.utils import scan_cases
    from shared.checkpoint import save_checkpoint
    from shared.memory import format_system_report, system_report
    from shared.optim import build_optimizer

    results: list[tuple[str, bool, str]] = []
    state: dict = {}

    def check(name: str, fn: Callable[[], str]) -> None:
        try:
            results.append((name, True, fn()))
        except Exception as error:  # noqa: BLE001 - a checklist reports every failure and goes on
            results.append((name, False, f"{type(error).__name__}: {error}"))
            traceback.print_exc()

    def system() -> str:
        report = system_report(workdir)
        print(format_system_report(report))
        if report["disk_free_gb"] < 1:
            raise RuntimeError(f"only {report['disk_free_gb']:.2f} GB free disk")
        gpus = ", ".join(g["name"] for g in report["gpus"]) or "none (CPU)"
        return f"GPUs: {gpus}; RAM free {report['ram_available_gb']:.1f} GB; disk free {report['disk_free_gb']:.1f} GB"

    def data() -> str:
        root = write_dataset(workdir / "data", n_patients=4, shape=(36, 36, 32), seed=0)
        cases, stats = scan_cases(read_cases(root / "train.csv", root / "masks"), "train")
        dataset = TrainCropDataset(cases, 32, "brain_window", (0.0, 80.0), (1.0, 1.0, 1.0), 0.75, 0.5, seed=0)
        item = dataset[0]
        if tuple(item["image"].shape) != (1, 32, 32, 32):
            raise RuntimeError(f"crop shape {tuple(item['image'].shape)}")
        state["batch"] = item
        return f"{stats['cases']} cases ({stats['positives']} ICH+), crop {tuple(item['image'].shape)}"

    def forward_backward() -> str:
        torch.manual_seed(0)
        model = build_ich_model("tiny", visual_tokens=8, visual_token_dim=32)
        rounds = ClickRoundsForward(model, num_clicks=2)
        image, label = state["batch"]["image"][None], state["batch"]["label"][None]
        logits, ich_logit = rounds(image, label, torch.Generator().manual_seed(0))
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(x, label) for x in logits) + ich_logit.sum()
        loss.backward()
        missing = [n for n, p in model.image_encoder.named_parameters() if p.grad is None]
        if missing:
            raise RuntimeError(f"no gradient for {missing[:3]}")
        state.update(model=model, rounds=rounds, image=image, label=label)
        return f"{len(logits)} rounds, logits {tuple(logits[-1].shape)}, loss {float(loss.detach()):.4f}"

    def optimizer_step() -> str:
        model = state["model"]
        optimizer = build_optimizer("adamw", model, 1e-3, 1e-4)
        before = model.image_encoder.patch_embed.proj.weight.detach().clone()
        optimizer.step()
        change = float((model.image_encoder.patch_embed.proj.weight - before).abs().max())
        if change == 0:
            raise RuntimeError("weights did not change")
        return f"max weight change {change:.2e}"

    def checkpoint_roundtrip() -> str:
        model = state["model"].eval()
        path = save_checkpoint(workdir / "check.pth", {"model_state_dict": model.state_dict()})
        again = build_ich_model("tiny", visual_tokens=8, visual_token_dim=32)
        load_sam_checkpoint(again, path)
        with torch.no_grad():
            same = torch.equal(model(state["image"]), again.eval()(state["image"]))
        if not same:
            raise RuntimeError("reloaded model gives different outputs")
        return f"{path.stat().st_size / 1e6:.1f} MB, identical outputs after reload"

    for name, fn in (("system report", system), ("synthetic data", data), ("tiny model forward/backward",
                     forward_backward), ("optimizer step", optimizer_step), ("checkpoint save/load",
                                                                           checkpoint_roundtrip)):
        check(name, fn)
    return results


def system_test() -> int:
    with tempfile.TemporaryDirectory(prefix="sam_med3d_ich_test_") as tmp:
        results = run_checklist(Path(tmp))
    for name, passed, detail in results:
        print(f"[{'PASS' if passed else 'FAIL'}] {name}: {detail}")
    failed = sum(not passed for _, passed, _ in results)
    print(f"{len(results) - failed}/{len(results)} checks passed")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> dict | int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.test:
        return system_test()
    cfg = config_from_args(args, parser)
    from projects.sam_med3d_ich.trainer import Trainer

    trainer = Trainer(cfg)
    try:
        summary = trainer.train()
    finally:
        trainer.close()
    if trainer.is_main:
        print(f"Best validation {summary['select_best_by']} {summary['best_val_dice']} at epoch {summary['best_epoch']}; "
              f"outputs in {summary['output_dir']}")
    return summary


def cli(argv: Sequence[str] | None = None) -> int:
    """The command line: bad input is one line on stderr and exit code 2."""
    return run_reporting_errors(lambda: main(argv), EXPECTED_ERRORS)


if __name__ == "__main__":
    sys.exit(cli())
