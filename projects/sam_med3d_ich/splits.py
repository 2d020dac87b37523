"""Patient-level splits: no patient in two splits, both classes in every split when possible."""

from __future__ import annotations

import numpy as np
import pandas as pd


def split_by_patient(table: pd.DataFrame, fractions: tuple[float, float, float], seed: int
                     ) -> dict[str, pd.DataFrame]:
    """train/val/test with no patient in two splits, positives and negatives spread over all three."""
    rng = np.random.default_rng(seed)
    patient_label = table.groupby("patient_id")["ich"].max()
    assignment: dict[str, str] = {}
    for label in (0, 1):
        patients = sorted(patient_label[patient_label == label].index)
        rng.shuffle(patients)
        n = len(patients)
        n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
        n_test = max(1, round(fractions[2] * n)) if n >= 3 and fractions[2] > 0 else 0
        for i, patient in enumerate(patients):
            assignment[patient] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    names = ["train", "val"] + (["test"] if fractions[2] > 0 else [])
    return {name: table[table["patient_id"].map(assignment) == name].reset_index(drop=True) for name in names}
