import numpy as np
import pandas as pd
import pytest

from projects.siglip_sam_dementia.metrics import choose_threshold, classification_metrics, metrics_by_language


def test_metrics_on_a_known_confusion_matrix():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probabilities = np.array([0.1, 0.2, 0.3, 0.7, 0.4, 0.6, 0.8, 0.9])
    m = classification_metrics(labels, probabilities, threshold=0.5)  # tn 3, fp 1, fn 1, tp 3
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["sensitivity"] == pytest.approx(0.75) and m["specificity"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(0.75)
    assert m["roc_auc"] == pytest.approx(14 / 16)
    assert classification_metrics(labels, probabilities, threshold=0.85)["sensitivity"] == pytest.approx(0.25)


def test_threshold_maximises_youden_on_the_data_it_is_given():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.array([0.05, 0.1, 0.15, 0.2, 0.25, 0.3])  # separable, but all below 0.5
    threshold = choose_threshold(labels, probabilities)
    assert 0.15 < threshold <= 0.2
    assert classification_metrics(labels, probabilities, threshold)["accuracy"] == 1.0
    assert choose_threshold(np.array([1, 1]), np.array([0.2, 0.9])) == 0.5  # one class: no basis to move


def test_metrics_per_language():
    frame = pd.DataFrame({"label": [0, 1, 0, 1], "probability": [0.1, 0.9, 0.8, 0.2],
                          "language": ["English", "English", "Greek", "Greek"]})
    result = metrics_by_language(frame, 0.5)
    assert set(result) == {"all", "English", "Greek"}
    assert result["English"]["accuracy"] == 1.0 and result["Greek"]["accuracy"] == 0.0
    assert result["all"]["accuracy"] == 0.5
