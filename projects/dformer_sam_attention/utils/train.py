"""Train DFormerv2 (+ Semantic Alignment Module) for RGB-D semantic segmentation.

    python projects/dformer_sam_attention/utils/train.py --config local_configs.NYUDepthv2.DFormerv2_S
    torchrun --nproc_per_node 4 projects/dformer_sam_attention/utils/train.py --config ... --syncbn

The life of the run is shared.run's: every input (flags, config, data, pretrained file, text model) is
checked before the run folder exists; `--resume` refuses a changed experiment naming `key: old -> new`
and drops metric rows past the checkpoint. The loop (nanoGPT-style, all in `train`): class text
embeddings once → model (every module built here, before the optimizer) → AdamW (or SAM) with warm-up
+ poly → per step: forward, loss, backward, update (shared.sam.OptimizationStep), temperature clamp,
LR step → per epoch: validation mIoU (official recipe: on the test split, as the papers; otherwise on
images held out of train.txt), `latest_model.pth` (full resume state) and `best_model.pth` → at the
end the best checkpoint is evaluated once on the test split.
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
from projects.dformer_sam_attention.utils.errors import USER_ERRORS, FlagError
from projects.dformer_sam_attention.utils.eval import evaluate
from projects.dformer_sam_attention.utils.metrics import per_class_table
from shared.amp import AmpPolicy
from shared.checkpoint import (
    CheckpointError,
    capture_training_state,
    load_model_state,
    restore_training_state,
    save_checkpoint,
    unwrap_model,
)
from shared.cli_errors import run_reporting_errors
from shared.distributed import (
    DistributedContext,
    barrier,
    broadcast_from_main,
    cleanup_distributed,
    reduce_mean,
    set_loader_epoch,
    setup_distributed,
    wrap_model_ddp,
)
from shared.optim import build_optimizer, build_scheduler
from shared.run import choose_run_dir, load_resume, open_run
from shared.sam import OptimizationStep
from shared.seeding import seed_everything
from shared.tracking import timestamp

# What a resume may change without making it another experiment (dotted paths into the run config):
# where the data and the runs lie, and the resume path itself. Everything else — model, data
# protocol, optimizer, schedule (its length too: the poly decay is laid out over all epochs, so
# `epochs` may not grow either), seed, batch, AMP, world size — is refused, naming `key: old -> new`.
RESUME_MAY_CHANGE = ("args.resume", "args.output_dir", "args.checkpoint_dir", "args.dataset_path",
                     "config.dataset_path", "config.num_workers")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", required=True, help="e.g. local_configs.NYUDepthv2.DFormerv2_S, or a .py path")
    p.add_argument("--dataset_path", default=None, help="data root (default: the config's)")
    p.add_argument("--checkpoint_dir", default="runs/dformer_sam_attention", help="folder that holds the runs")
    p.add_argument("--output_dir", default=None,
                   help="this run's folder (default: a new <checkpoint_dir>/<dataset>_<backbone>_<time>; "
                        "a resume continues in the checkpoint's folder)")
    p.add_argument("--resume", default=None, help="latest_model.pth of a run to continue (in its folder)")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default: config nepochs)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: config seed)")
    p.add_argument("--lr", type=float, default=None, help="base learning rate of AdamW (default: config lr)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="batch size: the total over all processes with --official, else per process (default: config)")
    p.add_argument("--pretrained_model", default=None,
                   help="ImageNet DFormerv2 weights for the backbone; '' trains from scratch (default: config)")
    p.add_argument("--allow_partial_pretrained", default=False, action=argparse.BooleanOptionalAction,
                   help="load what fits of a --pretrained_model that does not match the encoder (otherwise an error)")
    p.add_argument("--official", default=None, action=argparse.BooleanOptionalAction,
                   help="official recipe: the official channel order (BGR for NYU, RGB for SUN RGB-D; off: RGB), "
                        "batch_size is the total over all processes, checkpoints validated on the official "
                        "test split (--val_fraction 0, the paper protocol) (default: config; on for NYU/SUN)")
    p.add_argument("--gradient_checkpointing", default=False, action=argparse.BooleanOptionalAction,
                   help="recompute the encoder blocks' activations in the backward pass (less memory)")
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
    p.add_argument("--text-logit-init", dest="text_logit_init", type=float, default=14.285714,
                   help="HSG head: scale s of the text logits s·cos(pixel, class) at initialisation "
                        "(its own parameter, not the attention temperature)")
    p.add_argument("--text-logit-learnable", dest="text_logit_learnable", default=True,
                   action=argparse.BooleanOptionalAction, help="HSG head: the text-logit scale is learned")
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
    p.add_argument("--val_fraction", type=float, default=None,
                   help="share of train.txt images held out to validate and choose checkpoints; "
                        "0 validates on test.txt (the paper protocol) (default: 0 with --official, else 0.1)")
    p.add_argument("--mst", default=False, action=argparse.BooleanOptionalAction,
                   help="validate multi-scale (config eval_scale_array) + flip")
    p.add_argument("--sliding", default=False, action=argparse.BooleanOptionalAction,
                   help="validate with sliding windows of config eval_crop_size")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    explicit = explicit_flags(parser, args)
    try:
        args.sam_enc_stages = parse_stages(args.sam_enc_stages)
    except ValueError as error:
        parser.error(f"--sam-enc-stages: {error}")
    for flag in ("sam_decoder_logit_init", "sam_encoder_logit_init", "text_logit_init"):
        value = getattr(args, flag)
        if not 0.01 <= value <= 100:
            parser.error(f"--{flag.replace('_', '-')} must lie in [0.01, 100], got {value}")
    if args.val_fraction is not None and not 0 <= args.val_fraction < 1:
        parser.error(f"--val_fraction must lie in [0, 1), got {args.val_fraction}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be ≥ 1, got {args.epochs}")
    if args.lr is not None and args.lr <= 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch_size must be ≥ 1, got {args.batch_size}")
    if args.sam_rho < 0:
        parser.error(f"--sam_rho must be ≥ 0, got {args.sam_rho}")
    args.explicit = explicit
    return args


def explicit_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Destinations whose value differs from the parser default (what the user set)."""
    return sorted(a.dest for a in parser._actions
                  if a.dest not in ("help", "config") and getattr(args, a.dest, None) != a.default)


