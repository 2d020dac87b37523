"""Train DFormerv2 (+ Semantic Alignment Module) for RGB-D semantic segmentation.

    python projects/dformer_sam_attention/utils/train.py --config local_configs.NYUDepthv2.DFormerv2_S
    torchrun --nproc_per_node 4 projects/dformer_sam_attention/utils/train.py --config ... --syncbn

The loop (nanoGPT-style, all in `train`): class text embeddings once → model (every module built
here, before the optimizer) → AdamW (or SAM) with warm-up + poly → per step: forward, loss,
backward, update (shared.sam.OptimizationStep), temperature clamp, LR step → per epoch: validation
mIoU on images held out of train.txt, `latest_model.pth` (full resume state) and `best_model.pth`
→ at the end the best checkpoint is evaluated once on the test split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from projects.dformer_sam_attention.local_configs.config import SegConfig, load_config
from projects.dformer_sam_attention.models.blocks.semantic_alignment import (
    AlignmentAttention,
    AttentionTemperature,
    clamp_temperatures_,
)
from projects.dformer_sam_attention.models.builder import (
    DECODERS,
    ModelSettings,
    build_model,
    parse_stages,
    settings_to_dict,
)
from projects.dformer_sam_attention.models.text_embeddings import ClassTextEmbedder
from projects.dformer_sam_attention.utils.dataloader.dataloader import get_eval_loader, get_train_loader
from projects.dformer_sam_attention.utils.dataloader.transforms import IGNORE_INDEX
from projects.dformer_sam_attention.utils.eval import evaluate
from projects.dformer_sam_attention.utils.metrics import per_class_table
from shared.amp import AmpPolicy
from shared.checkpoint import (
    capture_training_state,
    load_model_state,
    restore_training_state,
    save_checkpoint,
    unwrap_model,
)
from shared.distributed import (
    DistributedContext,
    barrier,
    cleanup_distributed,
    reduce_mean,
    set_loader_epoch,
    setup_distributed,
    wrap_model_ddp,
)
from shared.optim import build_optimizer, build_scheduler
from shared.sam import OptimizationStep
from shared.seeding import seed_everything
from shared.tracking import RunTracker, create_run_dir, timestamp


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", required=True, help="e.g. local_configs.NYUDepthv2.DFormerv2_S, or a .py path")
    p.add_argument("--dataset_path", default=None, help="data root (default: the config's)")
    p.add_argument("--checkpoint_dir", default="runs/dformer_sam_attention", help="folder that holds the runs")
    p.add_argument("--resume", default=None, help="latest_model.pth of a run to continue (in its folder)")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default: config nepochs)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: config seed)")
    p.add_argument("--pretrained_model", default=None,
                   help="ImageNet DFormerv2 weights for the backbone; '' trains from scratch (default: config)")
    # text guidance and the Semantic Alignment Module
    p.add_argument("--text_encoder", default=None,
                   help="transformers CLIP/SigLIP model (name or folder) for the class-name embeddings")
    p.add_argument("--enable-text-guidance", dest="enable_text_guidance", default=True,
                   action=argparse.BooleanOptionalAction,
                   help="alignment modules and text logits; --no-enable-text-guidance is plain DFormerv2 + head")
    p.add_argument("--sam-enc-stages", dest="sam_enc_stages", default="0,1,2,3",
                   help="encoder stages followed by an alignment module; '' for none (decoder-only)")
    p.add_argument("--decoder", choices=DECODERS, default=None, help="decoder head (default: config)")
    p.add_argument("--sam-decoder-use-cosine", dest="sam_decoder_use_cosine", default=True,
                   action=argparse.BooleanOptionalAction, help="decoder-side attention on L2-normalised Q, K")
    p.add_argument("--sam-decoder-learnable-temp", dest="sam_decoder_learnable_temp", default=True,
                   action=argparse.BooleanOptionalAction, help="decoder-side temperature s = exp(θ) is learned")
    p.add_argument("--sam-decoder-logit-init", dest="sam_decoder_logit_init", type=float, default=14.285714,
                   help="decoder-side temperature multiplier s at initialisation")
    p.add_argument("--sam-encoder-use-cosine", dest="sam_encoder_use_cosine", default=False,
                   action=argparse.BooleanOptionalAction, help="encoder-side attention on L2-normalised Q, K")
    p.add_argument("--sam-encoder-learnable-temp", dest="sam_encoder_learnable_temp", default=False,
                   action=argparse.BooleanOptionalAction, help="encoder-side temperature s = exp(θ) is learned")
    p.add_argument("--sam-encoder-logit-init", dest="sam_encoder_logit_init", type=float, default=1.0,
                   help="encoder-side temperature multiplier s at initialisation")
    # optimisation
    p.add_argument("--optimizer_type", choices=("adamw", "sam"), default="adamw",
                   help="AdamW, or Sharpness-Aware Minimization around AdamW (two passes per step)")
    p.add_argument("--sam_rho", type=float, default=0.05, help="SAM neighbourhood radius")
    p.add_argument("--amp", default=True, action=argparse.BooleanOptionalAction,
                   help="mixed precision (bf16, or fp16 + GradScaler on GPUs without bf16)")
    p.add_argument("--syncbn", default=False, action=argparse.BooleanOptionalAction,
                   help="SyncBatchNorm across processes (only under torchrun; plain BatchNorm otherwise)")
    # data and evaluation
    p.add_argument("--gt_transform", default=None, action=argparse.BooleanOptionalAction,
                   help="labels − 1 with 0 → ignore (255), as upstream NYU (default: config)")
    p.add_argument("--skip_bad_samples", default=False, action=argparse.BooleanOptionalAction,
                   help="leave out (and count) bad samples instead of stopping at the first")
    p.add_argument("--val_fraction", type=float, default=0.1,
                   help="share of train.txt images held out to validate and choose checkpoints; "
                        "0 validates on test.txt (the upstream protocol)")
    p.add_argument("--mst", default=False, action=argparse.BooleanOptionalAction,
                   help="validate multi-scale (config eval_scale_array) + flip")
    p.add_argument("--sliding", default=False, action=argparse.BooleanOptionalAction,
                   help="validate with sliding windows of config eval_crop_size")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.sam_enc_stages = parse_stages(args.sam_enc_stages)
    except ValueError as error:
        parser.error(f"--sam-enc-stages: {error}")
    for flag in ("sam_decoder_logit_init", "sam_encoder_logit_init"):
        value = getattr(args, flag)
        if not 0.01 <= value <= 100:
            parser.error(f"--{flag.replace('_', '-')} must lie in [0.01, 100], got {value}")
    if not 0 <= args.val_fraction < 1:
        parser.error(f"--val_fraction must lie in [0, 1), got {args.val_fraction}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be ≥ 1, got {args.epochs}")
    if args.sam_rho < 0:
        parser.error(f"--sam_rho must be ≥ 0, got {args.sam_rho}")
    return args


def resolve_config(args: argparse.Namespace) -> SegConfig:
    config = load_config(args.config)
    overrides = {"dataset_path": args.dataset_path, "nepochs": args.epochs, "seed": args.seed,
                 "decoder": args.decoder, "text_encoder": args.text_encoder, "gt_transform": args.gt_transform,
                 "pretrained_model": args.pretrained_model}
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def model_settings(args: argparse.Namespace, config: SegConfig, text_dim: int) -> ModelSettings:
    return ModelSettings(
        backbone=config.backbone, decoder=config.decoder, num_classes=config.num_classes,
        decoder_embed_dim=config.decoder_embed_dim, decoder_align_heads=config.decoder_align_heads,
        text_embed_dim=config.text_embed_dim, ham_rank=config.ham_rank, drop_path_rate=config.drop_path_rate,
        text_guidance=args.enable_text_guidance, text_dim=text_dim, sam_enc_stages=args.sam_enc_stages,
        decoder_attention=AlignmentAttention(args.sam_decoder_use_cosine, args.sam_decoder_learnable_temp,
                                             args.sam_decoder_logit_init),
        encoder_attention=AlignmentAttention(args.sam_encoder_use_cosine, args.sam_encoder_learnable_temp,
                                             args.sam_encoder_logit_init),
    )


def class_text_embeddings(config: SegConfig, cache_dir: Path, is_main: bool) -> torch.Tensor:
    """Rank 0 runs the text tower once and caches; the other ranks read the cache after a barrier."""
    embedder = ClassTextEmbedder(config.text_encoder, cache_dir=cache_dir, template=config.text_template)
    if is_main:
        embeddings = embedder.encode(config.class_names)
    barrier()
    if not is_main:
        embeddings = embedder.encode(config.class_names)
    return embeddings


def use_sync_batchnorm(requested: bool, ctx: DistributedContext) -> bool:
    """SyncBatchNorm only helps (and only runs) across several GPU processes."""
    return requested and ctx.is_distributed and ctx.device.type == "cuda"


def temperatures(model: nn.Module) -> dict[str, float]:
    return {name or "temperature": float(module().detach()) for name, module in unwrap_model(model).named_modules()
            if isinstance(module, AttentionTemperature)}


def train(args: argparse.Namespace) -> dict:
    config = resolve_config(args)
    ctx = setup_distributed()
    seed_everything(config.seed)
    device = ctx.device

    # run folder: a resumed run continues in its own folder
    if args.resume:
        run_dir = Path(args.resume).parent
    elif ctx.is_main:
        run_dir = create_run_dir(args.checkpoint_dir, f"{config.dataset_name}_{config.backbone}_{timestamp()}")
    if ctx.is_distributed and not args.resume:
        run_dirs = [str(run_dir) if ctx.is_main else None]
        torch.distributed.broadcast_object_list(run_dirs, src=0)
        run_dir = Path(run_dirs[0])

    # data: checkpoints are chosen on images held out of train.txt; test.txt is only evaluated
    val_split = "val" if args.val_fraction > 0 else "test"
    if val_split == "test" and ctx.is_main:
        print("--val_fraction 0: validating and choosing checkpoints on the test split (upstream protocol)")
    train_loader, train_set = get_train_loader(config, args.skip_bad_samples, config.seed, args.val_fraction)
    val_loader, val_set = get_eval_loader(config, val_split, args.skip_bad_samples, config.seed, args.val_fraction)
    test_loader, test_set = (get_eval_loader(config, "test", args.skip_bad_samples, config.seed)
                             if val_split == "val" else (val_loader, val_set))

    # model: text embeddings first (their width sizes the alignment modules), then every module
    text = None
    if args.enable_text_guidance:
        text = class_text_embeddings(config, Path(args.checkpoint_dir) / "text_cache", ctx.is_main)
    settings = model_settings(args, config, text_dim=text.shape[1] if text is not None else 512)
    if config.pretrained_model and not Path(config.pretrained_model).is_file():
        raise FileNotFoundError(f"{config.pretrained_model}: pretrained backbone weights not found "
                                "(pass --pretrained_model '' to train from scratch)")
    model = build_model(settings, text, pretrained_backbone=config.pretrained_model or None).to(device)
    sync_bn = use_sync_batchnorm(args.syncbn, ctx)
    if args.syncbn and not sync_bn and ctx.is_main:
        print("--syncbn needs torchrun on GPUs (SyncBatchNorm has no CPU kernel): using plain BatchNorm")
    ddp_model = wrap_model_ddp(model, ctx, sync_batchnorm=sync_bn)

    # optimisation: AdamW (or SAM around AdamW), warm-up then poly, per optimizer step
    optimizer = build_optimizer("sam" if args.optimizer_type == "sam" else "adamw", unwrap_model(ddp_model),
                                config.lr, config.weight_decay, sam_base="adamw", sam_rho=args.sam_rho)
    steps_per_epoch = len(train_loader)
    schedule = build_scheduler(optimizer, "poly", total_steps=config.nepochs * steps_per_epoch,
                               warmup_steps=config.warm_up_epoch * steps_per_epoch, poly_power=config.lr_power)
    amp = AmpPolicy.create(device, args.amp)
    stepper = OptimizationStep(ddp_model, optimizer, amp)

    start_epoch, step, best_miou = 0, 0, -1.0
    if args.resume:
        state = restore_training_state(args.resume, model=ddp_model, optimizer=optimizer, scheduler=schedule,
                                       stepper=stepper)
        start_epoch, step = state["epoch"], state["step"]
        best_miou = state["best_metric"] if state["best_metric"] is not None else -1.0

    run_config = {"config": dataclasses.asdict(config), "args": vars(args), "model": settings_to_dict(settings),
                  "amp": amp.describe(), "world_size": ctx.world_size}
    tracker = RunTracker(run_dir, run_config, enabled=ctx.is_main)
    if ctx.is_main:
        print(f"run folder {run_dir}; {sum(p.numel() for p in model.parameters()) / 1e6:.3f}M parameters; "
              f"{amp.describe()}")

    def loss_fn(batch: dict) -> torch.Tensor:
        logits = ddp_model(batch["rgb"].to(device), batch["depth"].to(device))
        return F.cross_entropy(logits.float(), batch["label"].to(device), ignore_index=IGNORE_INDEX)

    def checkpoint_payload(epoch: int, miou: float | None) -> dict:
        return {"model_state_dict": model.state_dict(), "model_settings": settings_to_dict(settings),
                "config": dataclasses.asdict(config), "epoch": epoch, "val_miou": miou}

    val = None
    for epoch in range(start_epoch, config.nepochs):
        ddp_model.train()
        train_set.set_epoch(epoch)
        set_loader_epoch(train_loader, epoch)
        train_loader.generator.manual_seed(config.seed * 1000 + epoch)  # the order of epoch e depends on e only
        losses = []
        progress = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config.nepochs}", leave=False,
                        disable=not ctx.is_main)
        for batch in progress:
            result = stepper.step(loss_fn, [batch])
            clamp_temperatures_(model)
            schedule.step_iteration()
            step += 1
            losses.append(result.loss)
            lr = schedule.get_last_lr()[0]
            progress.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr:.2e}")
            tracker.log({"train_loss": result.loss, "lr": lr, "skipped": result.skipped}, step)

        val = evaluate(unwrap_model(ddp_model), val_loader, config, device, mst=args.mst, sliding=args.sliding, amp=amp,
                       progress=ctx.is_main)
        train_loss = reduce_mean(sum(losses) / max(len(losses), 1))
        is_best = val["miou"] > best_miou
        best_miou = max(best_miou, val["miou"])
        tracker.log({"epoch": epoch + 1, "epoch_train_loss": train_loss, "val_miou": val["miou"],
                     "val_pixel_acc": val["pixel_acc"], **{f"temp/{k}": v for k, v in temperatures(model).items()}},
                    step)
        if ctx.is_main:
            print(f"epoch {epoch + 1}/{config.nepochs}: train_loss {train_loss:.4f} val_miou {val['miou']:.4f} "
                  f"val_pixel_acc {val['pixel_acc']:.4f} best_miou {best_miou:.4f}")
            if is_best:
                save_checkpoint(run_dir / "best_model.pth", checkpoint_payload(epoch + 1, val["miou"]))
            state = capture_training_state(model=ddp_model, optimizer=optimizer, scheduler=schedule, stepper=stepper,
                                           epoch=epoch + 1, step=step, best_metric=best_miou)
            state.update({k: v for k, v in checkpoint_payload(epoch + 1, val["miou"]).items()
                          if k not in ("model_state_dict", "epoch")})
            save_checkpoint(run_dir / "latest_model.pth", state)

    final_temperatures = temperatures(model)  # before the best checkpoint replaces the final weights
    # the chosen checkpoint, evaluated once on the test split
    test = None
    barrier()
    if (run_dir / "best_model.pth").is_file():
        load_model_state(model, run_dir / "best_model.pth", strict=True)
        test = evaluate(unwrap_model(ddp_model), test_loader, config, device, mst=args.mst, sliding=args.sliding, amp=amp,
                        progress=ctx.is_main)
    table = per_class_table(test["per_class_iou"], config.class_names) if test else None
    summary = {
        "run_dir": str(run_dir), "dataset": config.dataset_name, "backbone": config.backbone,
        "decoder": config.decoder, "text_guidance": args.enable_text_guidance,
        "sam_enc_stages": list(args.sam_enc_stages), "optimizer_type": args.optimizer_type,
        "epochs": config.nepochs, "steps": step, "validation_split": val_split, "best_val_miou": best_miou,
        "final_val_miou": val["miou"] if val else None, "final_val_pixel_acc": val["pixel_acc"] if val else None,
        "test_miou": test["miou"] if test else None, "test_pixel_acc": test["pixel_acc"] if test else None,
        "per_class_iou": table.to_dict(orient="records") if test else None,
        "temperatures": final_temperatures,
        "skipped_samples": {"train": train_set.skipped, "val": val_set.skipped if val_split == "val" else [],
                            "test": test_set.skipped},
    }
    tracker.write_summary(summary)
    tracker.finish()
    if ctx.is_main and test is not None:
        print(f"best checkpoint on the test split:\n{table.to_string(index=False)}")
        print(json.dumps({k: summary[k] for k in ("best_val_miou", "test_miou", "test_pixel_acc", "temperatures")}))
    cleanup_distributed()
    return summary


def main(argv: list[str] | None = None) -> dict:
    return train(parse_args(argv))


if __name__ == "__main__":
    from projects.dformer_sam_attention.utils.dataloader.RGBXDataset import DatasetError
    from shared.checkpoint import CheckpointError
    from shared.cli_errors import run_reporting_errors

    sys.exit(run_reporting_errors(main, (DatasetError, CheckpointError)))
