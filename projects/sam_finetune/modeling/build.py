"""SAM model registry: Meta's vit_b / vit_l / vit_h builders plus a `tiny` model built from the
same public classes, and checkpoint loading that names the file and the model type it holds.

A checkpoint written by this tool for `tiny` is a bare state dict like Meta's; `build_sam_tiny`
reads the input size back from its positional embedding, so the stock classes rebuild it with no
other information.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from shared.checkpoint import CheckpointError, extract_model_state, load_checkpoint, load_model_state

# The tiny architecture (fixed, so a checkpoint's shapes identify it); only the input size varies.
TINY_PATCH_SIZE = 8
TINY_ENCODER_WIDTH = 32
TINY_ENCODER_DEPTH = 2
TINY_ENCODER_HEADS = 2
TINY_PROMPT_DIM = 32
TINY_DECODER_MLP_DIM = 64
TINY_DECODER_HEADS = 2

# image-encoder width -> registry type, to name the model a foreign checkpoint was trained for
ENCODER_WIDTH_TO_TYPE = {768: "vit_b", 1024: "vit_l", 1280: "vit_h", TINY_ENCODER_WIDTH: "tiny"}


def build_sam_tiny(checkpoint: str | Path | None = None, image_size: int = 64) -> Sam:
    """A ~0.1M-parameter SAM from the stock classes: depth 2, width 32, patch 8, prompt dim 32."""
    state = None
    if checkpoint is not None:
        state = extract_model_state(load_checkpoint(checkpoint))
        pos_embed = state.get("image_encoder.pos_embed")
        if pos_embed is None:
            raise CheckpointError(f"{checkpoint}: not a SAM checkpoint (no image_encoder.pos_embed)")
        image_size = pos_embed.shape[1] * TINY_PATCH_SIZE
    grid = image_size // TINY_PATCH_SIZE
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size, patch_size=TINY_PATCH_SIZE, embed_dim=TINY_ENCODER_WIDTH,
            depth=TINY_ENCODER_DEPTH, num_heads=TINY_ENCODER_HEADS, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=(TINY_ENCODER_DEPTH - 1,), window_size=4, out_chans=TINY_PROMPT_DIM,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=TINY_PROMPT_DIM, image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size), mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=TINY_PROMPT_DIM,
                                          mlp_dim=TINY_DECODER_MLP_DIM, num_heads=TINY_DECODER_HEADS),
            transformer_dim=TINY_PROMPT_DIM, iou_head_depth=3, iou_head_hidden_dim=TINY_PROMPT_DIM,
        ),
    )
    sam.eval()
    if state is not None:
        sam.load_state_dict(state)
    return sam


MODEL_REGISTRY = {
    "vit_b": sam_model_registry["vit_b"],
    "vit_l": sam_model_registry["vit_l"],
    "vit_h": sam_model_registry["vit_h"],
    "tiny": build_sam_tiny,
}


def checkpoint_model_type(state: dict[str, torch.Tensor]) -> str | None:
    """The registry type whose image encoder has this checkpoint's width, if any."""
    weight = state.get("image_encoder.patch_embed.proj.weight")
    return None if weight is None else ENCODER_WIDTH_TO_TYPE.get(int(weight.shape[0]))


def build_sam(model_type: str, checkpoint: str | Path | None = None, image_size: int | None = None) -> Sam:
    """Build `model_type` and load `checkpoint` (Meta's bare state dict or one of our payloads).

    `image_size` is 1024 for vit_b/l/h; for tiny it is read from the checkpoint when not given.

    The model is built without weights and the checkpoint loaded strictly through
    shared.checkpoint, so a checkpoint of another model type fails with the file, the type it
    holds and the mismatched keys, instead of segment-anything's bare size-mismatch traceback.
    """
    if model_type not in MODEL_REGISTRY:
        raise ValueError(f"unknown SAM model type {model_type!r} (expected one of {', '.join(MODEL_REGISTRY)})")
    if checkpoint is None:
        return build_sam_tiny(image_size=image_size or 64) if model_type == "tiny" else MODEL_REGISTRY[model_type]()
    try:
        state = extract_model_state(load_checkpoint(checkpoint))
    except CheckpointError as error:
        message = str(error)
        raise CheckpointError(message if message.startswith(str(checkpoint)) else f"{checkpoint}: {message}") from None
    found = checkpoint_model_type(state)
    if found is not None and found != model_type:
        raise CheckpointError(f"{checkpoint}: holds a {found} SAM, but model.type is {model_type}")
    if model_type == "tiny" and "image_encoder.pos_embed" in state:
        stored = state["image_encoder.pos_embed"].shape[1] * TINY_PATCH_SIZE
        if image_size is not None and stored != image_size:
            raise CheckpointError(f"{checkpoint}: tiny SAM trained at image size {stored}, "
                                  f"but data.image_size is {image_size}")
        image_size = stored
    sam = build_sam_tiny(image_size=image_size) if model_type == "tiny" else MODEL_REGISTRY[model_type]()
    load_model_state(sam, state, strict=True, source_name=str(checkpoint))
    return sam
