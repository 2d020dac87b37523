"""The training run: data, model, optimiser and the epoch loop, in one place.

Order of one optimiser step: a group of `gradient_accumulation_steps` micro-batches goes to
`shared.sam.OptimizationStep`, which for each runs the click rounds under autocast, averages
DiceCE over rounds, adds the weighted ICH classification loss, backpropagates, then clips and steps.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from projects.sam_med3d_ich.config import (
    RESUME_MAY_CHANGE,
    SHARED_SCHEDULER_NAMES,
    SLIDING_WINDOW_OVERLAP,
    TrainConfig,
)
from projects.sam_med3d_ich.dataloader import (
    DataError,
    TrainCropDataset,
    VolumeDataset,
    collate_skipping_bad,
    read_cases,
)
from projects.sam_med3d_ich.inference import interactive_refinement
from projects.sam_med3d_ich.interaction import ClickRoundsForward
from projects.sam_med3d_ich.model import SamMed3DICH, architecture, build_ich_model
from projects.sam_med3d_ich.utils import (
    format_statistics,
    overlay_panel,
    save_png,
    scan_cases,
    segmentation_metrics,
)
from shared.amp import AmpPolicy
from shared.checkpoint import capture_training_state, restore_training_state, save_checkpoint
from shared.distributed import (
    all_gather_concat,
    broadcast_from_main,
    cleanup_distributed,
    gather_objects,
    make_dataloader,
    reduce_mean,
    reduce_sum,
    set_loader_epoch,
    setup_distributed,
    wrap_model_ddp,
)
from shared.memory import MemoryMonitor, format_system_report, system_report
from shared.optim import build_optimizer, build_scheduler
from shared.run import ResumePoint, choose_run_dir, load_resume, open_run
from shared.sam import OptimizationStep
from shared.seeding import seed_everything
from shared.tracking import timestamp, write_json


def step_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor, dice_loss: DiceLoss, ce_weight: float) -> torch.Tensor:
    """MONAI Dice (sigmoid, squared) over the crops that hold haemorrhage + `ce_weight` x BCE over all.
    Dice of an empty crop only rewards pushing every voxel to 0; ICH-negative crops train through CE."""
    has_lesion = labels.flatten(1).any(dim=1)
    dice = dice_loss(logits[has_lesion], labels[has_lesion]) if has_lesion.any() else logits.sum() * 0
    return dice + ce_weight * F.binary_cross_entropy_with_logits(logits, labels)


def encoder_export(model: SamMed3DICH, model_type: str, preprocessing: dict) -> dict[str, Any]:
    """`sam_encoder.pth`: the image encoder as a feature extractor plus the visual-token and ICH heads."""
    return {"image_encoder_state_dict": model.image_encoder.state_dict(),
            "representation_head_state_dict": model.representation_head.state_dict(),
            "ich_head_state_dict": model.ich_head.state_dict(),
            "head_config": model.head_config, "model_type": model_type,
            "architecture": architecture(model_type).__dict__, "preprocessing": preprocessing}


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.ctx = setup_distributed(cfg.device)
        self.device = self.ctx.device
        self.is_main = self.ctx.is_main
        seed_everything(cfg.seed)  # same on every rank: identical initial weights
        self.arch = architecture(cfg.model_type)
        self.preprocessing = {"intensity_norm": cfg.intensity_norm,
                              "hu_window": list(cfg.hu_window) if cfg.hu_window else None,
                              "target_spacing": list(cfg.target_spacing) if cfg.target_spacing else None}
        self.model_config = {"model_type": cfg.model_type, "visual_tokens": cfg.visual_tokens,
                             "visual_token_dim": cfg.visual_token_dim}

        # ---- every input is checked before anything is written: data, then the starting weights
        train_cases, self.train_stats = scan_cases(read_cases(cfg.train_csv, cfg.mask_dir), "train")
        val_cases, self.val_stats = scan_cases(read_cases(cfg.val_csv, cfg.mask_dir), "val")
        for stats, csv in ((self.train_stats, cfg.train_csv), (self.val_stats, cfg.val_csv)):
            if self.is_main:
                print(format_statistics(stats))
            if stats["cases"] == 0:
                raise DataError(f"{csv}: no usable cases ({stats['bad_cases']} bad; first: "
                                f"{stats['bad_case_reasons'][0]['reason'] if stats['bad_case_reasons'] else '-'})")
        self.train_set = TrainCropDataset(train_cases, self.arch.img_size, cfg.intensity_norm, cfg.hu_window,
                                          cfg.target_spacing, cfg.pos_ratio, cfg.augmentation_prob, cfg.seed)
        self.val_set = VolumeDataset(val_cases, cfg.intensity_norm, cfg.hu_window, cfg.target_spacing)
        # the order of epoch e is drawn from (seed, e) alone, whatever num_workers or where a run resumed
        self.train_loader = make_dataloader(self.train_set, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                            num_workers=cfg.num_workers, collate_fn=collate_skipping_bad)

        # ---- model
        self.model = build_ich_model(cfg.model_type, cfg.visual_tokens, cfg.visual_token_dim, checkpoint=cfg.checkpoint)
        if cfg.freeze_encoder:
            if cfg.checkpoint is None and self.is_main:
                warnings.warn("--freeze_encoder without --checkpoint freezes a randomly initialised encoder; "
                              "pass the published weights, e.g. --checkpoint sam_med3d_turbo.pth", stacklevel=2)
            self.model.image_encoder.requires_grad_(False)
        self.model.image_encoder.gradient_checkpointing = cfg.use_gradient_checkpointing
        self.model.to(self.device)
        # unused parameters exist by design (IoU head, multimask hypernetworks), so DDP must look for them
        self.train_forward = wrap_model_ddp(ClickRoundsForward(self.model, cfg.num_clicks, cfg.freeze_encoder),
                                            self.ctx, find_unused_parameters=True)

        # ---- optimisation
        scale = cfg.prompt_decoder_lr_scale
        self.optimizer = build_optimizer("adamw", self.model, cfg.lr, cfg.weight_decay,
                                         lr_multipliers={"prompt_encoder": scale, "mask_decoder": scale})
        self.steps_per_epoch = math.ceil(len(self.train_loader) / cfg.gradient_accumulation_steps)
        self.scheduler = build_scheduler(self.optimizer, SHARED_SCHEDULER_NAMES[cfg.scheduler_type],
                                         total_steps=cfg.epochs * self.steps_per_epoch, step_size=cfg.step_size,
                                         gamma=cfg.gamma, plateau_patience=max(1, cfg.patience // 3),
                                         plateau_mode="max")
        self.amp = AmpPolicy.create(self.device, enabled=cfg.use_mixed_precision)
        self.stepper = OptimizationStep(self.train_forward, self.optimizer, self.amp, cfg.max_grad_norm)
        self.dice_loss = DiceLoss(sigmoid=True, squared_pred=True, batch=True)
        self.memory = MemoryMonitor(self.device)

        # ---- the run: resume check, folder, config.json, tracker (shared.run)
        self.config = {**cfg.to_dict(), "architecture": self.arch.__dict__, "amp": self.amp.describe(),
                       "world_size": self.ctx.world_size}
        # the cosine schedule is laid out over `epochs`: there a longer run is a different experiment
        may_increase = () if cfg.scheduler_type == "cosine" else ("epochs",)
        resume = (load_resume(cfg.resume, self.config, may_change=RESUME_MAY_CHANGE, may_increase=may_increase)
                  if cfg.resume else None)
        self.output_dir = broadcast_from_main(choose_output_dir(cfg, resume) if self.is_main else None)
        self.config["output_dir"] = str(self.output_dir)
        self.tracker = open_run(self.output_dir, self.config, resume=resume, is_main=self.is_main,
                                use_wandb=cfg.use_wandb, wandb_project=cfg.wandb_project,
                                wandb_entity=cfg.wandb_entity, run_name=self.output_dir.name)
        if self.is_main:
            print(format_system_report(system_report(self.output_dir)))
            write_json(self.output_dir / "dataset_stats.json", {"train": self.train_stats, "val": self.val_stats})

        # ---- state
        self.start_epoch, self.global_step = 0, 0
        self.best = (-math.inf, -math.inf)  # (select_best_by metric, tie-breaking metric)
        self.best_epoch, self.epochs_since_best = -1, 0
        self.runtime_skipped: dict[str, str] = {}
        if resume is not None:
            state = restore_training_state(resume.payload, model=self.model, optimizer=self.optimizer,
                                           scheduler=self.scheduler, stepper=self.stepper)
            extra = state["extra"] or {}
            self.start_epoch, self.global_step = int(state["epoch"]), int(state["step"])
            self.best = tuple(extra.get("best", self.best))
            self.best_epoch = int(extra.get("best_epoch", -1))
            self.epochs_since_best = int(extra.get("epochs_since_best", 0))
            self.runtime_skipped = dict(extra.get("runtime_skipped", {}))
            if self.is_main:
                print(f"Resumed from {cfg.resume} at epoch {self.start_epoch} (step {self.global_step})")

    def base_lr(self) -> float:
        """The base learning rate the optimiser uses now (every group is a multiple of it)."""
        group = self.optimizer.param_groups[0]
        return group["lr"] / group["lr_multiplier"]

    # ------------------------------------------------------------------------------------ the loop
    def train(self, stop_after_epoch: int | None = None) -> dict[str, Any]:
        """Run epochs until `cfg.epochs`, early stopping, or (for tests that simulate a killed run)
        `stop_after_epoch`. Returns the summary."""
        cfg = self.cfg
        started = time.time()
        self.epochs_completed = self.start_epoch
        stopped_early = False
        last_val: dict[str, float] = {}
        peak: dict[str, float] = {}
        for epoch in range(self.start_epoch, cfg.epochs):
            # crops, order and clicks depend only on (seed, epoch, step): a resumed run repeats them
            self.train_set.set_epoch(epoch)
            set_loader_epoch(self.train_loader, epoch)
            self.memory.reset_peak()
            self.train_forward.train()
            totals = {"loss": 0.0, "seg_loss": 0.0, "cls_loss": 0.0, "dice": 0.0, "steps": 0, "skipped_steps": 0}
            group: list[dict] = []
            last_index = len(self.train_loader) - 1
            bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not self.is_main,
                       leave=False)
            for index, batch in enumerate(bar):
                self.runtime_skipped.update(dict(batch["skipped"]))
                if batch["size"]:
                    group.append(batch)
                # update boundaries depend on the batch index only, so every rank reaches them together
                if (index + 1) % cfg.gradient_accumulation_steps and index != last_index:
                    continue
                # a rank whose micro-batches were all bad cases has no gradient to all-reduce: all skip
                if reduce_sum(float(not group)) > 0:
                    group = []
                    continue
                generator = torch.Generator().manual_seed(step_seed(cfg.seed, epoch, self.global_step))
                lr_used = self.base_lr()  # before the schedule moves on
                result = self.stepper.step(lambda b, g=generator: self._loss(b, g), group)
                self.scheduler.step_iteration()
                self.global_step += 1
                group = []
                totals["steps"] += 1
                totals["skipped_steps"] += int(result.skipped)
                totals["loss"] += result.loss
                for key in ("seg_loss", "cls_loss", "dice"):
                    totals[key] += float(np.mean([aux[key] for aux in result.aux]))
                self.tracker.log({"train_step_loss": result.loss, "lr": lr_used,
                                  "lr_prompt_decoder": lr_used * cfg.prompt_decoder_lr_scale}, step=self.global_step)
                bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr_used:.2e}")
            peak = self.memory.peak()
            self.epochs_completed = epoch + 1

            val = self.validate(epoch)
            last_val = val
            # each rank met its own shard's bad cases; rank 0 saves and summarises them all
            self.runtime_skipped = dict(gather_objects(sorted(self.runtime_skipped.items())))
            score = self.selection_score(val)
            self.scheduler.step_epoch(score[0])
            improved = score > self.best
            if improved:
                self.best, self.best_epoch, self.epochs_since_best = score, epoch + 1, 0
            else:
                self.epochs_since_best += 1

            steps = max(1, totals["steps"])
            # training means over all ranks (each rank trained on its own shard)
            metrics = {"epoch": epoch + 1, "train_loss": reduce_mean(totals["loss"] / steps),
                       "train_seg_loss": reduce_mean(totals["seg_loss"] / steps),
                       "train_cls_loss": reduce_mean(totals["cls_loss"] / steps),
                       "train_dice": reduce_mean(totals["dice"] / steps), "skipped_steps": totals["skipped_steps"],
                       **val, **peak}
            self.tracker.log(metrics, step=self.global_step)  # the epoch's row, then its checkpoint
            if self.is_main:
                self._save(epoch, improved)
                print(f"epoch {epoch + 1:3d} | loss {metrics['train_loss']:.4f} | train dice {metrics['train_dice']:.3f}"
                      f" | val dice automatic {val['val_dice_automatic']:.3f}, 1 click {val['val_dice_1click']:.3f},"
                      f" {cfg.val_clicks} clicks {val['val_dice_nclicks']:.3f} (IoU {val['val_iou']:.3f},"
                      f" AUC {val['val_auc']:.3f}) | lr {self.base_lr():.2e} | best {cfg.select_best_by}"
                      f" {self.best[0]:.3f} @ {self.best_epoch} | " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
            if self.epochs_since_best >= cfg.patience:
                stopped_early = True
                if self.is_main:
                    print(f"Early stopping: validation {cfg.select_best_by} has not improved for {cfg.patience} epochs")
                break
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break

        summary = self._summary(started, stopped_early, last_val, peak)
        if self.is_main:
            self.tracker.write_summary(summary)
        self.tracker.finish()
        return summary

    def _loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch["image"].to(self.device)
        labels = batch["label"].to(self.device)
        round_logits, ich_logit = self.train_forward(images, labels, generator)
        seg = torch.stack([self.seg_loss(logits.float(), labels) for logits in round_logits]).mean()
        cls = F.binary_cross_entropy_with_logits(ich_logit.float(), batch["ich"].to(self.device))
        with torch.no_grad():
            pred, truth = round_logits[-1] > 0, labels > 0.5
            dice = float(2 * (pred & truth).sum() / (pred.sum() + truth.sum()).clamp_min(1))
        return seg + self.cfg.cls_loss_weight * cls, {"seg_loss": float(seg.detach()), "cls_loss": float(cls.detach()),
                                                     "dice": dice}

    def seg_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return dice_ce_loss(logits, labels, self.dice_loss, self.cfg.ce_weight)

    # ------------------------------------------------------------------------------ validation
    def selection_score(self, val: dict[str, float]) -> tuple[float, float]:
        """(the --select_best_by metric, the metric that breaks its ties)."""
        chosen = val[f"val_{self.cfg.select_best_by}"]
        tie_break = val["val_dice_1click"] if self.cfg.select_best_by == "dice_automatic" else val["val_dice_automatic"]
        return (chosen, tie_break)

    @torch.no_grad()
    def validate(self, epoch: int) -> dict[str, float]:
        """Whole validation volumes by sliding windows: the automatic segmentation, then SAM-Med3D's
        interaction (a click from the error region per round, from an empty start). Dice means are
        over ICH-positive cases (over all when there are none); val_dice_all counts an empty automatic
        prediction on an ICH-negative case as 1. Clicks are seeded per case: any sharding gives the same."""
        self.model.eval()
        rows, panel = [], None
        for index in range(self.ctx.rank, len(self.val_set), self.ctx.world_size):
            item = self.val_set[index]
            if "reason" in item:
                self.runtime_skipped[item["case_id"]] = item["reason"]
                continue
            truth = item["label"][0].to(self.device) > 0.5
            rounds = interactive_refinement(self.model, item["image"][None].to(self.device), truth,
                                            self.cfg.val_clicks, torch.Generator().manual_seed(
                                                step_seed(self.cfg.seed, index)),
                                            overlap=SLIDING_WINDOW_OVERLAP, sw_batch_size=self.cfg.batch_size,
                                            amp=self.amp)
            masks = [r.logits[0, 0].cpu() > 0 for r in (rounds[0], rounds[1], rounds[-1])]
            automatic, one, last = (segmentation_metrics(m, truth.cpu(), item["spacing"]) for m in masks)
            rows.append([automatic["dice"], one["dice"], last["dice"], automatic["iou"], float(item["ich"]),
                         rounds[0].ich_probability])
            if panel is None and item["ich"]:
                panel = (item["case_id"], overlay_panel(item["image"][0], truth, masks[0]))
        table = all_gather_concat(torch.tensor(rows, dtype=torch.float64, device=self.device).reshape(-1, 6)).cpu()
        automatic, one, last, iou, ich, prob = table.T.numpy()
        positives = ich == 1

        def mean(values: np.ndarray) -> float:
            return float(values[positives].mean() if positives.any() else values.mean())

        val = {"val_dice_automatic": mean(automatic), "val_dice_1click": mean(one), "val_dice_nclicks": mean(last),
               "val_dice_all": float(automatic.mean()), "val_iou": mean(iou),
               "val_auc": float(roc_auc_score(ich, prob)) if 0 < positives.sum() < len(ich) else math.nan,
               "val_cases": int(len(automatic))}
        if self.cfg.log_images and panel is not None and (epoch + 1) % self.cfg.log_freq == 0:
            case_id, image = panel
            self.tracker.log_images("val_samples", {case_id: image}, step=self.global_step)
            save_png(self.output_dir / "samples" / f"epoch{epoch + 1:03d}_{case_id}.png", image)
        return val

    # ----------------------------------------------------------------------------- checkpoints
    def _save(self, epoch: int, improved: bool) -> None:
        payload = capture_training_state(
            model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, stepper=self.stepper,
            epoch=epoch + 1, step=self.global_step, best_metric=self.best[0],
            extra={"model_config": self.model_config, "preprocessing": self.preprocessing, "best": list(self.best),
                   "best_epoch": self.best_epoch, "epochs_since_best": self.epochs_since_best,
                   "runtime_skipped": self.runtime_skipped, "config": self.config})
        save_checkpoint(self.output_dir / "latest_model.pth", payload)
        if improved:
            save_checkpoint(self.output_dir / "best_model.pth", payload)
            save_checkpoint(self.output_dir / "sam_encoder.pth",
                            encoder_export(self.model, self.cfg.model_type, self.preprocessing))

    def _summary(self, started: float, stopped_early: bool, last_val: dict, peak: dict) -> dict[str, Any]:
        skipped_at_scan = self.train_stats["bad_case_reasons"] + self.val_stats["bad_case_reasons"]
        return {
            "select_best_by": self.cfg.select_best_by,
            "best_val_dice": self.best[0] if math.isfinite(self.best[0]) else None,
            "best_epoch": self.best_epoch, "epochs_completed": self.epochs_completed, "final_validation": last_val,
            "global_steps": self.global_step, "stopped_early": stopped_early,
            "wall_time_s": time.time() - started, "peak_memory": peak,
            "skipped_cases": len(skipped_at_scan) + len(self.runtime_skipped),
            "skipped_case_reasons": skipped_at_scan + [{"case_id": k, "reason": v}
                                                       for k, v in self.runtime_skipped.items()],
            "dataset": {"train": self.train_stats, "val": self.val_stats},
            "output_dir": str(self.output_dir),
        }

    def close(self) -> None:
        cleanup_distributed()


def choose_output_dir(cfg: TrainConfig, resume: ResumePoint | None) -> Path:
    """A resume continues in the checkpoint's folder (or --output_dir); a fresh run gets
    --output_dir, or `<name>_1`, ... when that holds another run, or outputs/<timestamp>."""
    if resume is not None:
        return choose_run_dir(resume=resume, output_dir=cfg.output_dir)
    requested = Path(cfg.output_dir) if cfg.output_dir else Path("outputs") / timestamp()
    return choose_run_dir(resume=None, output_dir=None, root=requested.parent, name=requested.name)
