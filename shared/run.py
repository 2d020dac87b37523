"""The life of a run, the same in every tool.

    config = {...every resolved setting...}                 # after the inputs are validated
    resume = load_resume(args.resume, config, RESUME_MAY_CHANGE) if args.resume else None
    run_dir = choose_run_dir(resume=resume, output_dir=args.output_dir, root="outputs", name=run_name)
    tracker = open_run(run_dir, config, resume=resume, is_main=ctx.is_main, use_tensorboard=True)
    ...                                                      # resume.restore(model=..., optimizer=...)
    save_checkpoint(run_dir / "latest_model.pth",
                    capture_training_state(..., extra={"config": config}))

- The run folder is only created by `open_run`, so a tool that validates its data, config,
  checkpoint and model name first never leaves an empty folder behind after bad input.
- A resume goes back into the checkpoint's own folder unless `--output_dir` says otherwise.
- A resume that would change the experiment is refused with one line naming every differing key
  as `key: old -> new`; each tool declares the keys that may change (paths, workers, logging) in
  one place, and `epochs` may grow.
- On resume, `metrics.jsonl` rows past the checkpoint's step are dropped, TensorBoard is purged
  from that step, and wandb continues the same run id (also offline).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from shared.checkpoint import CheckpointError, load_checkpoint, restore_training_state
from shared.tracking import RunTracker, to_jsonable, unique_run_dir

# Keys that a longer run may increase on resume (the schedule is rebuilt for the new length by
# the tool, or the tool lists them in `may_change` only when its schedule does not depend on them).
MAY_INCREASE_DEFAULT = ("epochs", "num_epochs", "*.epochs", "*.num_epochs")
WANDB_ID_FILE = "wandb_run_id"
_ABSENT = object()


class RunError(ValueError):
    """A user's error about the run (a resume that changes the experiment, a wrong run folder);
    the message is one line and names the file."""


# ------------------------------------------------------------------------------------------------
# The resume check


def _allowed(path: str, patterns: Iterable[str]) -> bool:
    """`path` (dotted) is covered by a pattern equal to it, a prefix of it (`output` covers
    `output.dir`), or a pattern `*.name` matching its last part."""
    for pattern in patterns:
        if path == pattern or path.startswith(pattern + "."):
            return True
        if pattern.startswith("*.") and path.rsplit(".", 1)[-1] == pattern[2:]:
            return True
    return False


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "<absent>"
    return value if isinstance(value, str) else json.dumps(to_jsonable(value))


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any], *, may_change: Iterable[str] = (),
                       may_increase: Iterable[str] = MAY_INCREASE_DEFAULT, prefix: str = "") -> list[str]:
    """`key: old -> new` for every key (nested, by dotted path) whose change alters the experiment.
    Both configs are compared in their JSON form, so a tuple equals the list it was saved as."""
    may_change, may_increase = tuple(may_change), tuple(may_increase)
    stored, current = to_jsonable(stored), to_jsonable(current)
    differences = []
    for key in sorted(set(stored) | set(current)):
        path = f"{prefix}{key}"
        if _allowed(path, may_change):
            continue
        old, new = stored.get(key, _ABSENT), current.get(key, _ABSENT)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += config_differences(old, new, may_change=may_change, may_increase=may_increase,
                                              prefix=f"{path}.")
        elif old != new:
            growing = (_allowed(path, may_increase) and isinstance(old, (int, float)) and isinstance(new, (int, float))
                       and new >= old)
            if not growing:
                differences.append(f"{path}: {_show(old)} -> {_show(new)}")
    return differences


@dataclass
class ResumePoint:
    """A checkpoint accepted for resuming: its payload, where it lies, and how far it got."""

    checkpoint: Path
    payload: dict[str, Any]
    step: int
    epoch: int
    config: dict[str, Any]

    def restore(self, *, model: nn.Module, optimizer: Any = None, scheduler: Any = None,
                stepper: Any = None) -> dict[str, Any]:
        """`restore_training_state` from this checkpoint; errors name its file."""
        return restore_training_state(self.payload, model=model, optimizer=optimizer, scheduler=scheduler,
                                      stepper=stepper, source_name=str(self.checkpoint))


def stored_config(checkpoint: Path, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment config a checkpoint was trained with: `extra["config"]` in the checkpoint
    (every tool saves it there), else the `config.json` beside it."""
    extra = payload.get("extra") if isinstance(payload, Mapping) else None
    if isinstance(extra, Mapping) and isinstance(extra.get("config"), Mapping):
        return dict(extra["config"])
    beside = checkpoint.parent / "config.json"
    if beside.is_file():
        return json.loads(beside.read_text())
    raise RunError(f"{checkpoint}: holds no training config and has no config.json beside it; "
                   "not a resumable checkpoint of this tool")