DECODER_ALIGNMENT_FLAGS = ("sam_decoder_use_cosine", "sam_decoder_learnable_temp", "sam_decoder_logit_init")
ENCODER_ALIGNMENT_FLAGS = ("sam_encoder_use_cosine", "sam_encoder_learnable_temp", "sam_encoder_logit_init")
TEXT_LOGIT_FLAGS = ("text_logit_init", "text_logit_learnable")


def flag_name(dest: str) -> str:
    return "--" + (dest.replace("_", "-") if dest.startswith(("sam_", "text_logit")) and dest != "sam_rho" else dest)


def check_flags_apply(args: argparse.Namespace, config: SegConfig) -> None:
    """A flag the chosen configuration cannot use is an error, never a recorded setting."""
    set_flags = set(args.explicit)

    def refuse(flags: tuple[str, ...], reason: str) -> None:
        useless = [flag_name(f) for f in flags if f in set_flags]
        if useless:
            raise FlagError(f"{', '.join(useless)}: cannot apply {reason}; drop {'it' if len(useless) == 1 else 'them'}")

    if not args.enable_text_guidance:
        refuse(DECODER_ALIGNMENT_FLAGS + ENCODER_ALIGNMENT_FLAGS + TEXT_LOGIT_FLAGS + ("sam_enc_stages", "text_encoder"),
               "with --no-enable-text-guidance (no alignment module, no text logits)")
    if config.decoder == "ham":
        refuse(DECODER_ALIGNMENT_FLAGS + TEXT_LOGIT_FLAGS, "with --decoder ham (the LightHamHead has no alignment "
               "module and no text logits)")
    if not args.sam_enc_stages:
        refuse(ENCODER_ALIGNMENT_FLAGS, "with --sam-enc-stages '' (no encoder-side alignment module)")
    if args.optimizer_type != "sam":
        refuse(("sam_rho",), "without --optimizer_type sam")
    if not args.pretrained_model and not config.pretrained_model:
        refuse(("allow_partial_pretrained",), "without --pretrained_model")


