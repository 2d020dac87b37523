"""Semantic Alignment Module (SAM): pixel features attend to class-name text embeddings.

Pixels are the queries; keys and values are projections of the class text embeddings. The same
attention core serves both sides of the network:

- decoder side (`forward`):      y = LN2(x + α·Attn(LN1(x))),  y = y + FFN(y)      (α starts at 0.1)
- encoder side (`forward_ssa`):  y = x + γ·Attn(x)                                   (γ starts at 0.5)

Attention logits are `s · q·kᵀ / √d_k` (plain) or `s · q̂·k̂ᵀ` (cosine: q and k L2-normalised, and
*not* divided by √d_k, as in CLIP and Swin V2: a unit-vector dot product already lies in [-1, 1], so
dividing again by √d_k would flatten the softmax to near-uniform — with s = 14.29 and d_k = 64 the
largest logit would be 1.8). `s` is the temperature multiplier ("logit init"), fixed (a buffer) or
learnable as s = exp(θ) with θ kept inside [log 0.01, log 100] (see `AttentionTemperature`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 100.0


@dataclass(frozen=True)
class AlignmentAttention:
    """How one side (encoder or decoder) of the alignment module attends."""

    use_cosine: bool
    learnable_temp: bool
    logit_init: float

    @classmethod
    def decoder_default(cls) -> AlignmentAttention:
        return cls(use_cosine=True, learnable_temp=True, logit_init=14.285714)

    @classmethod
    def encoder_default(cls) -> AlignmentAttention:
        return cls(use_cosine=False, learnable_temp=False, logit_init=1.0)


class AttentionTemperature(nn.Module):
    """The multiplier s of the attention logits, stored as θ = log s.

    Learnable: θ is a parameter. Its value is held inside [log 0.01, log 100] in two ways that both
    keep the gradient alive: the forward pass uses a straight-through clamp (clamped value, identity
    gradient), and `clamp_()` (called by the training loop after each optimizer step, like CLIP)
    pulls the stored θ back into range so it cannot drift far outside. Fixed: θ is a buffer, so it
    is saved in checkpoints but no optimizer ever sees it.
    """

    def __init__(self, init: float, learnable: bool):
        super().__init__()
        if not MIN_TEMPERATURE <= init <= MAX_TEMPERATURE:
            raise ValueError(f"temperature init must lie in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], got {init}")
        self.learnable = learnable
        log_init = torch.tensor(math.log(init), dtype=torch.float32)
        if learnable:
            self.log_scale = nn.Parameter(log_init)
        else:
            self.register_buffer("log_scale", log_init)

    def forward(self) -> Tensor:
        theta = self.log_scale
        if self.learnable:
            clamped = theta.clamp(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE))
            theta = theta + (clamped - theta).detach()
        return theta.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        if self.learnable:
            self.log_scale.clamp_(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE))

    def extra_repr(self) -> str:
        return f"learnable={self.learnable}, s={float(self.log_scale.exp()):.4g}"


class SemanticAlignmentModule(nn.Module):
    """Multi-head cross-attention from pixels (queries) to class text embeddings (keys, values).

    Args:
        query_dim: channels of the visual features C_v.
        text_dim: width of the text embeddings C_t.
        num_heads: heads; C_v must be divisible by it.
        attention: cosine or plain, learnable or fixed temperature, and its initial value.
        side: "decoder" builds LN/FFN/α for `forward`; "encoder" builds γ for `forward_ssa`.
            Only the parts a side uses exist, so no parameter is left without a gradient (DDP).
    """

    def __init__(self, query_dim: int, text_dim: int, num_heads: int, attention: AlignmentAttention,
                 side: Literal["decoder", "encoder"], alpha_init: float = 0.1, gamma_init: float = 0.5,
                 ffn_ratio: int = 4, attn_drop: float = 0.0):
        super().__init__()
        if query_dim % num_heads:
            raise ValueError(f"query_dim {query_dim} is not divisible by num_heads {num_heads}")
        if side not in ("decoder", "encoder"):
            raise ValueError(f"side must be 'decoder' or 'encoder', got {side!r}")
        self.side = side
        self.num_heads = num_heads
        self.head_dim = query_dim // num_heads
        self.use_cosine = attention.use_cosine
        self.temperature = AttentionTemperature(attention.logit_init, attention.learnable_temp)

        self.q_proj = nn.Linear(query_dim, query_dim)
        self.k_proj = nn.Linear(text_dim, query_dim)
        self.v_proj = nn.Linear(text_dim, query_dim)
        self.out_proj = nn.Linear(query_dim, query_dim)
        self.attn_drop = nn.Dropout(attn_drop)

        if side == "decoder":
            self.norm1 = nn.LayerNorm(query_dim)
            self.norm2 = nn.LayerNorm(query_dim)
            self.ffn = nn.Sequential(nn.Linear(query_dim, query_dim * ffn_ratio), nn.GELU(),
                                     nn.Linear(query_dim * ffn_ratio, query_dim))
            self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        else:
            self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))

        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def logit_scale(self) -> Tensor:
        """The factor multiplying q·kᵀ: s/√d_k for plain attention, s for cosine attention."""
        s = self.temperature()
        return s if self.use_cosine else s / math.sqrt(self.head_dim)

    def project(self, tokens: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tokens (B, N, C_v), text (T, C_t) → q (B, h, N, d) already multiplied by the logit scale,
        k, v (1, h, T, d); so the logits are exactly q·kᵀ."""
        batch, num_tokens, _ = tokens.shape
        q = self.q_proj(tokens).view(batch, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(text).view(1, -1, self.num_heads, self.head_dim).transpose(1, 2)  # (1, h, T, d)
        v = self.v_proj(text).view(1, -1, self.num_heads, self.head_dim).transpose(1, 2)
        if self.use_cosine:
            q = F.normalize(q, dim=-1, eps=1e-6)
            k = F.normalize(k, dim=-1, eps=1e-6)
        return q * self.logit_scale().to(q.dtype), k, v

    def attention_weights(self, tokens: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """tokens (B, N, C_v), text (T, C_t) → (softmax weights (B, h, N, T), values (1, h, T, d)),
        written out for inspection; `attend` computes the same with the fused kernel."""
        q, k, v = self.project(tokens, text.to(tokens.dtype))
        return (q @ k.transpose(-1, -2)).softmax(dim=-1), v

    def attend(self, tokens: Tensor, text: Tensor) -> Tensor:
        """tokens (B, N, C_v), text (T, C_t) → aligned tokens (B, N, C_v), before any residual.
        `F.scaled_dot_product_attention` with scale 1 (the logit scale is already in q, so a learnable
        temperature keeps its gradient); k and v broadcast over the batch."""
        batch, num_tokens, channels = tokens.shape
        q, k, v = self.project(tokens, text.to(tokens.dtype))
        k, v = k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)
        dropout = self.attn_drop.p if self.training else 0.0
        aligned = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=1.0)  # (B, h, N, d)
        return self.out_proj(aligned.transpose(1, 2).reshape(batch, num_tokens, channels))

    def forward(self, x: Tensor, text: Tensor) -> Tensor:
        """Decoder side. x (B, H, W, C_v), text (T, C_t) → (B, H, W, C_v)."""
        if self.side != "decoder":
            raise RuntimeError("this SemanticAlignmentModule was built for the encoder side; call forward_ssa")
        batch, height, width, channels = x.shape
        tokens = x.reshape(batch, height * width, channels)
        y = self.norm2(tokens + self.alpha * self.attend(self.norm1(tokens), text))
        y = y + self.ffn(y)
        return y.view(batch, height, width, channels)

    def forward_ssa(self, x: Tensor, text: Tensor) -> Tensor:
        """Encoder side. x (B, H, W, C_v), text (T, C_t) → (B, H, W, C_v)."""
        if self.side != "encoder":
            raise RuntimeError("this SemanticAlignmentModule was built for the decoder side; call forward")
        batch, height, width, channels = x.shape
        tokens = x.reshape(batch, height * width, channels)
        y = tokens + self.gamma * self.attend(tokens, text)
        return y.view(batch, height, width, channels)


def clamp_temperatures_(model: nn.Module) -> None:
    """Pull every learnable temperature back into [log 0.01, log 100]; call after optimizer steps."""
    for module in model.modules():
        if isinstance(module, AttentionTemperature):
            module.clamp_()
