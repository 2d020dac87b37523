"""Train the SigLIP2 dementia classifier with SAM, AdamW or Lion.

    python trainer.py --data_dir ../training_dset --optimizer_type sam --sam_rho 0.05 \
        --loss_type cross_entropy --batch_size 32 --num_epochs 100 --parser all

One run folder per run (inside --output_dir): config.json, metrics.jsonl (a row per step: loss and
the lr it used; a row per epoch: validation scores), best_model.pth (chosen by --select_by on
validation, ties to the lower validation loss), latest_model.pth (for --resume),
predictions_<split>.csv, roc_<split>.png, confusion_<split>.png and training_summary_<timestamp>.json.
The decision threshold is chosen on validation predictions and applied unchanged to test.

The run's life (inputs validated before the folder exists, the resume check, metric rows past the
checkpoint dropped) is shared.run's.
"""

from __future__ import annotations

import json
import shutil
import sys
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
from projects.siglip_sam_dementia.data_processor import (
    DataError,
    DementiaCollator,
    build_datasets,
    discover_languages,
)
from projects.siglip_sam_dementia.losses import auto_class_weights, build_loss, dementia_probability
from projects.siglip_sam_dementia.metrics import (
    choose_threshold,
    metrics_by_language,
    save_confusion_plot,
    save_roc_plot,
)
from projects.siglip_sam_dementia.model import DementiaClassifier, build_model
from projects.siglip_sam_dementia.selection import ModelSelection, selection_rule, validation_scores
from shared.amp import AmpPolicy
from shared.checkpoint import (
    CheckpointError,
    capture_training_state,
    load_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from shared.cli_errors import run_reporting_errors
from shared.distributed import (
    barrier,
    broadcast_from_main,
    cleanup_distributed,
    make_dataloader,
    set_loader_epoch,
    setup_distributed,
    wrap_model_ddp,
)
from shared.hub import ModelNotFoundError, from_pretrained_or_error
from shared.memory import MemoryMonitor
from shared.optim import build_optimizer, build_scheduler, resolve_lr_and_weight_decay
from shared.run import RunError, choose_run_dir, load_resume, open_run
from shared.sam import OptimizationStep
from shared.seeding import seed_everything

DEFAULT_OUTPUT_ROOT = "./outputs"
# Config keys a --resume may change (shared.run.load_resume): where the same data, cache and runs
# live on this machine, workers, logging, the device, and gradient checkpointing (the same gradients,
# less memory: a resume on a smaller GPU may need it). Everything else is the experiment; the epoch
# count too, since the cosine schedule is laid out over all epochs (hence may_increase=()).
RESUME_MAY_CHANGE = ("data_dir", "cache_dir", "output_dir", "resume", "num_workers", "use_wandb", "wandb_project",
                     "device", "gradient_checkpointing")
# The user's errors: one line `error: ...`, exit code 2 (shared.cli_errors).
EXPECTED_ERRORS = (DataError, CheckpointError, RunError, ModelNotFoundError)


def move_inputs(inputs: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def log_mel_cache_for(config: TrainingConfig) -> LogMelCache | None:
    """The log-mel cache, or None for text-only runs (which read no audio)."""
    if config.modality == "text":
        return None
    params = LogMelParams(config.sample_rate, config.n_fft, config.hop_length, config.n_mels)
    return LogMelCache(config.cache_dir or Path(config.data_dir) / ".logmel_cache", params)


@torch.no_grad()
def predict_loader(model: torch.nn.Module, loader: DataLoader, amp: AmpPolicy,
                   device: torch.device) -> tuple[pd.DataFrame, torch.Tensor]:
    """(speaker, language, probability, label for every recording, its logits (N, C) float32 on CPU)."""
    model.eval()
    rows, logits_seen = [], []
    for batch in loader:
        with amp.autocast():
            logits = model(**move_inputs(batch["inputs"], device))
        logits_seen.append(logits.float().cpu())
        probabilities = dementia_probability(logits).cpu().numpy()
        rows += [{"speaker": s, "language": lang, "probability": float(p), "label": int(y)}
                 for s, lang, p, y in zip(batch["speakers"], batch["languages"], probabilities, batch["labels"])]
    frame = pd.DataFrame(rows, columns=["speaker", "language", "probability", "label"])
    return frame, torch.cat(logits_seen) if logits_seen else torch.empty(0)


def experiment_config(config: TrainingConfig, languages: list[str], amp: AmpPolicy, device: torch.device) -> dict:
    """Every resolved setting: config.json, and the config every resumable checkpoint carries."""
    return {**config.to_dict(), "languages_used": languages, "amp": amp.describe(), "device": str(device)}


def resolve_run_dir(config: TrainingConfig, resume, is_main: bool) -> Path:
    """A fresh run gets a new folder named after the run inside --output_dir (default ./outputs). A
    resume continues in its checkpoint's folder when --output_dir is absent or is the folder that run
    was made in; given another --output_dir, it continues in a new folder there that starts with a
    copy of the run's best_model.pth and metrics.jsonl, so the run's history stays in one place."""
    if not is_main:
        return broadcast_from_main(None)
    root = Path(config.output_dir or DEFAULT_OUTPUT_ROOT)
    if resume is None:
        run_dir = choose_run_dir(resume=None, output_dir=None, root=root, name=config.run_name())
    else:
        run_dir = choose_run_dir(resume=resume, output_dir=None)
        if config.output_dir is not None and root.resolve() != run_dir.parent:
            previous = run_dir
            run_dir = choose_run_dir(resume=None, output_dir=None, root=root, name=previous.name)
            run_dir.mkdir(parents=True, exist_ok=True)
            for name in ("best_model.pth", "metrics.jsonl"):
                if (previous / name).is_file():
                    shutil.copy2(previous / name, run_dir / name)
    return broadcast_from_main(run_dir)


def train(config: TrainingConfig) -> dict:
    ctx = setup_distributed()
    seed_everything(config.seed)
    config.learning_rate, config.weight_decay = resolve_lr_and_weight_decay(
        config.optimizer_type, config.sam_base, config.learning_rate, config.weight_decay,
        adamw_lr=ADAMW_LEARNING_RATE, adamw_weight_decay=ADAMW_WEIGHT_DECAY)
    device = ctx.device

    # ---- inputs first (data, model name, resume checkpoint); nothing is written before they pass ---
    if not Path(config.data_dir).is_dir():
        raise DataError(f"{config.data_dir}: data folder does not exist")
    config.data_dir = str(Path(config.data_dir).resolve())  # config.json names the folder, however it was written
    languages = selected_languages(config, discover_languages(config.data_dir))
    cache = log_mel_cache_for(config)
    started = time.perf_counter()
    datasets, skipped = build_datasets(config, cache, languages)  # log-mels cached, splits by speaker
    feature_seconds = time.perf_counter() - started
    processor = from_pretrained_or_error(AutoProcessor.from_pretrained, config.model_name)
    model = build_model(config).to(device)
    amp = AmpPolicy.create(device, config.mixed_precision)
    experiment = experiment_config(config, languages, amp, device)
    resume = (load_resume(config.resume, experiment, may_change=RESUME_MAY_CHANGE, may_increase=())
              if config.resume else None)
    run_dir = resolve_run_dir(config, resume, ctx.is_main)

    # ---- data loaders, optimizer, schedule, step helper, loss --------------------------------------
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
    ddp_model = wrap_model_ddp(model, ctx)
    stepper = OptimizationStep(ddp_model, optimizer, amp, max_grad_norm=config.max_grad_norm)
    class_weights = (auto_class_weights([s.label for s in datasets["train"].samples])
                     if config.class_weights == "auto" else None)
    loss_module = build_loss(config.loss_type, config.focal_gamma, config.focal_alpha, class_weights).to(device)
    selection = ModelSelection(config.select_by, config.early_stopping_patience)
    memory = MemoryMonitor(device)

    start_epoch, step = 0, 0
    if resume is not None:
        state = resume.restore(model=model, optimizer=optimizer, scheduler=schedule, stepper=stepper)
        start_epoch, step = state["epoch"], state["step"]
        selection.load_state_dict(state["extra"]["selection"])
        if ctx.is_main:
            print(f"resumed {resume.checkpoint} at epoch {start_epoch} (step {step})")
    tracker = open_run(run_dir, experiment, resume=resume, is_main=ctx.is_main, use_wandb=config.use_wandb,
                       wandb_project=config.wandb_project, run_name=run_dir.name, tags=config.wandb_tags())
    if ctx.is_main:
        print(f"run folder {run_dir} | {', '.join(f'{k}={len(v)}' for k, v in datasets.items())} recordings | "
              f"{len(skipped)} skipped | lr {config.learning_rate:g} wd {config.weight_decay:g} | {amp.describe()} | "
              f"select by {selection_rule(config.select_by)}")

    def loss_fn(batch: dict) -> torch.Tensor:
        logits = ddp_model(**move_inputs(batch["inputs"], device))
        return loss_module(logits, batch["labels"].to(device))

    # ---- training loop ----------------------------------------------------------------------------
    epochs_trained = start_epoch
    for epoch in range(start_epoch, config.num_epochs):
        if selection.stopped_early:
            break
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
            lr_used = schedule.get_last_lr()[0]  # the base lr of this step (all groups share it)
            result = stepper.step(loss_fn, [batch])
            schedule.step_iteration()
            step += 1
            skipped_steps += int(result.skipped)
            losses.append(result.loss)
            tracker.log({"epoch": epoch + 1, "loss": result.loss, "lr": lr_used}, step)
            progress.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr_used:.2e}")
            waited_from = time.perf_counter()
        train_seconds = time.perf_counter() - epoch_start
        schedule.step_epoch()

        val, val_logits = predict_loader(model, eval_loaders["val"], amp, device)
        with torch.no_grad():
            val_loss = float(loss_module(val_logits.to(device), torch.tensor(val["label"].tolist(), device=device)))
        threshold = choose_threshold(val["label"].to_numpy(), val["probability"].to_numpy())
        scores = validation_scores(val, threshold, val_loss)
        improved = selection.update(epoch, scores)
        if improved and ctx.is_main:
            save_checkpoint(run_dir / "best_model.pth", {
                "model_state_dict": unwrap_model(model).state_dict(), "config": config.to_dict(),
                "threshold": threshold, "epoch": epoch, "select_by": config.select_by, "languages_used": languages,
                **scores})
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_threshold": threshold,
               **{k if k.startswith("val_") else f"val_{k}": v for k, v in scores.items()},
               "skipped_steps": skipped_steps, "data_time_s": data_seconds,
               "train_samples_per_s": len(datasets["train"]) / max(train_seconds, 1e-9),
               "epoch_time_s": time.perf_counter() - epoch_start, **memory.peak()}
        tracker.log(row, step)  # the epoch's row, then its checkpoint
        epochs_trained = epoch + 1
        if ctx.is_main:
            save_checkpoint(run_dir / "latest_model.pth", capture_training_state(
                model=model, optimizer=optimizer, scheduler=schedule, stepper=stepper, epoch=epoch + 1, step=step,
                best_metric=selection.best.score, extra={"config": experiment, "selection": selection.state_dict()}))
            print(f"epoch {epoch + 1}: train_loss {row['train_loss']:.4f} val_loss {val_loss:.4f} "
                  f"val_auc {scores['val_auc']:.4f} val_acc {scores['val_accuracy']:.4f} data {data_seconds:.2f}s"
                  + (" *best*" if improved else "")
                  + (f" | early stop: {selection.stale_epochs} epochs without a better {config.select_by}"
                     if selection.stopped_early else ""))

    # ---- final evaluation with the best model and the validation threshold -----------------------
    summary = evaluate_best_model(config, model, eval_loaders, amp, device, run_dir, ctx.is_main)
    summary.update({
        "run_dir": str(run_dir), "run_name": run_dir.name, "best_epoch": selection.best.epoch + 1,
        "epochs": config.num_epochs, "epochs_trained": epochs_trained,
        "stopped_early": selection.stopped_early, "select_by": config.select_by,
        "selection_rule": selection_rule(config.select_by),
        "class_weights": class_weights.tolist() if class_weights is not None else None,
        "optimizer_type": config.optimizer_type, "loss_type": config.loss_type, "parser": config.parser,
        "modality": config.modality, "languages": languages,
        "train_languages": config.train_languages if config.parser == "cross_lingual" else None,
        "test_languages": config.test_languages if config.parser == "cross_lingual" else None,
        "learning_rate": config.learning_rate, "weight_decay": config.weight_decay,
        "num_recordings": {name: len(dataset) for name, dataset in datasets.items()},
        "skipped_samples": len(skipped), "skipped": [vars(s) for s in skipped],
        "feature_time_s": feature_seconds,
        "cache_hits": cache.hits if cache else 0, "cache_misses": cache.misses if cache else 0,
    })
    tracker.write_summary(summary)
    tracker.finish()
    if ctx.is_main:
        print(json.dumps({k: summary[k] for k in ("train_acc", "test_acc", "generalization_gap", "test_auc",
                                                   "threshold", "best_epoch")}))
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
        frame, _ = predict_loader(model, loader, amp, device)
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
    """Train from command-line arguments; returns the training summary (the user's errors raise)."""
    return train(parse_config(argv))


def cli(argv: list[str] | None = None) -> int:
    """The command line: the user's errors become `error: <file>: <problem>` and exit code 2."""
    return run_reporting_errors(lambda: main(argv), EXPECTED_ERRORS)


if __name__ == "__main__":
    sys.exit(cli())
