"""`make gpu-check`: every tool at full size on one CUDA GPU — a few optimizer steps per optimizer
and precision, with and without gradient checkpointing (the runner is to come; the case
description below is the contract each tool's `projects/<tool>/gpu_check.py` fills in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class GpuCheckCase:
    """One model of one tool, ready to be stepped: random weights, generated data, no downloads."""

    tool: str                                            # folder name under projects/
    name: str                                            # what is measured, e.g. "vit_b 1024px, LoRA"
    build_model: Callable[[bool], nn.Module]             # gradient_checkpointing -> model (on CPU)
    make_batch: Callable[[torch.device], Any]            # one training batch on the device
    loss: Callable[[nn.Module, Any], torch.Tensor]       # scalar loss of the model on the batch
    optimizers: tuple[str, ...] = ("sam", "adamw")       # names for shared.optim.build_optimizer
    lr: float = 1e-4
    steps: int = 4
    # tool-specific measurements (e.g. cached vs uncached epoch time) -> extra columns of the table
    extra: Callable[[torch.device], dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)
