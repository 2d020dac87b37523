"""Train the SigLIP2 dementia classifier with SAM, AdamW or Lion.

    python trainer.py --data_dir ../training_dset --optimizer_type sam --sam_rho 0.05 \
        --loss_type cross_entropy --batch_size 32 --num_epochs 100 --parser all

One run folder per run (inside --output_dir): config.json, metrics.jsonl, best_model.pth (chosen on
validation AUC), latest_model.pth (for --resume), predictions_<split>.csv, roc_<split>.png,
confusion_<split>.png and training_summary_<timestamp>.json. The decision threshold is chosen on
validation predictions and applied unchanged to test.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm
from transformers import AutoProcessor

from projects.siglip_sam_dementia.audio_features import LogMelCache, LogMelParams
from projects.siglip_sam_dementia.config import (
    ADAMW_LEARNING_RATE,
    ADAMW_WEIGHT_DECAY,
    TrainingConfig,
    parse_config,
    selected_languages,
)
from projects.siglip_sam_dementia.data_processor import DataError, DementiaCollator, build_datasets
from projects.siglip_sam_dementia.losses import build_loss, dementia_probability
from projects.siglip_sam_dementia.metrics import (
    choose_threshold,
    metrics_by_language,
    save_confusion_plot,
    save_roc_plot,
)
from projects.siglip_sam_dementia.model import DementiaClassifier, build_model
from shared.amp import AmpPolicy
from shared.checkpoint import (
    CheckpointError,
    capture_training_state,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    unwrap_model,
)
from shared.distributed import (
    barrier,
    cleanup_distributed,
    make_dataloader,
    set_loader_epoch,
    setup_distributed,
    wrap_model_ddp,
)
from shared.memory import MemoryMonitor
from shared.optim import build_optimizer, build_scheduler, resolve_lr_and_weight_decay
from shared.sam import OptimizationStep
from shared.seeding import seed_everything
from shared.tracking import RunTracker, create_run_dir

# Settings a resumed run must share with the run it continues (they define the weights' meaning).
MODEL_DEFINING_KEYS = ("model_name", "modality", "fusion", "loss_type", "optimizer_type", "sam_base")


def move_inputs(inputs: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def log_mel_cache_for(config: TrainingConfig) -> LogMelCache:
    params = LogMelParams(config.sample_rate, config.n_fft, config.hop_length, config.n_mels)
    return LogMelCache(config.cache_dir or Path(config.data_dir) / ".logmel_cache", params)


@torch.no_grad()
def predict_loader(model: torch.nn.Module, loader: DataLoader, amp: AmpPolicy, device: torch.device) -> pd.DataFrame:
    """speaker, language, probability, label for every recording of the loader."""
    model.eval()
    rows = []
    for batch in loader:
        with amp.autocast():
            logits = model(**move_inputs(batch["inputs"], device))
        probabilities = dementia_probability(logits).cpu().numpy()
        rows += [{"speaker": s, "language": lang, "probability": float(p), "label": int(y)}
                 for s, lang, p, y in zip(batch["speakers"], batch["languages"], probabilities, batch["labels"])]
    return pd.DataFrame(rows, columns=["speaker", "language", "probability", "label"])


def roc_auc_or_nan(frame: pd.DataFrame) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(frame["label"], frame["probability"])) if frame["label"].nunique() == 2 else math.nan


def resolve_run_dir(config: TrainingConfig, is_main: bool, is_distributed: bool) -> Path:
    if config.resume:
        resume_path = Path(config.resume)
        if not resume_path.is_file():
            raise SystemExit(f"--resume {resume_path}: file not found")
        return resume_path.parent
    run_dir = [str(create_run_dir(config.output_dir, config.run_name())) if is_main else None]
    if is_distributed:  # the timestamped name is made once, on rank 0
        torch.distributed.broadcast_object_list(run_dir, src=0)
    return Path(run_dir[0])


def check_resume_compatible(config: TrainingConfig, saved: dict, path: str) -> None:
    different = [k for k in MODEL_DEFINING_KEYS if saved.get(k) != getattr(config, k)]
    if different:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {getattr(config, k)!r}" for k in different)
        raise SystemExit(f"--resume {path}: settings differ from the run it continues ({details})")


def train(config: TrainingConfig) -> dict:
    ctx = setup_distributed()
    seed_everything(config.seed)
    config.learning_rate, config.weight_decay = resolve_lr_and_weight_decay(
        config.optimizer_type, config.sam_base, config.learning_rate, config.weight_decay,
        adamw_lr=ADAMW_LEARNING_RATE, adamw_weight_decay=ADAMW_WEIGHT_DECAY)
    run_dir = resolve_run_dir(config, ctx.is_main, ctx.is_distributed)
    device = ctx.device

    # ---- data: log-mels computed once into the cache, splits by speaker --------------------------
    cache = log_mel_cache_for(config)
    started = time.perf_counter()
    datasets, skipped = build_datasets(config, cache)
    feature_seconds = time.perf_counter() - started
    processor = AutoProcessor.from_pretrained(config.model_name)

    # ---- model, optimizer, schedule, step helper --------------------------------------------------
    model = build_model(config).to(device)
    collator = DementiaCollator(processor, config.modality, model.text_max_length, config.max_num_patches)
    train_loader = make_dataloader(datasets["train"], config.batch_size, shuffle=True, seed=config.seed,
                                   num_workers=config.num_workers, collate_fn=collator)
    eval_loaders = {name: DataLoader(dataset, batch_size=config.batch_size, shuffle=False, collate_fn=collator,
                                     num_workers=config.num_workers) for name, dataset in datasets.items()}
    optimizer = build_optimizer(config.optimizer_type, model, config.learning_rate, config.weight_decay,
                                sam_base=config.sam_base, sam_rho=config.sam_rho, sam_adaptive=config.sam_adaptive)
    steps_per_epoch = len(train_loader)
    total_steps = config.num_epochs * steps_per_epoch
    schedule = build_scheduler(optimizer, "cosine", total_steps=total_steps,
                               warmup_steps=int(config.warmup_ratio * total_steps))
    amp = AmpPolicy.create(device, config.mixed_precision)
    ddp_model = wrap_model_ddp(model, ctx)
    stepper = OptimizationStep(ddp_model, optimizer, amp, max_grad_norm=config.max_grad_norm)
    loss_module = build_loss(config.loss_type, config.focal_gamma, config.focal_alpha)
    memory = MemoryMonitor(device)

    start_epoch, step, best_auc, best_epoch = 0, 0, -math.inf, -1
    if config.resume:
        payload = load_checkpoint(config.resume)
        check_resume_compatible(config, (payload.get("extra") or {}).get("config", {}), config.resume)
        state = restore_training_state(payload, model=model, optimizer=optimizer, scheduler=schedule,
                                       stepper=stepper)
        start_epoch, step = state["epoch"], state["step"]
        best_auc = state["best_metric"] if state["best_metric"] is not None else -math.inf
        best_epoch = state["extra"].get("best_epoch", -1)
        print(f"resumed {config.resume} at epoch {start_epoch} (step {step})")

    tracker = RunTracker(run_dir, {**config.to_dict(), "run_dir": str(run_dir), "device": str(device),
                                   "amp": amp.describe(), "languages_used": selected_languages(config)},
                         use_wandb=config.use_wandb, wandb_project=config.wandb_project, run_name=run_dir.name,
                         tags=config.wandb_tags(), enabled=ctx.is_main)
    if ctx.is_main:
        print(f"run folder {run_dir} | {', '.join(f'{k}={len(v)}' for k, v in datasets.items())} recordings | "
              f"{len(skipped)} skipped | lr {config.learning_rate:g} wd {config.weight_decay:g} | {amp.describe()}")

    def loss_fn(batch: dict) -> torch.Tensor:
        logits = ddp_model(**move_inputs(batch["inputs"], device))
        return loss_module(logits, batch["labels"].to(device))

    # ---- training loop ----------------------------------------------------------------------------
    for epoch in range(start_epoch, config.num_epochs):
        model.train()
        set_loader_epoch(train_loader, epoch)
        train_loader.generator.manual_seed(config.seed * 1000 + epoch)  # a resumed epoch replays its order
        memory.reset_peak()
        epoch_start = time.perf_counter()
        data_seconds, losses, skipped_steps = 0.0, [], 0
        progress = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config.num_epochs}", leave=False,
                        disable=not ctx.is_main)
        waited_from = time.perf_counter()
        for batch in progress:
            data_seconds += time.perf_counter() - waited_from
            result = stepper.step(loss_fn, [batch])
            schedule.step_iteration()
            step += 1
            skipped_steps += int(result.skipped)
            losses.append(result.loss)
            progress.set_postfix(loss=f"{result.loss:.4f}", lr=f"{schedule.get_last_lr()[0]:.2e}")
            waited_from = time.perf_counter()
        train_seconds = time.perf_counter() - epoch_start
        schedule.step_epoch()

        val = predict_loader(model, eval_loaders["val"], amp, device)
        val_auc = roc_auc_or_nan(val)
        threshold = choose_threshold(val["label"].to_numpy(), val["probability"].to_numpy())
        val_accuracy = float(((val["probability"] >= threshold).astype(int) == val["label"]).mean())
        improved = val_auc > best_auc
        if improved:
            best_auc, best_epoch = val_auc, epoch
            if ctx.is_main:
                save_checkpoint(run_dir / "best_model.pth", {
                    "model_state_dict": unwrap_model(model).state_dict(), "config": config.to_dict(),
                    "threshold": threshold, "epoch": epoch, "val_auc": val_auc})
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_auc": val_auc,
               "val_accuracy": val_accuracy, "val_threshold": threshold, "lr": schedule.get_last_lr()[0],
               "skipped_steps": skipped_steps, "data_time_s": data_seconds,
               "train_samples_per_s": len(datasets["train"]) / max(train_seconds, 1e-9),
               "epoch_time_s": time.perf_counter() - epoch_start, **memory.peak()}
        tracker.log(row, step)
        if ctx.is_main:
            save_checkpoint(run_dir / "latest_model.pth", capture_training_state(
                model=model, optimizer=optimizer, scheduler=schedule, stepper=stepper, epoch=epoch + 1, step=step,
                best_metric=best_auc, extra={"config": config.to_dict(), "best_epoch": best_epoch}))
            print(f"epoch {epoch + 1}: train_loss {row['train_loss']:.4f} val_auc {val_auc:.4f} "
                  f"val_acc {val_accuracy:.4f} lr {row['lr']:.2e} data {data_seconds:.2f}s"
                  + (" *best*" if improved else ""))

    # ---- final evaluation with the best model and the validation threshold -----------------------
    summary = evaluate_best_model(config, model, eval_loaders, amp, device, run_dir, ctx.is_main)
    summary.update({
        "run_dir": str(run_dir), "run_name": run_dir.name, "best_epoch": best_epoch + 1, "epochs": config.num_epochs,
        "optimizer_type": config.optimizer_type, "loss_type": config.loss_type, "parser": config.parser,
        "modality": config.modality, "languages": selected_languages(config),
        "train_languages": config.train_languages if config.parser == "cross_lingual" else None,
        "test_languages": config.test_languages if config.parser == "cross_lingual" else None,
        "learning_rate": config.learning_rate, "weight_decay": config.weight_decay,
        "num_recordings": {name: len(dataset) for name, dataset in datasets.items()},
        "skipped_samples": len(skipped), "skipped": [vars(s) for s in skipped],
        "feature_time_s": feature_seconds, "cache_hits": cache.hits, "cache_misses": cache.misses,
    })
    tracker.write_summary(summary)
    tracker.finish()
    if ctx.is_main:
        print(json.dumps({k: summary[k] for k in ("train_acc", "test_acc", "generalization_gap", "test_auc",
                                                   "threshold")}))
    cleanup_distributed()
    return summary


def evaluate_best_model(config: TrainingConfig, model: DementiaClassifier, eval_loaders: dict, amp: AmpPolicy,
                        device: torch.device, run_dir: Path, is_main: bool) -> dict:
    barrier()  # rank 0 wrote best_model.pth
    best_path = run_dir / "best_model.pth"
    if not best_path.is_file():
        raise CheckpointError(f"{best_path}: no best model was saved (did validation ever produce an AUC?)")
    best = load_checkpoint(best_path)
    model.load_state_dict(best["model_state_dict"], strict=True)
    threshold = float(best["threshold"])  # chosen on validation, never re-tuned on test
    summary: dict = {"threshold": threshold, "metrics": {}}
    for split, loader in eval_loaders.items():
        frame = predict_loader(model, loader, amp, device)
        per_language = metrics_by_language(frame, threshold)
        summary["metrics"][split] = per_language
        if is_main:
            frame.assign(split=split, prediction=(frame["probability"] >= threshold).astype(int)).to_csv(
                run_dir / f"predictions_{split}.csv", index=False)
            labels, probabilities = frame["label"].to_numpy(), frame["probability"].to_numpy()
            save_roc_plot(labels, probabilities, run_dir / f"roc_{split}.png", f"ROC ({split})")
            save_confusion_plot(labels, probabilities, threshold, run_dir / f"confusion_{split}.png", split)
    summary["train_acc"] = summary["metrics"]["train"]["all"]["accuracy"]
    summary["test_acc"] = summary["metrics"]["test"]["all"]["accuracy"]
    summary["test_auc"] = summary["metrics"]["test"]["all"]["roc_auc"]
    summary["val_auc"] = summary["metrics"]["val"]["all"]["roc_auc"]
    summary["generalization_gap"] = summary["train_acc"] - summary["test_acc"]
    return summary


def main(argv: list[str] | None = None) -> dict:
    config = parse_config(argv)
    try:
        return train(config)
    except (DataError, CheckpointError) as error:  # one line naming the file, no traceback
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
