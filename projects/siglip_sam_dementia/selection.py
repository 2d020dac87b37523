"""Model selection on validation: the --select_by score, ties broken by the lower validation loss,
and early stopping after --early_stopping_patience epochs without a better choice.

On small validation sets AUC saturates (1.0 after a few epochs) or ties; a strict `auc > best` keeps
the first such epoch. Here an epoch is better when its score is higher, or equal and its validation
loss lower, so among tied epochs the one with the lowest validation loss is kept.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from projects.siglip_sam_dementia.metrics import classification_metrics, metrics_by_language

TIE_BREAK = "val_loss"


def selection_rule(select_by: str) -> str:
    """How the tables state the rule, e.g. `val_auc (ties: lower val_loss)`."""
    return select_by if select_by == "val_loss" else f"{select_by} (ties: lower {TIE_BREAK})"


def validation_scores(val: pd.DataFrame, threshold: float, val_loss: float) -> dict[str, float]:
    """Every selectable score of one epoch's validation predictions (higher is better, except loss)."""
    overall = classification_metrics(val["label"].to_numpy(), val["probability"].to_numpy(), threshold)
    per_language = [m["roc_auc"] for name, m in metrics_by_language(val, threshold).items() if name != "all"]
    finite = [auc for auc in per_language if math.isfinite(auc)]
    return {"val_auc": overall["roc_auc"], "val_macro_f1": overall["macro_f1"], "val_accuracy": overall["accuracy"],
            "val_loss": val_loss, "per_language_mean_auc": float(np.mean(finite)) if finite else math.nan}


@dataclass
class Choice:
    epoch: int  # 0-based
    score: float  # the --select_by value, oriented so that higher is better
    val_loss: float


@dataclass
class ModelSelection:
    select_by: str
    patience: int | None = None
    best: Choice | None = None
    stale_epochs: int = 0  # epochs since the last better choice
    stopped_early: bool = False

    def score_of(self, scores: dict[str, float]) -> float:
        value = scores[self.select_by]
        value = -value if self.select_by == "val_loss" else value
        return value if math.isfinite(value) else -math.inf

    def is_better(self, candidate: Choice) -> bool:
        if self.best is None:
            return True
        if candidate.score != self.best.score:
            return candidate.score > self.best.score
        return candidate.val_loss < self.best.val_loss

    def update(self, epoch: int, scores: dict[str, float]) -> bool:
        """Record `epoch`; True when it becomes the chosen one. Sets `stopped_early` when the
        patience runs out."""
        candidate = Choice(epoch, self.score_of(scores), scores["val_loss"])
        improved = self.is_better(candidate)
        if improved:
            self.best, self.stale_epochs = candidate, 0
        else:
            self.stale_epochs += 1
        self.stopped_early = self.patience is not None and self.stale_epochs >= self.patience
        return improved

    def state_dict(self) -> dict:
        return {"best": asdict(self.best) if self.best else None, "stale_epochs": self.stale_epochs,
                "stopped_early": self.stopped_early}

    def load_state_dict(self, state: dict) -> None:
        self.best = Choice(**state["best"]) if state.get("best") else None
        self.stale_epochs = int(state.get("stale_epochs", 0))
        self.stopped_early = bool(state.get("stopped_early", False))
