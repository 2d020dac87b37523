"""Sharpness-Aware Minimization (SAM, Foret et al. 2021) and ASAM (Kwon et al. 2021), plus the one
training-step helper every tool calls.

`SAM` keeps the interface of the reference implementation (davda54/sam):
`SAM(params, base_optimizer_cls, rho=0.05, adaptive=False, **base_kwargs)` with `first_step`,
`second_step`, `step(closure)`; the base optimizer is built on SAM's own param groups, so `rho` and
`adaptive` may differ per group and an LR scheduler attached to SAM drives the base optimizer.

Unlike the reference it keeps one persistent spare buffer per weight (allocated once, reused every
step) instead of cloning every weight each step: on CPU the perturbed weights are written into it in
one pass and the storages are swapped (restoring is a swap back), on CUDA multi-tensor `_foreach`
copy/add/copy kernels do it in a few launches. It restores every parameter it perturbed even if that
parameter has no gradient in the second pass, and never touches a parameter that got no gradient in
the first pass.

`OptimizationStep` puts around any optimizer (SAM or not) what a training loop needs: autocast,
fp16 GradScaler (the ascent uses the still-scaled gradients, whose direction is the same; the
update's gradients are unscaled exactly once; an inf in either pass skips the whole step),
gradient accumulation over micro-batches, BatchNorm running statistics updated in the first pass
only, DDP synchronisation (both passes all-reduced by default, or per-replica perturbation), and
gradient clipping.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.optimizer import _get_foreach_kernels_supported_devices

from shared.amp import AmpPolicy

EPS = 1e-12


class SAM(torch.optim.Optimizer):
    def __init__(self, params, base_optimizer_cls: type[torch.optim.Optimizer], rho: float = 0.05,
                 adaptive: bool = False, **base_kwargs: Any):
        if rho < 0.0:
            raise ValueError(f"SAM rho must be non-negative, got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups  # shared dicts: one lr, one schedule
        self.defaults.update(self.base_optimizer.defaults)
        # per perturbed group: (parameters, their saved weights, whether storages were swapped)
        self._perturbed: list[tuple[list[Tensor], list[Tensor], bool]] = []

    # --- the two halves of the update -------------------------------------------------------
    @torch.no_grad()
    def grad_norm(self) -> Tensor:
        """‖g‖ (SAM) or ‖|w|·g‖ (ASAM groups), global over all groups, as a 0-d tensor."""
        return self._ascent_directions(overwrite_grads=False)[0]

    def _ascent_directions(self, overwrite_grads: bool) -> tuple[Tensor, list[tuple[dict, list[Tensor], list[Tensor]]]]:
        """The global norm ‖d‖ and, per group with gradients, (group, params, d): d = g for SAM groups,
        d = w·g for ASAM groups (‖|w|·g‖ = ‖w·g‖, so no abs is needed; d is reused for e = w·d·scale).

        `overwrite_grads` computes w·g into the .grad tensors themselves (no allocation): only for
        callers that discard the gradient right after the perturbation.
        """
        norms: list[Tensor] = []
        directions = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            d = [p.grad for p in params]
            if group["adaptive"]:
                if overwrite_grads:
                    torch._foreach_mul_(d, params)
                else:
                    d = torch._foreach_mul(d, params)
            norms.extend(torch._foreach_norm(d))
            directions.append((group, params, d))
        if not norms:
            return torch.zeros(()), directions
        device = norms[0].device
        return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms])), directions

    @torch.no_grad()
    def perturb_weights(self, overwrite_grads: bool = False) -> float:
        """w ← w + e(w), e = rho·g/‖g‖ (SAM) or rho·w²·g/‖|w|·g‖ (ASAM); the old w is saved.

        Returns the norm. A non-finite norm (inf/nan gradient) leaves the weights untouched. The
        direction does not depend on a uniform scale of the gradients, so fp16 gradients may still be
        loss-scaled here (the returned norm is then scaled too). `overwrite_grads=True` lets ASAM
        compute w·g in the gradient buffers instead of new tensors; the gradients are then garbage,
        for callers that zero them next (OptimizationStep, first_step(zero_grad=True)).
        """
        if self._perturbed:
            raise RuntimeError("SAM.perturb_weights called twice without restore_weights")
        norm_tensor, directions = self._ascent_directions(overwrite_grads)
        norm = float(norm_tensor)
        if not math.isfinite(norm):
            return norm
        for group, params, d in directions:
            saved = [self._saved_weight(p) for p in params]
            scale = group["rho"] / (norm + EPS)
            swap = self._swap_storage(params)
            if swap:
                self._perturb_by_swapping(params, d, saved, scale, group["adaptive"])
            else:
                torch._foreach_copy_(saved, params)
                if group["adaptive"]:
                    torch._foreach_mul_(d, params)  # w·g -> w²·g, in tensors of ours (new products or spent grads)
                torch._foreach_add_(params, d, alpha=scale)
            self._perturbed.append((params, saved, swap))
        return norm

    @staticmethod
    def _swap_storage(params: list[Tensor]) -> bool:
        """Where torch has no multi-tensor kernels (CPU), the passes over the weights cost more than a
        few Python calls per tensor: perturb in one pass into the spare buffer and swap storages.
        Where it has them (CUDA), copy/add/copy as a handful of multi-tensor launches is cheaper."""
        return params[0].device.type not in _get_foreach_kernels_supported_devices()

    @staticmethod
    def _perturb_by_swapping(params: list[Tensor], d: list[Tensor], saved: list[Tensor], scale: float,
                             adaptive: bool) -> None:
        """spare ← w + scale·d (SAM) or w + scale·w·d (ASAM, d = w·g), then the parameter takes the
        spare's storage and the `saved` tensor the original one: one pass, no copy."""
        for p, d_p, spare in zip(params, d, saved):
            if adaptive:
                torch.addcmul(p, d_p, p, value=scale, out=spare)
            else:
                torch.add(p, d_p, alpha=scale, out=spare)
            original = p.data
            p.data = spare
            spare.set_(original)

    @torch.no_grad()
    def restore_weights(self) -> None:
        """Put back the weights saved by `perturb_weights` (exactly, not by subtracting e)."""
        for params, saved, swapped in self._perturbed:
            if swapped:
                for p, saved_p in zip(params, saved):
                    perturbed = p.data
                    p.data = saved_p
                    saved_p.set_(perturbed)  # the spare buffer again, for the next step
            else:
                torch._foreach_copy_(params, saved)
        self._perturbed = []

    def _saved_weight(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if "saved_weight" not in state:
            state["saved_weight"] = torch.empty_like(p, memory_format=torch.preserve_format)
        return state["saved_weight"]

    @property
    def is_perturbed(self) -> bool:
        return bool(self._perturbed)

    # --- reference-compatible interface ---------------------------------------------------
    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        norm = self.perturb_weights(overwrite_grads=zero_grad)
        if not math.isfinite(norm):
            raise FloatingPointError(f"SAM.first_step: gradient norm is {norm}")
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        self.restore_weights()
        self.base_optimizer.step()
        self._opt_called = True  # tells LR schedulers attached to SAM that a real step happened
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> None:
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss and calls backward()")
        closure = torch.enable_grad()(closure)
        self.first_step(zero_grad=True)
        closure()
        self.second_step()

    # --- state: the base optimizer's state and groups (rho/adaptive live in the groups) ------
    def state_dict(self) -> dict[str, Any]:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups  # load_state_dict made new dicts


# -------------------------------------------------------------------------------------------------
# The training step


@dataclass
class StepResult:
    loss: float  # mean first-pass loss over the micro-batches
    skipped: bool  # True when an inf/nan gradient made the step a no-op
    grad_norm: float | None  # norm of the applied gradient (unscaled, before clipping) when clipping or
    #                          track_grad_norm computed it; None otherwise and on skipped steps
    aux: list[Any] = field(default_factory=list)  # what loss_fn returned besides the loss, per micro-batch


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with batch statistics but leave running stats untouched.

    momentum 0 keeps running_mean/var as they are; `bn.eval()` instead would switch to running
    statistics and gives NaN early in training (davda54/sam #30).
    """
    saved = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            saved.append((module, module.momentum, module.num_batches_tracked.clone()))
            module.momentum = 0.0
    try:
        yield
    finally:
        for module, momentum, count in saved:
            module.momentum = momentum
            module.num_batches_tracked.copy_(count)


class OptimizationStep:
    """One optimizer update from a group of micro-batches, for SAM and plain optimizers alike.

    `loss_fn(micro_batch)` runs the forward pass and returns the mean loss over that micro-batch,
    or `(loss, aux)`. With k micro-batches the gradient is that of the mean of their losses, which
    equals one step on their concatenation when they are equally sized.

    Passes over the weights and gradients beyond the base optimizer's own are only those SAM needs
    (the ascent norm, save, perturb, restore). The total gradient norm is computed only when it is
    used: for clipping (`max_grad_norm`) or when asked for (`track_grad_norm`, then reported in
    `StepResult.grad_norm`). A step is skipped on inf/nan: with fp16 when the GradScaler finds one
    in the gradients; otherwise when a pass's loss, the SAM ascent norm or a computed gradient norm
    is not finite (a finite loss with a non-finite gradient is caught only when the norm is computed).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, amp: AmpPolicy | None = None,
                 max_grad_norm: float | None = None, per_replica_perturbation: bool = False,
                 track_grad_norm: bool = False):
        self.model = model
        self.optimizer = optimizer
        self.amp = amp or AmpPolicy("cpu", None)
        self.max_grad_norm = max_grad_norm
        self.per_replica_perturbation = per_replica_perturbation
        self.track_grad_norm = track_grad_norm
        self.scaler = self.amp.make_scaler()
        self.is_sam = isinstance(optimizer, SAM)

    def step(self, loss_fn: Callable[[Any], Tensor | tuple[Tensor, Any]],
             micro_batches: Sequence[Any]) -> StepResult:
        if not micro_batches:
            raise ValueError("OptimizationStep.step needs at least one micro-batch")
        self.optimizer.zero_grad(set_to_none=True)
        sync_first_pass = not (self.is_sam and self.per_replica_perturbation)
        loss, aux = self._forward_backward(loss_fn, micro_batches, sync=sync_first_pass)
        if not self.is_sam:
            skipped, norm = self._apply_update(self.optimizer, math.isfinite(loss))
            return StepResult(loss, skipped, norm, aux)

        # SAM: gradient at w, ascend to w + e, gradient there, update w with it. fp16 gradients are
        # left scaled for the ascent (its direction is scale-free); scaler.unscale_ is kept for the
        # second pass, once per update.
        ascent_norm = self.optimizer.perturb_weights(overwrite_grads=True)
        if not math.isfinite(ascent_norm):
            self._skip_step()
            return StepResult(loss, True, None, aux)
        self.optimizer.zero_grad(set_to_none=True)
        with frozen_batchnorm_stats(self.model):
            perturbed_loss, _ = self._forward_backward(loss_fn, micro_batches, sync=True)
        self.optimizer.restore_weights()
        skipped, norm = self._apply_update(self.optimizer.base_optimizer, math.isfinite(perturbed_loss))
        self.optimizer._opt_called = True
        return StepResult(loss, skipped, norm, aux)

    # --- pieces --------------------------------------------------------------------------------
    def _forward_backward(self, loss_fn, micro_batches, sync: bool) -> tuple[float, list[Any]]:
        k = len(micro_batches)
        total: Tensor | None = None  # summed on the loss's device: one host sync per pass, not per micro-batch
        aux_per_batch = []
        for i, micro_batch in enumerate(micro_batches):
            all_reduce_now = sync and i == k - 1
            with self._no_sync_unless(all_reduce_now):
                with self.amp.autocast():
                    out = loss_fn(micro_batch)
                loss, aux = out if isinstance(out, tuple) else (out, None)
                scaled = loss.float() / k
                if self.scaler is not None:
                    scaled = self.scaler.scale(scaled)
                scaled.backward()
            detached = loss.detach().float()
            total = detached if total is None else total + detached
            aux_per_batch.append(aux)
        return float(total) / k, aux_per_batch

    def _no_sync_unless(self, all_reduce: bool) -> contextlib.AbstractContextManager:
        if all_reduce or not hasattr(self.model, "no_sync"):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def _skip_step(self) -> None:
        """An inf/nan in the first pass: no ascent, no update; fp16 backs its scale off."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.update(new_scale=self.scaler.get_scale() * self.scaler.get_backoff_factor())

    def _apply_update(self, optimizer: torch.optim.Optimizer, loss_finite: bool) -> tuple[bool, float | None]:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return True, None
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        norm = None
        if self.max_grad_norm is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm))
        elif self.track_grad_norm:
            norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(optimizer)  # skips by itself on inf (found while unscaling)
            self.scaler.update()
            skipped = self.scaler.get_scale() < scale  # the scale backs off exactly when inf was found
        else:
            skipped = not loss_finite or (norm is not None and not math.isfinite(norm))
            if not skipped:
                optimizer.step()
        return skipped, None if skipped else norm

    # --- checkpoint state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
