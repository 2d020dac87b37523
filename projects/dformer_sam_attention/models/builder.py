"""EncoderDecoder: DFormerv2 encoder + HSG or LightHam decoder, with the class text embeddings.

The text embeddings of the class names are a buffer of the model (T, C_t): computed once by the
text encoder before training, saved with every checkpoint, so evaluation and inference need no
text encoder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from projects.dformer_sam_attention.models.blocks.semantic_alignment import AlignmentAttention
from projects.dformer_sam_attention.models.decoders.ham_head import LightHamHead
from projects.dformer_sam_attention.models.decoders.hsg_head import HSGHead
from projects.dformer_sam_attention.models.encoders.DFormerv2 import BACKBONES

DECODERS = ("hsg", "ham")


@dataclass(frozen=True)
class ModelSettings:
    """Everything that decides the architecture (saved in checkpoints to rebuild the model)."""

    backbone: str
    decoder: str
    num_classes: int
    decoder_embed_dim: int = 512
    decoder_align_heads: int = 8
    text_embed_dim: int = 256
    ham_rank: int = 64
    ham_channels: int = 512
    drop_path_rate: float = 0.1
    text_guidance: bool = True
    text_dim: int = 512
    sam_enc_stages: tuple[int, ...] = (0, 1, 2, 3)
    decoder_attention: AlignmentAttention = AlignmentAttention.decoder_default()
    encoder_attention: AlignmentAttention = AlignmentAttention.encoder_default()
    text_logit_init: float = 14.285714
    text_logit_learnable: bool = True


class EncoderDecoder(nn.Module):
    """forward(rgb (B, 3, H, W), depth (B, 1, H, W)) → logits (B, num_classes, H, W)."""

    def __init__(self, settings: ModelSettings, gradient_checkpointing: bool = False):
        super().__init__()
        if settings.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {settings.backbone!r}: choose from {', '.join(BACKBONES)}")
        if settings.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {settings.decoder!r}: choose from {', '.join(DECODERS)}")
        self.settings = settings
        text_guided = settings.text_guidance
        self.backbone = BACKBONES[settings.backbone](
            drop_path_rate=settings.drop_path_rate,
            sam_stages=settings.sam_enc_stages if text_guided else (),
            text_dim=settings.text_dim, sam_attention=settings.encoder_attention,
        )
        self.backbone.set_gradient_checkpointing(gradient_checkpointing)
        channels = self.backbone.embed_dims
        if settings.decoder == "hsg":
            self.decode_head = HSGHead(channels, settings.num_classes, channels=settings.decoder_embed_dim,
                                       text_dim=settings.text_dim if text_guided else None,
                                       align_heads=settings.decoder_align_heads,
                                       attention=settings.decoder_attention, embed_dim=settings.text_embed_dim,
                                       text_logit_init=settings.text_logit_init,
                                       text_logit_learnable=settings.text_logit_learnable)
        else:
            self.decode_head = LightHamHead(channels, settings.num_classes, ham_channels=settings.ham_channels,
                                            channels=settings.decoder_embed_dim, rank=settings.ham_rank)
        self.uses_text = text_guided and (bool(self.backbone.sam_stages) or settings.decoder == "hsg")
        if self.uses_text:
            self.register_buffer("text_embeddings", torch.zeros(settings.num_classes, settings.text_dim))

    def set_text_embeddings(self, embeddings: Tensor) -> None:
        if not self.uses_text:
            raise RuntimeError("this model has no text guidance; it takes no text embeddings")
        if tuple(embeddings.shape) != tuple(self.text_embeddings.shape):
            raise ValueError(f"text embeddings of shape {tuple(embeddings.shape)} do not fit "
                             f"{tuple(self.text_embeddings.shape)} (classes × text width)")
        self.text_embeddings.copy_(embeddings)

    def forward(self, rgb: Tensor, depth: Tensor) -> Tensor:
        text = self.text_embeddings if self.uses_text else None
        features = self.backbone(rgb, depth, text)
        logits = self.decode_head(features, text)
        return F.interpolate(logits, size=rgb.shape[2:], mode="bilinear", align_corners=False)


def settings_to_dict(settings: ModelSettings) -> dict:
    out = dict(settings.__dict__)
    out["sam_enc_stages"] = list(settings.sam_enc_stages)
    out["decoder_attention"] = dict(settings.decoder_attention.__dict__)
    out["encoder_attention"] = dict(settings.encoder_attention.__dict__)
    return out


def settings_from_dict(data: dict) -> ModelSettings:
    """Settings saved in a checkpoint. Checkpoints written before `ham_channels` and the separate
    text-logit scale existed get the values those models had: the Hamburger as wide as the decoder,
    the text logits scaled by the decoder temperature (see `upgrade_state_dict`)."""
    data = dict(data)
    data.setdefault("ham_channels", data["decoder_embed_dim"])
    data.setdefault("text_logit_init", data["decoder_attention"]["logit_init"])
    data.setdefault("text_logit_learnable", data["decoder_attention"]["learnable_temp"])
    data["sam_enc_stages"] = tuple(data["sam_enc_stages"])
    data["decoder_attention"] = AlignmentAttention(**data["decoder_attention"])
    data["encoder_attention"] = AlignmentAttention(**data["encoder_attention"])
    return ModelSettings(**data)


def parse_stages(text: str) -> tuple[int, ...]:
    """"0,1,2,3" → (0, 1, 2, 3); "" → () (no encoder-side alignment)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        stages = tuple(sorted({int(p) for p in parts}))
    except ValueError:
        raise ValueError(f"stages must be comma-separated integers 0..3, got {text!r}") from None
    if any(not 0 <= s <= 3 for s in stages):
        raise ValueError(f"stages must lie in 0..3, got {text!r}")
    return stages