def resolve_config(args: argparse.Namespace) -> SegConfig:
    config = load_config(args.config)
    overrides = {"dataset_path": args.dataset_path, "nepochs": args.epochs, "seed": args.seed, "lr": args.lr,
                 "batch_size": args.batch_size,
                 "decoder": args.decoder, "text_encoder": args.text_encoder, "gt_transform": args.gt_transform,
                 "pretrained_model": args.pretrained_model, "official_recipe": args.official}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if not config.official_recipe:  # our own recipe reads every dataset in RGB order
        config = dataclasses.replace(config, channel_order="rgb")
    return config


def model_settings(args: argparse.Namespace, config: SegConfig, text_dim: int) -> ModelSettings:
    return ModelSettings(
        backbone=config.backbone, decoder=config.decoder, num_classes=config.num_classes,
        decoder_embed_dim=config.decoder_embed_dim, decoder_align_heads=config.decoder_align_heads,
        text_embed_dim=config.text_embed_dim, ham_rank=config.ham_rank, ham_channels=config.ham_channels,
        drop_path_rate=config.drop_path_rate, text_logit_init=args.text_logit_init,
        text_logit_learnable=args.text_logit_learnable,
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


def batch_per_process(config: SegConfig, ctx: DistributedContext) -> int:
    """Official recipe: `batch_size` is the total, split over the processes (as the official loader);
    otherwise it is per process."""
    if not config.official_recipe:
        return config.batch_size
    if config.batch_size < ctx.world_size:
        raise FlagError(f"--official: total batch_size {config.batch_size} is smaller than the {ctx.world_size} "
                        "processes; use fewer processes or --no-official")
    return config.batch_size // ctx.world_size


def validation_fraction(args: argparse.Namespace, config: SegConfig) -> float:
    if args.val_fraction is not None:
        return args.val_fraction
    return 0.0 if config.official_recipe else 0.1


def run_config(args: argparse.Namespace, config: SegConfig, settings: ModelSettings, **resolved) -> dict:
    """What config.json records and every checkpoint carries: every setting that actually applies."""
    recorded_args = {k: v for k, v in vars(args).items() if k not in ("explicit", "config_name")}
    recorded_args["config"] = args.config
    return {"config": dataclasses.asdict(config), "args": recorded_args, "model": settings_to_dict(settings),
            **resolved}


def train(args: argparse.Namespace) -> dict:
    config = resolve_config(args)
    check_flags_apply(args, config)
    ctx = setup_distributed()
    seed_everything(config.seed)
    device = ctx.device
    val_fraction = validation_fraction(args, config)
    sync_bn = use_sync_batchnorm(args.syncbn, ctx)
    if args.syncbn and not sync_bn and ctx.is_main:
        print("--syncbn needs torchrun on GPUs (SyncBatchNorm has no CPU kernel): using plain BatchNorm "
              "(config.json records syncbn false)")
    args.syncbn = sync_bn  # config.json records what runs

    # every input is checked before the run folder exists: data, pretrained file, text model
    val_split = "val" if val_fraction > 0 else "test"
    train_loader, train_set = get_train_loader(config, args.skip_bad_samples, config.seed, val_fraction,
                                               batch_size=batch_per_process(config, ctx))
    val_loader, val_set = get_eval_loader(config, val_split, args.skip_bad_samples, config.seed, val_fraction)
    test_loader, test_set = (get_eval_loader(config, "test", args.skip_bad_samples, config.seed)
                             if val_split == "val" else (val_loader, val_set))
    if config.pretrained_model and not Path(config.pretrained_model).is_file():
        raise CheckpointError(f"{config.pretrained_model}: pretrained backbone weights not found "
                              "(pass --pretrained_model '' to train from scratch)")
    text = None
    if args.enable_text_guidance:  # text embeddings first: their width sizes the alignment modules
        text = class_text_embeddings(config, Path(args.checkpoint_dir) / "text_cache", ctx.is_main)
    settings = model_settings(args, config, text_dim=text.shape[1] if text is not None else 512)
    model = build_model(settings, text, pretrained_backbone=config.pretrained_model or None,
                        allow_partial_pretrained=args.allow_partial_pretrained,
                        gradient_checkpointing=args.gradient_checkpointing).to(device)
    ddp_model = wrap_model_ddp(model, ctx, sync_batchnorm=sync_bn)

    # optimisation: AdamW (or SAM around AdamW), warm-up then poly, per optimizer step
    optimizer = build_optimizer("sam" if args.optimizer_type == "sam" else "adamw", unwrap_model(ddp_model),
                                config.lr, config.weight_decay, sam_base="adamw", sam_rho=args.sam_rho)
    steps_per_epoch = len(train_loader)
    schedule = build_scheduler(optimizer, "poly", total_steps=config.nepochs * steps_per_epoch,
                               warmup_steps=config.warm_up_epoch * steps_per_epoch, poly_power=config.lr_power)
    amp = AmpPolicy.create(device, args.amp)
    stepper = OptimizationStep(ddp_model, optimizer, amp)

    experiment = run_config(args, config, settings, amp=amp.describe(), world_size=ctx.world_size,
                            batch_per_process=batch_per_process(config, ctx), val_fraction=val_fraction)
    resume = load_resume(args.resume, experiment, may_change=RESUME_MAY_CHANGE, may_increase=()) if args.resume \
        else None
    run_dir = None
    if ctx.is_main:
        run_dir = choose_run_dir(resume=resume, output_dir=args.output_dir, root=args.checkpoint_dir,
                                 name=f"{config.dataset_name}_{config.backbone}_{timestamp()}")
    run_dir = Path(broadcast_from_main(str(run_dir) if run_dir is not None else None))
    tracker = open_run(run_dir, experiment, resume=resume, is_main=ctx.is_main)

    start_epoch, step, best_miou = 0, 0, -1.0
    if resume is not None:
        state = restore_training_state(resume.payload, model=ddp_model, optimizer=optimizer, scheduler=schedule,
                                       stepper=stepper)
        start_epoch, step = state["epoch"], state["step"]
        best_miou = state["best_metric"] if state["best_metric"] is not None else -1.0
    if ctx.is_main:
        print(f"run folder {run_dir}; {sum(p.numel() for p in model.parameters()) / 1e6:.3f}M parameters; "
              f"{amp.describe()}; validating on the {val_split} split")

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
        losses, row = [], {}
        progress = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config.nepochs}", leave=False,
                        disable=not ctx.is_main)
        for index, batch in enumerate(progress):
            lr = schedule.get_last_lr()[0]  # the rate this step uses, read before the schedule moves on
            result = stepper.step(loss_fn, [batch])
            clamp_temperatures_(model)
            schedule.step_iteration()
            step += 1
            losses.append(result.loss)
            progress.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr:.2e}")
            row = {"train_loss": result.loss, "lr": lr, "skipped": result.skipped}
            if index < len(train_loader) - 1:  # the epoch's last step is logged with the epoch's metrics
                tracker.log(row, step)

        val = evaluate(unwrap_model(ddp_model), val_loader, config, device, mst=args.mst, sliding=args.sliding, amp=amp,
                       progress=ctx.is_main)
        train_loss = reduce_mean(sum(losses) / max(len(losses), 1))
        is_best = val["miou"] > best_miou
        best_miou = max(best_miou, val["miou"])
        # one row per step: the last step's training values and the epoch's metrics, logged before
        # the epoch's checkpoint is written
        tracker.log({**row, "epoch": epoch + 1, "epoch_train_loss": train_loss, "val_miou": val["miou"],
                     "val_pixel_acc": val["pixel_acc"], **{f"temp/{k}": v for k, v in temperatures(model).items()}},
                    step)
        if ctx.is_main:
            print(f"epoch {epoch + 1}/{config.nepochs}: train_loss {train_loss:.4f} val_miou {val['miou']:.4f} "
                  f"val_pixel_acc {val['pixel_acc']:.4f} best_miou {best_miou:.4f}")
            if is_best:
                save_checkpoint(run_dir / "best_model.pth", checkpoint_payload(epoch + 1, val["miou"]))
            state = capture_training_state(model=ddp_model, optimizer=optimizer, scheduler=schedule, stepper=stepper,
                                           epoch=epoch + 1, step=step, best_metric=best_miou,
                                           extra={"config": experiment})
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
        "official_recipe": config.official_recipe, "channel_order": config.channel_order,
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


def cli(argv: list[str] | None = None) -> int:
    """`main` with the user's errors reported in one line (exit code 2)."""
    return run_reporting_errors(lambda: main(argv), USER_ERRORS)


if __name__ == "__main__":
    sys.exit(cli())
