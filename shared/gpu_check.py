"""`make gpu-check`: every tool at full size on one CUDA GPU — a few optimizer steps per optimizer
and precision, with and without gradient checkpointing.

Each tool describes its models as `GpuCheckCase`s (`projects/<tool>/gpu_check.py`,
`gpu_check_cases(size)`); `samkit gpu-check` collects them and calls `run_gpu_check`, which for every
case x optimizer x precision (fp32; fp16 with GradScaler; bf16) x gradient checkpointing (off, on)
starts from the same initial weights and batch, runs `case.steps` steps through
`shared.sam.OptimizationStep`, and reports: whether every loss was finite, how far the AMP loss curve
is from fp32's (within `AMP_RTOL`·|fp32 loss| + `AMP_ATOL`, loss against loss after the same number
of applied updates?), the mean step time (after
one warm-up step, between `torch.cuda.synchronize()` calls), and the peak CUDA memory
(`torch.cuda.max_memory_allocated`, reset per configuration). Then each case's `extra` measurements
and the `shared.sam` step/floor ratios of `shared/bench.py` on the same device. It writes
`<out_dir>/summary.json` and prints a table. A configuration that fails (out of memory, an error in a
tool's case) is recorded with its error and the run goes on.

On a CPU (`samkit gpu-check --device cpu --size tiny`) the same loop runs as a smoke test of the
runner and the tools' cases: tiny models, no CUDA memory figures; the summary says `smoke` and goes to
`runs/gpu-check/smoke/` unless `--out` is given.
"""

from __future__ import annotations

import datetime
import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

PRECISIONS = ("fp32", "fp16", "bf16")
# The AMP loss curve passes when |loss_amp - loss_fp32| <= AMP_ATOL + AMP_RTOL * |loss_fp32| for every
# pair of losses taken after the same number of applied updates (fp16 / bf16 keep 11 / 8 significant
# bits through a whole network; a step the fp16 GradScaler skips during its scale search is no update).
AMP_RTOL = 0.05
AMP_ATOL = 0.01
WEIGHT_DECAY = 0.01
SUMMARY_NAME = "summary.json"
# (optimizer-heavy, compute-heavy) batches of shared/bench.py's models for the step/floor ratio on a GPU
GPU_SAM_BATCHES = {"mlp": (512, 16384), "vit": (32, 512)}
SMOKE_SAM_BATCHES = {"mlp": (8,)}

ROW_COLUMNS = ("tool", "case", "optimizer", "precision", "gradient_checkpointing", "losses", "finite",
               "skipped_steps", "amp_max_abs_diff", "amp_within_tolerance", "mean_step_ms", "peak_cuda_mb",
               "error")


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


# -------------------------------------------------------------------------------------------------
# One configuration


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    """Drop the last configuration's tensors so the next one's peak is its own (CUDA only)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def run_configuration(case: GpuCheckCase, model: nn.Module, batch: Any, optimizer_name: str, precision: str,
                      device: torch.device) -> dict[str, Any]:
    """`case.steps` steps of `model` (already on `device`, at its initial weights) on `batch`."""
    from shared.amp import AmpPolicy
    from shared.optim import build_optimizer
    from shared.sam import OptimizationStep

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    optimizer = build_optimizer(optimizer_name, model, case.lr, WEIGHT_DECAY)
    stepper = OptimizationStep(model, optimizer, AmpPolicy.create(device, dtype=precision))
    losses, seconds, skipped, updates_before = [], [], 0, []
    for step in range(case.steps):
        _sync(device)
        start = time.perf_counter()
        result = stepper.step(lambda b: case.loss(model, b), [batch])
        _sync(device)
        seconds.append(time.perf_counter() - start)
        losses.append(result.loss)  # the loss before this step's update
        updates_before.append(step - skipped)
        skipped += int(result.skipped)
    timed = seconds[1:] or seconds  # the first step pays for kernel selection and allocator growth
    return {"losses": losses, "updates_before": updates_before,
            "finite": all(math.isfinite(v) for v in losses), "skipped_steps": skipped,
            "mean_step_ms": 1000 * sum(timed) / len(timed),
            "peak_cuda_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def amp_difference(run: dict[str, Any], reference: dict[str, Any]) -> tuple[float, bool]:
    """Largest |amp - fp32| and whether every compared pair is within the stated tolerance. Losses are
    paired by the number of updates applied before them: after a step the fp16 GradScaler skipped
    (its scale search) the AMP run's next loss is compared with fp32's loss before the same update."""
    fp32_at = dict(zip(reference["updates_before"], reference["losses"]))
    pairs = [(loss, fp32_at[k]) for loss, k in zip(run["losses"], run["updates_before"]) if k in fp32_at]
    if not pairs:
        return float("nan"), False
    within = all(abs(a - b) <= AMP_ATOL + AMP_RTOL * abs(b) for a, b in pairs)
    return max(abs(a - b) for a, b in pairs), within


def _precision_supported(precision: str, device: torch.device) -> str | None:
    """None when the precision runs on the device, else why not."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "bf16 not supported by this GPU"
    return None


