"""Fine-tune Segment Anything (full, adapter or LoRA) on prompted segmentation data.

    python train.py --config config.yaml [--resume outputs/.../latest_model.pth] [--output_dir DIR]
    torchrun --nproc_per_node 2 train.py --config config.yaml

Writes to <output.output_dir>/<output.experiment_name>/ (a resume continues in the checkpoint's folder
unless --output_dir is given): config.json, metrics.jsonl, runs/ (TensorBoard), latest_model.pth and
checkpoint_epoch_N.pth (resumable), best_model.pth (best validation IoU, with its config),
best_model_sam.pth (stock SAM state dict) with preprocessing.json beside it, best_model_adapter.pth
or best_model_lora.pth (strategy-only weights), training_summary_<timestamp>.json, curve PNGs.
The run lifecycle (resume check, run folder, metric rows after a resume) is shared/run.py's.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from projects.sam_finetune.config import ConfigError, FinetuneConfig, load_config
from projects.sam_finetune.data_sources import DataError
from projects.sam_finetune.dataset import PromptedSegmentationDataset, collate_prompted
from projects.sam_finetune.engine import EmbeddingCache, batch_loss, evaluate, mean_metrics
from projects.sam_finetune.losses import SamFinetuneLoss
from projects.sam_finetune.modeling.prompted_sam import PromptedSam
from projects.sam_finetune.modeling.strategies import (
    FinetunedSam,
    build_finetuned_sam,
    describe_trainable,
    freeze_unreachable_parameters,
    stock_sam_state_dict,
    strategy_weights,
)
from projects.sam_finetune.preprocess import Preprocessing
from shared.amp import AmpPolicy
from shared.checkpoint import CheckpointError, capture_training_state, save_checkpoint
from shared.cli_errors import run_reporting_errors
from shared.distributed import (
    barrier,
    broadcast_from_main,
    cleanup_distributed,
    gather_objects,
    is_distributed,
    make_dataloader,
    reduce_sum,
    set_loader_epoch,
    setup_distributed,
    wrap_model_ddp,
)
from shared.memory import MemoryMonitor
from shared.optim import build_optimizer, build_scheduler, resolve_lr_and_weight_decay
from shared.run import RunError, choose_run_dir, load_resume, open_run
from shared.sam import OptimizationStep
from shared.seeding import seed_everything

log = logging.getLogger("sam_finetune.train")

ADAMW_DEFAULT_LR, ADAMW_DEFAULT_WD = 1e-4, 0.01
NUM_OVERLAYS = 4  # validation overlay pictures logged per epoch
# The config keys a resume may change (shared.run.load_resume): where things live on this machine,
# loader parallelism, output cadence and folders. training.num_epochs may grow: the schedule is
# rebuilt for the new length and continues from the checkpoint's step.
RESUME_MAY_CHANGE = ("model.checkpoint", "data.data_dir", "data.num_workers", "training.checkpoint_every",
                     "device.find_unused_parameters", "output")
RESUME_MAY_INCREASE = ("training.num_epochs",)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fine-tune Segment Anything.")
    parser.add_argument("--config", required=True, help="YAML config (see config.yaml)")
    parser.add_argument("--resume", default=None, help="latest_model.pth or checkpoint_epoch_N.pth to continue")
    parser.add_argument("--output_dir", default=None,
                        help="run folder (default: a new folder under output.output_dir; a resume: the checkpoint's)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when available")
    return parser.parse_args(argv)


def reduce_sums(values: list[float], device: torch.device) -> list[float]:
    """Elementwise sums over DDP ranks in one all-reduce (the values themselves without DDP)."""
    tensor = torch.tensor(values, dtype=torch.float64)
    if is_distributed():
        tensor = tensor.to(device if torch.distributed.get_backend() == "nccl" else "cpu")
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def save_best(run_dir: Path, model: FinetunedSam, cfg: FinetuneConfig, epoch: int, val_iou: float) -> None:
    save_checkpoint(run_dir / "best_model.pth", {
        "model_state_dict": model.sam.state_dict(), "config": cfg.to_dict(), "strategy": model.strategy,
        "model_type": model.model_type, "epoch": epoch, "val_iou": val_iou,
    })
    save_checkpoint(run_dir / "best_model_sam.pth", stock_sam_state_dict(model))
    Preprocessing.from_config(cfg).save(run_dir)  # what the export's user must apply to images
    if model.strategy != "full":
        save_checkpoint(run_dir / f"best_model_{model.strategy}.pth", strategy_weights(model))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config)
    ctx = setup_distributed(None if args.device == "auto" else args.device)
    device, t = ctx.device, cfg.training
    seed_everything(t.seed)

    # --- inputs first: data and model are validated before any run folder exists ---------------
    train_set = PromptedSegmentationDataset(cfg.data, cfg.data.train_split, train=True, seed=t.seed)
    val_set = PromptedSegmentationDataset(cfg.data, cfg.data.val_split, train=False, seed=t.seed)
    train_loader = make_dataloader(train_set, cfg.data.batch_size, shuffle=True, seed=t.seed,
                                   num_workers=cfg.data.num_workers, collate_fn=collate_prompted)
    val_loader = make_dataloader(val_set, cfg.data.batch_size, shuffle=False, seed=t.seed,
                                 num_workers=cfg.data.num_workers, collate_fn=collate_prompted)
    finetuned = build_finetuned_sam(cfg)
    # DDP without find_unused_parameters fails on trainable weights no prompt of this config can
    # reach (e.g. point embeddings under box prompts): freeze them, which changes no update.
    unreachable = freeze_unreachable_parameters(finetuned.sam, cfg) \
        if ctx.world_size > 1 and not cfg.device.find_unused_parameters else []
    if unreachable:
        log.info("DDP with device.find_unused_parameters false: froze %d weights no prompt reaches (%s)",
                 len(unreachable), ", ".join(unreachable))

    # --- model, optimizer, schedule -------------------------------------------------------------
    model = PromptedSam(finetuned.sam).to(device)
    trainable = describe_trainable(finetuned)
    ddp_model = wrap_model_ddp(model, ctx, find_unused_parameters=cfg.device.find_unused_parameters)
    opt = t.optimizer
    lr, weight_decay = resolve_lr_and_weight_decay(opt.type, "adamw", t.learning_rate, t.weight_decay,
                                                   ADAMW_DEFAULT_LR, ADAMW_DEFAULT_WD)
    optimizer = build_optimizer(opt.type, model, lr, weight_decay, sam_base="adamw", sam_rho=opt.sam_rho,
                                betas=tuple(opt.betas) if opt.betas else None)
    steps_per_epoch = math.ceil(len(train_loader) / t.gradient_accumulation_steps)
    scheduler = build_scheduler(optimizer, t.lr_scheduler.type, total_steps=steps_per_epoch * t.num_epochs,
                                warmup_steps=round(t.warmup_epochs * steps_per_epoch), min_lr=t.lr_scheduler.min_lr)
    amp = AmpPolicy.create(device, enabled=cfg.device.use_amp)
    stepper = OptimizationStep(ddp_model, optimizer, amp, max_grad_norm=t.max_grad_norm)
    loss_fn = SamFinetuneLoss(cfg.loss)

    # The experiment: every setting, as resolved. It goes to config.json and into every checkpoint.
    config = {**cfg.to_dict(), "resolved": {"learning_rate": lr, "weight_decay": weight_decay,
                                            "amp": amp.describe(), "world_size": ctx.world_size,
                                            "frozen_unreachable": unreachable}}
    resume = None if args.resume is None else \
        load_resume(args.resume, config, may_change=RESUME_MAY_CHANGE, may_increase=RESUME_MAY_INCREASE)
    chosen = choose_run_dir(resume=resume, output_dir=args.output_dir, root=cfg.output.output_dir,
                            name=cfg.output.experiment_name) if ctx.is_main else None
    run_dir = Path(broadcast_from_main(str(chosen) if chosen is not None else None))

    # A frozen encoder gives each image the same embedding every epoch: compute it once.
    encoder_frozen = not finetuned.encoder_trainable
    train_cache = EmbeddingCache() if encoder_frozen and train_set.pixels_fixed else None
    val_cache = EmbeddingCache() if encoder_frozen else None
    if not encoder_frozen:
        cache_note = "off: the image encoder trains"
    elif train_cache is None:
        cache_note = "bypassed for training: augmentation changes pixels every epoch (validation cached)"
    else:
        cache_note = "on: embeddings computed once, later epochs run only prompt encoder + decoder"
    log.info("embedding cache %s", cache_note)
    parts = ", ".join(f"{part} {trainable[f'trainable_{part}']:,}"
                      for part in ("image_encoder", "prompt_encoder", "mask_decoder"))
    log.info("strategy %s: %s of %s parameters train (%s); %s", finetuned.strategy,
             f"{trainable['trainable_parameters']:,}", f"{trainable['total_parameters']:,}", parts, amp.describe())

    start_epoch, step, best_iou = 0, 0, -1.0
    if resume is not None:
        state = resume.restore(model=model, optimizer=optimizer, scheduler=scheduler, stepper=stepper)
        start_epoch, step, best_iou = state["epoch"] + 1, state["step"], state["best_metric"]
        lambda_schedule = scheduler.scheduler  # cosine / linear: a LambdaLR per optimizer step
        for group, base_lr, factor in zip(optimizer.param_groups, lambda_schedule.base_lrs, lambda_schedule.lr_lambdas):
            group["lr"] = base_lr * factor(lambda_schedule.last_epoch)  # this run's schedule (longer if epochs grew)
        log.info("resumed from %s at epoch %d (best val IoU %.4f)", resume.checkpoint, start_epoch, best_iou)
    tracker = open_run(run_dir, config, resume=resume, is_main=ctx.is_main, use_tensorboard=True)
    memory = MemoryMonitor(device)
    skipped_at_load = 0
    started = time.time()

    # --- the loop ------------------------------------------------------------------------------
    for epoch in range(start_epoch, t.num_epochs):
        model.train()
        memory.reset_peak()
        train_set.set_epoch(epoch)
        set_loader_epoch(train_loader, epoch)
        epoch_losses, epoch_ious = [], []
        progress = tqdm(total=len(train_loader), desc=f"epoch {epoch}", disable=not ctx.is_main, leave=False)
        micro_batches: list[dict[str, Any]] = []
        for batch_number, batch in enumerate(train_loader):
            progress.update(1)
            skipped_at_load += len(batch["errors"])
            if len(batch["images"]):
                micro_batches.append(batch)
            # Step points follow the batch count, the same on every rank, never the usable batches.
            group_end = (batch_number + 1) % t.gradient_accumulation_steps == 0
            if not (group_end or batch_number == len(train_loader) - 1):
                continue
            group, micro_batches = micro_batches, []
            # A rank whose group failed to load would skip DDP's all-reduce and hang the others: all skip.
            if reduce_sum(float(not group)) > 0:
                log.warning("epoch %d batch %d: no loadable sample in this accumulation group on some rank; "
                            "step skipped", epoch, batch_number)
                continue
            lr_used = optimizer.param_groups[0]["lr"]  # the base lr this step uses, before the schedule moves
            result = stepper.step(lambda b: batch_loss(ddp_model, b, loss_fn, device, train_cache), group)
            scheduler.step_iteration()
            step += 1
            if result.skipped:
                log.warning("step %d skipped: non-finite gradient", step)
            # means over every rank's micro-batches (one all-reduce of four numbers)
            loss_sum, seg_sum, iou_sum, count = reduce_sums([
                result.loss, sum(a["segmentation_loss"] for a in result.aux),
                sum(a["iou_loss"] for a in result.aux), len(result.aux)], device)
            loss, seg_loss, iou_loss = loss_sum / ctx.world_size, seg_sum / count, iou_sum / count
            epoch_losses.append(loss)
            epoch_ious.extend(aux["train_iou"] for aux in result.aux)
            progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr_used:.2e}")
            tracker.log({"train/loss": loss, "train/segmentation_loss": seg_loss, "train/iou_loss": iou_loss,
                         "lr": lr_used}, step=step)
        progress.close()
        scheduler.step_epoch()

        rows, val_loss, overlays = evaluate(model, val_loader, loss_fn, device, amp, val_cache,
                                            cfg.data.normalization, num_overlays=NUM_OVERLAYS if ctx.is_main else 0)
        val = mean_metrics(gather_objects(rows))
        train_loss = sum(epoch_losses) / max(len(epoch_losses), 1)  # already rank means
        train_iou = reduce_sum(sum(epoch_ious)) / max(reduce_sum(len(epoch_ious)), 1)
        metrics = {"epoch": epoch, "train/epoch_loss": train_loss, "train/iou": train_iou,
                   **{f"val/{k}": v for k, v in val.items()}, **{f"val/{k}": v for k, v in val_loss.items()},
                   **{f"memory/{k}": v for k, v in memory.peak().items()}}
        tracker.log(metrics, step=step)
        tracker.log_images("val_overlays", overlays, step=step)
        if ctx.is_main:
            print(f"epoch {epoch}: train_loss {train_loss:.4f} train_iou {train_iou:.4f} val_iou {val['iou']:.4f} "
                  f"val_dice {val['dice']:.4f} val_pixel_acc {val['pixel_accuracy']:.4f} "
                  f"val_boundary_f1 {val['boundary_f1']:.4f} lr {optimizer.param_groups[0]['lr']:.2e}", flush=True)

        improved = val["iou"] > best_iou
        best_iou = max(best_iou, val["iou"])
        if ctx.is_main:
            if improved:
                save_best(run_dir, finetuned, cfg, epoch, val["iou"])
            state = capture_training_state(model=model, optimizer=optimizer, scheduler=scheduler, stepper=stepper,
                                           epoch=epoch, step=step, best_metric=best_iou,
                                           extra={"config": config})
            save_checkpoint(run_dir / "latest_model.pth", state)
            if t.checkpoint_every and (epoch + 1) % t.checkpoint_every == 0:
                save_checkpoint(run_dir / f"checkpoint_epoch_{epoch + 1}.pth", state)
        barrier()

    summary = {
        "run_dir": str(run_dir), "strategy": finetuned.strategy, "model_type": finetuned.model_type,
        "best_val_iou": best_iou, "epochs": t.num_epochs, "steps": step, "seconds": time.time() - started,
        **trainable, "embedding_cache": cache_note,
        "embedding_cache_hits": train_cache.hits if train_cache else 0,
        "embedding_cache_misses": train_cache.misses if train_cache else 0,
        "skipped_train_samples": len(train_set.skipped), "skipped_val_samples": len(val_set.skipped),
        "skipped_by_reason": {"train": train_set.index.skipped_counts, "val": val_set.index.skipped_counts},
        "skipped_at_load": int(reduce_sum(skipped_at_load)),  # over all ranks
    }
    tracker.write_summary(summary)
    tracker.finish()
    cleanup_distributed()
    return summary


def cli(argv: list[str] | None = None) -> int:
    return run_reporting_errors(lambda: main(argv), (ConfigError, DataError, CheckpointError, RunError))


if __name__ == "__main__":
    sys.exit(cli())