def load_resume(checkpoint: str | os.PathLike, config: Mapping[str, Any], *, may_change: Iterable[str] = (),
                may_increase: Iterable[str] = MAY_INCREASE_DEFAULT) -> ResumePoint:
    """Load `checkpoint` and refuse it when `config` would make the rest a different experiment."""
    path = Path(checkpoint)
    payload = load_checkpoint(path)
    if not isinstance(payload, Mapping) or "model_state_dict" not in payload or "step" not in payload:
        raise CheckpointError(f"{path}: not a resumable training checkpoint (needs model_state_dict and step); "
                              "pass a latest_model.pth written by this tool")
    old = stored_config(path, payload)
    may_change = tuple(may_change)
    differences = config_differences(old, config, may_change=may_change, may_increase=may_increase)
    if differences:
        allowed = ", ".join(may_change + tuple(f"{k} (longer)" for k in may_increase)) or "nothing"
        raise RunError(f"{path}: resume would change the experiment: {'; '.join(differences)} "
                       f"(a resume may change only: {allowed}; start a new run for a new experiment)")
    return ResumePoint(checkpoint=path, payload=dict(payload), step=int(payload["step"]),
                       epoch=int(payload.get("epoch") or 0), config=old)


# ------------------------------------------------------------------------------------------------
# The run folder


def choose_run_dir(*, resume: ResumePoint | None, output_dir: str | os.PathLike | None,
                   root: str | os.PathLike = "outputs", name: str = "run") -> Path:
    """Where the run writes; nothing is created here.

    A resume continues in the checkpoint's own folder unless `output_dir` is given; a given
    `output_dir` is used as it is; otherwise `root/name` (`root/name_1`, ... when taken)."""
    if output_dir is not None:
        return Path(output_dir)
    if resume is not None:
        return resume.checkpoint.resolve().parent
    return unique_run_dir(root, name)


def drop_rows_after(metrics_path: Path, step: int) -> int:
    """Remove `metrics.jsonl` rows logged after `step` (the kill came after the checkpoint);
    returns how many were dropped. Rewritten atomically."""
    if not metrics_path.is_file():
        return 0
    kept, dropped = [], 0
    for line in metrics_path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a row half-written when the process died
            dropped += 1
            continue
        if int(row.get("step", 0)) > step:
            dropped += 1
        else:
            kept.append(line)
    tmp = metrics_path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, metrics_path)
    return dropped


def wandb_run_id(run_dir: Path, resume: ResumePoint | None) -> str:
    """The wandb id of this run folder: kept in `wandb_run_id` so that a resume continues it."""
    path = run_dir / WANDB_ID_FILE
    if resume is not None and path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


def open_run(run_dir: str | os.PathLike, config: Mapping[str, Any], *, resume: ResumePoint | None = None,
             is_main: bool = True, use_wandb: bool = False, use_tensorboard: bool = False,
             **tracker_kwargs: Any) -> RunTracker:
    """Create the run folder (main process only), write `config.json`, and open the tracker; on a
    resume, first drop the metric rows past the checkpoint and continue TensorBoard and wandb."""
    run_dir = Path(run_dir)
    resume_step = resume.step if resume is not None else None
    wandb_id = None
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            drop_rows_after(run_dir / "metrics.jsonl", resume.step)
        if use_wandb:
            wandb_id = wandb_run_id(run_dir, resume)
    return RunTracker(run_dir, config, use_wandb=use_wandb, use_tensorboard=use_tensorboard, enabled=is_main,
                      resume_step=resume_step, wandb_id=wandb_id, **tracker_kwargs)