def run_case(case: GpuCheckCase, device: torch.device, precisions: tuple[str, ...] = PRECISIONS,
             deadline: float = math.inf, seed: int = 0) -> list[dict[str, Any]]:
    """Every optimizer x precision x gradient checkpointing of one case, from one initial state."""
    rows: list[dict[str, Any]] = []
    torch.manual_seed(seed)
    batch = case.make_batch(device)
    initial: dict[str, torch.Tensor] | None = None
    fp32_runs: dict[tuple[str, bool], dict[str, Any]] = {}
    for checkpointing in (False, True):
        base = {"tool": case.tool, "case": case.name, "gradient_checkpointing": checkpointing}
        try:
            torch.manual_seed(seed)
            model = case.build_model(checkpointing)
            if initial is None:
                initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                model.load_state_dict(initial)
            model.to(device).train()
        except Exception as error:  # noqa: BLE001 - a failing case is reported, the run goes on
            rows += [{**base, "optimizer": o, "precision": p, "error": f"{type(error).__name__}: {error}"}
                     for o in case.optimizers for p in precisions]
            continue
        for optimizer_name in case.optimizers:
            for precision in precisions:
                row = {**base, "optimizer": optimizer_name, "precision": precision}
                why_not = _precision_supported(precision, device)
                if why_not or time.monotonic() > deadline:
                    rows.append({**row, "error": why_not or "not run: the time budget was spent"})
                    continue
                try:
                    model.load_state_dict(initial)
                    model.zero_grad(set_to_none=True)
                    row.update(run_configuration(case, model, batch, optimizer_name, precision, device))
                except Exception as error:  # noqa: BLE001 - e.g. out of memory: recorded, the run goes on
                    row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                model.zero_grad(set_to_none=True)
                _free(device)
                if precision == "fp32" and "losses" in row:
                    fp32_runs[(optimizer_name, checkpointing)] = row
                reference = fp32_runs.get((optimizer_name, checkpointing))
                if precision != "fp32" and "losses" in row and reference is not None:
                    row["amp_max_abs_diff"], row["amp_within_tolerance"] = amp_difference(row, reference)
                rows.append(row)
        del model
        _free(device)
    return [{column: row.get(column) for column in ROW_COLUMNS} for row in rows]


# -------------------------------------------------------------------------------------------------
# The whole check


def sam_step_ratios(device: torch.device, batches: dict[str, tuple[int, ...]], rounds: int,
                    repeats: int) -> list[dict[str, Any]]:
    from shared.bench import MODELS, step_time_ratios

    rows = []
    for model_name, sizes in batches.items():
        for batch in sizes:
            try:
                ratios = step_time_ratios(model_name, batch, device, rounds=rounds, repeats=repeats)
                rows.append({"model": MODELS[model_name].description, "batch": batch, **ratios})
            except Exception as error:  # noqa: BLE001
                rows.append({"model": MODELS[model_name].description, "batch": batch,
                             "error": f"{type(error).__name__}: {error}"})
            _free(device)
    return rows


