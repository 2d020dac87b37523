"""SigLIP2 towers on spectrogram windows and transcript windows, pooled per recording, fused, classified.

Every module is created in ``__init__`` (so the optimizer sees every parameter and a saved state
dict reloads strictly). There is deliberately no language embedding: it would let the model
shortcut on language and is untrained for a language never seen in training.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel

from projects.siglip_sam_dementia.fusion import CrossAttentionFusion, GatedFusion, masked_mean, to_padded
from shared.hub import from_pretrained_or_error


def enable_gradient_checkpointing(backbone: PreTrainedModel) -> None:
    """transformers' own activation checkpointing of every encoder layer of both towers (the
    non-deprecated name of `gradient_checkpointing_enable`); non-reentrant, so gradients reach the
    weights even when a tower's inputs need none, and both SAM passes recompute correctly."""
    kwargs = {"use_reentrant": False}
    if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.2x
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def disable_gradient_checkpointing(backbone: PreTrainedModel) -> None:
    """Undo `enable_gradient_checkpointing` (the bench switches it on and off on one model)."""
    if hasattr(backbone, "activation_checkpointing_disable"):
        backbone.activation_checkpointing_disable()
    else:
        backbone.gradient_checkpointing_disable()


class DementiaClassifier(nn.Module):
    """(audio windows, text windows) -> (B, num_logits).

    Args:
        model_name: hub id or local folder of a SigLIP2 checkpoint (`AutoModel` -> `Siglip2Model`).
        modality: "multimodal" | "audio" | "text"; a single modality drops the other tower entirely.
        fusion: "concat" | "gated" | "cross_attention" (multimodal only).
        num_logits: 1 for BCE (sigmoid), 2 for cross-entropy / focal (softmax).
        fusion_dim: width of the gated / cross-attention fusion space (default: the towers' width).
        head_hidden: width of the classifier's hidden layer (default: the towers' width).
        gradient_checkpointing: recompute the towers' layer activations in backward (training mode only).
    """

    def __init__(self, model_name: str, modality: str = "multimodal", fusion: str = "concat", num_logits: int = 2,
                 fusion_dim: int | None = None, head_hidden: int | None = None, dropout: float = 0.1,
                 freeze_vision: bool = False, freeze_text: bool = False, gradient_checkpointing: bool = False,
                 backbone: PreTrainedModel | None = None):
        super().__init__()
        self.modality = modality
        self.fusion_name = fusion
        if backbone is None:  # `backbone`: an already built Siglip2Model (the bench's random full-size one)
            backbone = from_pretrained_or_error(AutoModel.from_pretrained, model_name)
        if type(backbone).__name__ != "Siglip2Model":
            raise ValueError(f"{model_name}: expected a SigLIP2 NaFlex checkpoint (Siglip2Model), got "
                             f"{type(backbone).__name__}; fixed-resolution siglip2 checkpoints load as SiglipModel")
        if gradient_checkpointing:
            enable_gradient_checkpointing(backbone)
        self.vision_tower = backbone.vision_model if modality in ("multimodal", "audio") else None
        self.text_tower = backbone.text_model if modality in ("multimodal", "text") else None
        # The contrastive logit scale/bias are not used for classification; they are dropped with `backbone`.
        audio_dim = backbone.config.vision_config.hidden_size
        text_dim = backbone.config.text_config.projection_size
        self.text_max_length = backbone.config.text_config.max_position_embeddings
        fusion_dim = fusion_dim or max(audio_dim, text_dim)

        if modality == "audio":
            self.fusion, features = None, audio_dim
        elif modality == "text":
            self.fusion, features = None, text_dim
        elif fusion == "concat":
            self.fusion, features = None, audio_dim + text_dim
        elif fusion == "gated":
            self.fusion = GatedFusion(audio_dim, text_dim, fusion_dim)
            features = fusion_dim
        elif fusion == "cross_attention":
            self.fusion = CrossAttentionFusion(audio_dim, text_dim, fusion_dim)
            features = 2 * fusion_dim
        else:
            raise ValueError(f"unknown fusion {fusion!r}: choose concat, gated or cross_attention")

        head_hidden = head_hidden or max(audio_dim, text_dim)
        self.classifier = nn.Sequential(
            nn.LayerNorm(features),
            nn.Dropout(dropout),
            nn.Linear(features, head_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(head_hidden, num_logits),
        )
        if freeze_vision and self.vision_tower is not None:
            self.vision_tower.requires_grad_(False)
        if freeze_text and self.text_tower is not None:
            self.text_tower.requires_grad_(False)

    def encode_audio(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor,
                     spatial_shapes: torch.Tensor) -> torch.Tensor:
        """(N, L, 3*P*P) NaFlex windows -> (N, D) pooled window embeddings."""
        return self.vision_tower(pixel_values=pixel_values, pixel_attention_mask=pixel_attention_mask,
                                 spatial_shapes=spatial_shapes).pooler_output

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(M, 64) token windows -> (M, D) pooled window embeddings."""
        return self.text_tower(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    def forward(self, batch_size: int, pixel_values: torch.Tensor | None = None,
                pixel_attention_mask: torch.Tensor | None = None, spatial_shapes: torch.Tensor | None = None,
                audio_owner: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, text_owner: torch.Tensor | None = None) -> torch.Tensor:
        audio = text = None
        if self.vision_tower is not None:
            windows = self.encode_audio(pixel_values, pixel_attention_mask, spatial_shapes)  # (N, Da)
            audio = to_padded(windows, audio_owner, batch_size)  # (B, Wa, Da), (B, Wa)
        if self.text_tower is not None:
            windows = self.encode_text(input_ids, attention_mask)  # (M, Dt)
            text = to_padded(windows, text_owner, batch_size)  # (B, Wt, Dt), (B, Wt)

        if audio is None:
            features = masked_mean(*text)
        elif text is None:
            features = masked_mean(*audio)
        elif self.fusion is None:
            features = torch.cat([masked_mean(*audio), masked_mean(*text)], dim=-1)
        else:
            features = self.fusion(*audio, *text)
        return self.classifier(features)  # (B, num_logits)


def build_model(config) -> DementiaClassifier:
    return DementiaClassifier(config.model_name, modality=config.modality, fusion=config.fusion,
                              num_logits=config.num_logits, freeze_vision=config.freeze_vision,
                              freeze_text=config.freeze_text, gradient_checkpointing=config.gradient_checkpointing)
