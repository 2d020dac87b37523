"""Classification metrics per split and per language, the validation-chosen threshold, and plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score, roc_curve  # noqa: E402

METRIC_NAMES = ("accuracy", "macro_f1", "roc_auc", "sensitivity", "specificity")


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    """accuracy, macro F1, ROC AUC (NaN with one class present), sensitivity, specificity."""
    labels = np.asarray(labels, dtype=int)
    predictions = (np.asarray(probabilities) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predictions, labels=[0, 1]).ravel()
    both_classes = len(np.unique(labels)) == 2
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro", labels=[0, 1], zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, probabilities)) if both_classes else float("nan"),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
    }


def choose_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The threshold maximising Youden's J (sensitivity + specificity - 1) on these (validation) data.

    Ties go to the threshold closest to 0.5; with a single class present 0.5 is returned.
    """
    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, probabilities)
    thresholds = np.clip(thresholds, 0.0, 1.0)  # roc_curve's first threshold is +inf
    youden = tpr - fpr
    best = np.flatnonzero(np.isclose(youden, youden.max()))
    return float(thresholds[best[np.argmin(np.abs(thresholds[best] - 0.5))]])


def metrics_by_language(frame: pd.DataFrame, threshold: float) -> dict[str, dict[str, float]]:
    """`frame` has columns label, probability, language -> {"all": {...}, "<Language>": {...}}."""
    result = {"all": classification_metrics(frame["label"].to_numpy(), frame["probability"].to_numpy(), threshold)}
    for language, group in frame.groupby("language", sort=True):
        result[str(language)] = classification_metrics(group["label"].to_numpy(), group["probability"].to_numpy(),
                                                       threshold)
    return result


def save_roc_plot(labels: np.ndarray, probabilities: np.ndarray, path: Path, title: str) -> None:
    figure, axis = plt.subplots(figsize=(4, 4))
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, probabilities)
        axis.plot(fpr, tpr, label=f"AUC {roc_auc_score(labels, probabilities):.3f}")
    axis.plot([0, 1], [0, 1], "--", color="grey")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_confusion_plot(labels: np.ndarray, probabilities: np.ndarray, threshold: float, path: Path,
                        title: str) -> None:
    matrix = confusion_matrix(labels, (probabilities >= threshold).astype(int), labels=[0, 1])
    figure, axis = plt.subplots(figsize=(4, 4))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha="center", va="center")
    axis.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["control", "dementia"], yticklabels=["control", "dementia"],
             xlabel="predicted", ylabel="true", title=f"{title} (threshold {threshold:.2f})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
