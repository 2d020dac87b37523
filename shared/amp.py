"""Mixed-precision policy: which autocast dtype a device gets and whether a GradScaler is needed.

bf16 keeps fp32's exponent range, so it needs no loss scaling; fp16 does. CPUs autocast to bf16;
GPUs use bf16 where the hardware supports it and fp16 (with a scaler) otherwise.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclass(frozen=True)
class AmpPolicy:
    device_type: str  # "cpu" | "cuda" | "mps"
    dtype: torch.dtype | None  # None: full precision, autocast off

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def make_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.needs_scaler else None

    @classmethod
    def create(cls, device: torch.device | str, enabled: bool = True, dtype: str = "auto") -> AmpPolicy:
        """`dtype`: "auto" | "bf16" | "fp16" | "fp32". `enabled=False` always means full precision."""
        device_type = torch.device(device).type
        if dtype not in ("auto", *_DTYPES):
            raise ValueError(f"amp dtype must be one of auto, bf16, fp16, fp32, got {dtype!r}")
        if not enabled or dtype == "fp32":
            return cls(device_type, None)
        if dtype != "auto":
            return cls(device_type, _DTYPES[dtype])
        if device_type == "cuda":
            return cls(device_type, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        if device_type == "mps":
            return cls(device_type, torch.float16)
        return cls(device_type, torch.bfloat16)

    def describe(self) -> str:
        if not self.enabled:
            return f"{self.device_type}: fp32 (autocast off)"
        name = {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        return f"{self.device_type}: autocast {name}" + (" + GradScaler" if self.needs_scaler else "")
