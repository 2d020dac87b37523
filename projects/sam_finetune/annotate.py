"""Annotate a folder of images in the browser with any SAM checkpoint this tool loads; the annotations
are COCO (RLE) that train.py reads as they are.

    python projects/sam_finetune/annotate.py --images data/train --checkpoint runs/x/best_model.pth \
        --annotations data/annotations/instances_train.json [--categories cell,nucleus] [--port 7860]
    samkit annotate ...   # the same

Checkpoints: a training checkpoint (best_model.pth, latest_model.pth: adapters / LoRA rebuilt from its
config), or a Meta-format state dict (official sam_vit_b/l/h, best_model_sam.pth) with --model_type,
plus --strategy_weights best_model_adapter.pth for an adapter run. The preprocessing comes with the
checkpoint (its config, or the preprocessing.json beside an export). See ANNOTATE.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from projects.sam_finetune.annotator.cache import EmbeddingStore, default_cache_dir
from projects.sam_finetune.annotator.images import ImageFolder
from projects.sam_finetune.annotator.model import load_annotation_model
from projects.sam_finetune.annotator.server import Session, create_app
from projects.sam_finetune.annotator.store import CocoStore
from projects.sam_finetune.data_sources import DataError
from projects.sam_finetune.modeling.build import MODEL_REGISTRY
from shared.checkpoint import CheckpointError
from shared.cli_errors import run_reporting_errors


def category_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct, non-empty comma-separated names, got {text!r}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Annotate images in the browser with SAM (COCO RLE output).")
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--checkpoint", required=True, help="best_model.pth, best_model_sam.pth or sam_vit_*.pth")
    parser.add_argument("--annotations", required=True, help="COCO file to write (created, or resumed if it exists)")
    parser.add_argument("--categories", type=category_list, default=None,
                        help="comma-separated category names (added to the file's own; default: object)")
    parser.add_argument("--model_type", choices=list(MODEL_REGISTRY), default=None,
                        help="for a bare state dict (sam_vit_b_01ec64.pth -> vit_b)")
    parser.add_argument("--strategy_weights", default=None,
                        help="best_model_adapter.pth beside a best_model_sam.pth export (adapter runs)")
    parser.add_argument("--normalization", choices=["sam", "zero_one"], default=None,
                        help="for a bare state dict without preprocessing.json (default sam)")
    parser.add_argument("--png_dir", default=None,
                        help="also write a 16-bit instance-id PNG per annotated image here")
    parser.add_argument("--cache_dir", default=None, help=f"embedding cache (default {default_cache_dir()})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return parser.parse_args(argv)


def build_session(args: argparse.Namespace) -> Session:
    """Everything checked (images, annotation file, checkpoint) before the server starts."""
    import torch

    images = ImageFolder(args.images)
    store = CocoStore(args.annotations, images, args.categories, png_dir=args.png_dir)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device here (use --device cpu or auto)")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    model = load_annotation_model(args.checkpoint, args.model_type, args.normalization,
                                  args.strategy_weights, device=device)
    embeddings = EmbeddingStore(model, args.cache_dir or default_cache_dir())
    return Session(images=images, model=model, store=store, embeddings=embeddings)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = parse_args(argv)
    session = build_session(args)
    app = create_app(session)
    counts = session.store.object_counts()
    print(f"{len(session.images)} images ({sum(1 for c in counts.values() if c)} annotated), "
          f"{session.model.description['model_type']} {session.model.description['strategy']} from "
          f"{Path(args.checkpoint).name}; saving to {args.annotations}")
    print(f"open http://{args.host}:{args.port}/  (Ctrl+C to stop)", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        session.embeddings.close()
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_reporting_errors(lambda: main(argv), (DataError, CheckpointError, ValueError, OSError))


if __name__ == "__main__":
    sys.exit(cli())