def run_gpu_check(cases: list[GpuCheckCase], device: torch.device | str, out_dir: str | Path, *,
                  not_available: dict[str, str] | None = None, precisions: tuple[str, ...] = PRECISIONS,
                  time_budget_s: float = 420.0, sam_batches: dict[str, tuple[int, ...]] | None = None,
                  smoke: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every case, write `<out_dir>/summary.json`, print the table, return the summary.

    `not_available` maps a tool to why it has no cases (reported, not fatal). Configurations that
    would start after `time_budget_s` are reported as not run.
    """
    from shared.tracking import write_json

    device = torch.device(device)
    start = time.monotonic()
    deadline = start + time_budget_s
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    for case in cases:
        echo(f"gpu-check: {case.tool} / {case.name}")
        rows += run_case(case, device, precisions, deadline)
        if case.extra is not None and time.monotonic() > deadline:
            extra[f"{case.tool} / {case.name}"] = {"error": "not run: the time budget was spent"}
        elif case.extra is not None:
            try:
                extra[f"{case.tool} / {case.name}"] = case.extra(device)
            except Exception as error:  # noqa: BLE001
                extra[f"{case.tool} / {case.name}"] = {"error": f"{type(error).__name__}: {error}"}
            _free(device)
    if sam_batches is None:
        sam_batches = GPU_SAM_BATCHES if device.type == "cuda" and not smoke else SMOKE_SAM_BATCHES
    rounds, repeats = (5, 5) if device.type == "cuda" and not smoke else (1, 1)
    summary = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "smoke": smoke,
        "amp_tolerance": {"rtol": AMP_RTOL, "atol": AMP_ATOL,
                          "rule": "|loss_amp - loss_fp32| <= atol + rtol * |loss_fp32| after every same "
                                  "number of applied updates"},
        "columns": list(ROW_COLUMNS),
        "rows": rows,
        "extra": extra,
        "not_available": dict(not_available or {}),
        "shared_sam_step_over_floor": sam_step_ratios(device, sam_batches, rounds, repeats),
    }
    summary["elapsed_s"] = time.monotonic() - start
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / SUMMARY_NAME, summary)
    echo(format_table(summary))
    echo(f"written: {out_dir / SUMMARY_NAME}")
    return summary


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(summary: dict[str, Any]) -> str:
    title = (f"gpu-check {summary['date']} on {summary['device_name']} ({summary['device']}), torch {summary['torch']}"
             + ("  [SMOKE: tiny models, not a GPU measurement]" if summary["smoke"] else ""))
    header = (f"{'tool':21s} {'case':44s} {'optim':6s} {'prec':5s} {'ckpt':4s} {'finite':6s} {'skip':4s} "
              f"{'loss first->last':18s} {'amp |d|':>8s} {'amp ok':6s} {'step ms':>9s} {'peak MB':>9s}")
    lines = [title, header, "-" * len(header)]
    for row in summary["rows"]:
        lead = (f"{row['tool'][:21]:21s} {row['case'][:44]:44s} {row['optimizer'][:6]:6s} {row['precision']:5s} "
                f"{'on' if row['gradient_checkpointing'] else 'off':4s} ")
        if row["error"]:
            lines.append(lead + f"error: {row['error'][:80]}")
            continue
        losses = row["losses"]
        ok = row["amp_within_tolerance"]
        lines.append(lead + f"{'yes' if row['finite'] else 'NO':6s} {row['skipped_steps']:4d} "
                     f"{f'{losses[0]:.4g}->{losses[-1]:.4g}':18s} {_cell(row['amp_max_abs_diff'], '8.3g')} "
                     f"{'-' if ok is None else ('yes' if ok else 'NO'):6s} {_cell(row['mean_step_ms'], '9.1f')} "
                     f"{_cell(row['peak_cuda_mb'], '9.0f')}")
    for tool, reason in summary["not_available"].items():
        lines.append(f"{tool:22s} {reason}")
    for name, values in summary["extra"].items():
        lines.append(f"extra {name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                   for k, v in values.items()))
    for ratio in summary["shared_sam_step_over_floor"]:
        if "error" in ratio:
            lines.append(f"shared.sam {ratio['model']}, batch {ratio['batch']}: error: {ratio['error']}")
        else:
            lines.append(f"shared.sam {ratio['model']}, batch {ratio['batch']}: step / floor SAM {ratio['sam']:.3f}, "
                         f"ASAM {ratio['asam']:.3f}, clone-per-step {ratio['reference']:.3f} "
                         f"(floor {ratio['floor_ms']:.2f} ms)")
    lines.append(f"AMP tolerance: {summary['amp_tolerance']['rule']} (rtol {AMP_RTOL}, atol {AMP_ATOL}); "
                 f"total {summary['elapsed_s']:.0f} s")
    return "\n".join(lines)
