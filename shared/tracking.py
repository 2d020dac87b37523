"""One logger per run: metrics to a local JSONL always; wandb and/or TensorBoard when asked;
PNG plots of the curves when the run ends.

wandb runs offline (files under the run folder, `wandb sync` later) when no API key is configured,
so a run on an air-gapped GPU box never hangs at login.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def unique_run_dir(root: str | os.PathLike, name: str, overwrite: bool = False) -> Path:
    """`root/name`, or `root/name_1`, `_2`, ... when taken (not created): a run never overwrites
    another's folder unless `overwrite`."""
    root = Path(root)
    candidate = root / name
    suffix = 1
    while candidate.exists() and any(candidate.iterdir()) and not overwrite:
        candidate = root / f"{name}_{suffix}"
        suffix += 1
    return candidate


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # 0-d tensors / arrays
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class RunTracker:
    def __init__(self, output_dir: str | os.PathLike, config: Mapping[str, Any], *, use_wandb: bool = False,
                 wandb_project: str | None = None, wandb_entity: str | None = None,
                 run_name: str | None = None, tags: Iterable[str] = (), use_tensorboard: bool = False,
                 tensorboard_dir: str | os.PathLike | None = None, enabled: bool = True,
                 resume_step: int | None = None, wandb_id: str | None = None):
        """`resume_step`: the run continues after this step (TensorBoard events past it are purged);
        `wandb_id`: continue (or start) the wandb run with this id. `shared.run.open_run` sets both."""
        self.output_dir = Path(output_dir)
        self.enabled = enabled
        self.metrics_path = self.output_dir / "metrics.jsonl"
        self.wandb_run = None
        self.tb_writer = None
        self.wandb_mode: str | None = None
        if not enabled:  # non-main DDP ranks log nothing
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.output_dir / "config.json", config)
        if use_wandb:
            import wandb

            self.wandb_mode = os.environ.get("WANDB_MODE") or ("online" if wandb_has_credentials() else "offline")
            self.wandb_run = wandb.init(project=wandb_project, entity=wandb_entity, name=run_name,
                                        tags=list(tags), config=to_jsonable(config), dir=str(self.output_dir),
                                        mode=self.wandb_mode, id=wandb_id,
                                        resume="allow" if wandb_id else None)
        if use_tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge_step = resume_step + 1 if resume_step is not None else None
            self.tb_writer = SummaryWriter(log_dir=str(tensorboard_dir or self.output_dir / "runs"),
                                           purge_step=purge_step)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": time.time(), **to_jsonable(metrics)}
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        numeric = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("step", "time")}
        if self.wandb_run is not None:
            self.wandb_run.log(numeric, step=step)
        if self.tb_writer is not None:
            for key, value in numeric.items():
                self.tb_writer.add_scalar(key, value, step)

    def log_images(self, tag: str, images: Mapping[str, np.ndarray], step: int) -> None:
        """`images`: name -> HxWx3 uint8 arrays (e.g. overlays of image / truth / prediction)."""
        if not self.enabled:
            return
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({f"{tag}/{k}": wandb.Image(v) for k, v in images.items()}, step=step)
        if self.tb_writer is not None:
            for name, image in images.items():
                self.tb_writer.add_image(f"{tag}/{name}", image, step, dataformats="HWC")

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path)

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        path = self.output_dir / f"training_summary_{timestamp()}.json"
        if self.enabled:
            write_json(path, summary)
            if self.wandb_run is not None:
                self.wandb_run.summary.update(to_jsonable(summary))
        return path

    def finish(self) -> list[Path]:
        """Close the backends and plot every logged numeric series; returns the PNG paths."""
        if not self.enabled:
            return []
        plots = plot_metric_curves(self.metrics_path, self.output_dir)
        if self.tb_writer is not None:
            self.tb_writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
        return plots


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_metric_curves(metrics_path: str | os.PathLike, output_dir: str | os.PathLike) -> list[Path]:
    """`loss_curves.png` (every key containing "loss") and `metric_curves.png` (the rest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(metrics_path)
    series: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key in ("step", "time", "epoch") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(row["step"])
            values.append(value)
    written = []
    for filename, keys in (("loss_curves.png", [k for k in series if "loss" in k]),
                           ("metric_curves.png", [k for k in series if "loss" not in k and k != "lr"])):
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in sorted(keys):
            ax.plot(*series[key], label=key, marker="." if len(series[key][0]) < 30 else None)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = Path(output_dir) / filename
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