def build_model(settings: ModelSettings, text_embeddings: Tensor | None = None,
                pretrained_backbone: str | None = None, allow_partial_pretrained: bool = False,
                gradient_checkpointing: bool = False) -> EncoderDecoder:
    model = EncoderDecoder(settings, gradient_checkpointing=gradient_checkpointing)
    if text_embeddings is not None:
        model.set_text_embeddings(text_embeddings)
    if pretrained_backbone:
        from projects.dformer_sam_attention.models.encoders.DFormerv2 import load_pretrained_backbone

        report = load_pretrained_backbone(model.backbone, pretrained_backbone, allow_partial=allow_partial_pretrained)
        print(f"loaded {pretrained_backbone} into the backbone: {report.describe()}")
    return model



# module names of checkpoints written before the heads used mmcv's ConvModule naming
_OLD_CONV_BN = re.compile(r"^(decode_head\.(?:lateral\.\d+|fuse|squeeze|align|hamburger\.ham_out))\.([01])\.")
_OLD_HAM_IN = re.compile(r"^decode_head\.hamburger\.ham_in\.(weight|bias)$")


def upgrade_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict of an older checkpoint of this tool in today's names: `squeeze.0`/`squeeze.1` →
    `squeeze.conv`/`squeeze.bn` (and the same for the other conv-BN blocks), `ham_in.weight` →
    `ham_in.conv.weight`, and the text-logit scale, which was the decoder temperature, copied from it."""
    upgraded = {}
    for key, value in state.items():
        key = _OLD_CONV_BN.sub(lambda m: f"{m.group(1)}.{'conv' if m.group(2) == '0' else 'bn'}.", key)
        upgraded[_OLD_HAM_IN.sub(r"decode_head.hamburger.ham_in.conv.\1", key)] = value
    temperature = "decode_head.alignment.temperature.log_scale"
    if temperature in upgraded and "decode_head.text_logit_scale.log_scale" not in upgraded:
        upgraded["decode_head.text_logit_scale.log_scale"] = upgraded[temperature].clone()
    return upgraded
