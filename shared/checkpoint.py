"""Checkpoints: atomic writes, full resume state, and careful loading of foreign files.

A checkpoint is written to a temporary file in the same folder, flushed to disk and then renamed
over the target (`os.replace` is atomic on POSIX), so a run killed mid-save leaves the last good
checkpoint in place.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module under DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(payload), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load safely (`weights_only=True`); files that pickle other objects (e.g. the published
    SAM-Med3D checkpoints hold an argparse Namespace) are loaded fully with a warning."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as safe_error:
        if "Weights only load failed" not in str(safe_error) or not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(safe_error)})") from None
        warnings.warn(f"{path}: holds pickled Python objects beyond tensors; loading it with "
                      "weights_only=False — only do this for files you trust", stacklevel=2)
    except Exception as error:  # noqa: BLE001 - torch raises many types for damaged files
        raise CheckpointError(
            f"{path}: not a readable checkpoint, truncated or corrupt ({_first_line(error)})") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001 - any failure here means an unreadable file
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


STATE_KEYS = ("model_state_dict", "state_dict", "model", "module", "network")


def extract_model_state(obj: Any, prefixes_to_strip: Iterable[str] = ("module.",)) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint (`model_state_dict` / `state_dict` / `model` / bare),
    with wrapper prefixes such as DDP's `module.` removed."""
    state = obj
    while isinstance(state, Mapping):
        inner = next((state[k] for k in STATE_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("the checkpoint holds no tensor state dict "
                              f"(top-level keys: {sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__})")
    prefixes = tuple(prefixes_to_strip)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 5) -> str:
        parts = []
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
                parts.append(f"{len(keys)} {label} keys: {', '.join(keys[:limit])}{more}")
        if self.mismatched:
            shown = ", ".join(f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:limit])
            parts.append(f"{len(self.mismatched)} shape mismatches: {shown}")
        return "; ".join(parts) or "all keys match"


def load_model_state(model: nn.Module, source: str | os.PathLike | Mapping[str, Any], strict: bool = True,
                     prefixes_to_strip: Iterable[str] = ("module.",), source_name: str | None = None) -> LoadReport:
    """Load weights into `model` (unwrapped). Strict: any missing / unexpected / mis-shaped key
    raises `CheckpointError` naming the file and the keys; non-strict loads what fits and reports."""
    name = source_name or (str(source) if isinstance(source, (str, os.PathLike)) else "state dict")
    obj = load_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    try:
        state = extract_model_state(obj, prefixes_to_strip)
    except CheckpointError as error:
        raise CheckpointError(f"{name}: {error}") from None
    target = unwrap_model(model)
    expected = target.state_dict()
    report = LoadReport(
        missing=sorted(set(expected) - set(state)),
        unexpected=sorted(set(state) - set(expected)),
        mismatched=[(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items()
                    if k in expected and v.shape != expected[k].shape],
    )
    if strict and not report.ok:
        raise CheckpointError(f"{name}: does not fit {type(target).__name__}: {report.describe()}")
    fitting = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    target.load_state_dict(fitting, strict=False)
    return report


# -------------------------------------------------------------------------------------------------
# Resume state


def rng_state() -> dict[str, Any]:
    # numpy's state is stored as plain ints and a tensor so that the checkpoint loads with weights_only
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def capture_training_state(*, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any = None,
                           stepper: Any = None, epoch: int, step: int, best_metric: float | None = None,
                           extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to continue a run exactly: weights, optimizer, schedule, scaler, counters, RNG."""
    return {
        "model_state_dict": unwrap_model(model).state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": scheduler.state_dict() if scheduler is not None else None,
        "stepper_state_dict": stepper.state_dict() if stepper is not None else None,
        "epoch": epoch,
        "step": step,
        "best_metric": best_metric,
        "rng_state": rng_state(),
        "extra": dict(extra or {}),
    }


def restore_training_state(source: str | os.PathLike | Mapping[str, Any], *, model: nn.Module,
                           optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                           stepper: Any = None, source_name: str | None = None) -> dict[str, Any]:
    name = source_name or (str(source) if isinstance(source, (str, os.PathLike)) else "resume state")
    payload = load_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(payload, Mapping) or "model_state_dict" not in payload or "epoch" not in payload:
        raise CheckpointError(f"{name}: not a resumable training checkpoint (needs model_state_dict and epoch)")
    load_model_state(model, payload["model_state_dict"], strict=True, source_name=name)
    if optimizer is not None and payload.get("optimizer_state_dict") is not None:
        optimizer.load_state_dict(payload["optimizer_state_dict"])
    if scheduler is not None and payload.get("scheduler_state_dict") is not None:
        scheduler.load_state_dict(payload["scheduler_state_dict"])
    if stepper is not None and payload.get("stepper_state_dict") is not None:
        stepper.load_state_dict(payload["stepper_state_dict"])
    if payload.get("rng_state") is not None:
        set_rng_state(payload["rng_state"])
    return {k: payload.get(k) for k in ("epoch", "step", "best_metric", "extra")}
