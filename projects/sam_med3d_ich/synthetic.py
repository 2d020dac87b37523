"""Synthetic head CT in Hounsfield units: air, skull, brain, ventricles and hyperdense bleeds of
several sizes; ICH-negative scans have no bleed.

`write_dataset` writes the tool's on-disk layout (`volumes/NNN.pkl` as bare arrays and as dicts,
`masks/NNN.nii`, `train.csv` / `val.csv` / `test.csv` with `path,ich,patient_id`, split by patient);
`write_physionet_layout` writes PhysioNet CT-ICH's (`ct_scans/NNN.nii`, `masks/NNN.nii`, diagnosis CSV).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from projects.sam_med3d_ich.splits import split_by_patient

AIR_HU, BONE_HU, BRAIN_HU, CSF_HU = -1000.0, 1000.0, 35.0, 5.0
BLEED_HU = (65.0, 85.0)
BLEED_RADII = ((0.10, 0.13), (0.14, 0.18), (0.19, 0.24))  # small, medium, large, as a share of the volume


def _ellipsoid(grid: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0


def synth_head_ct(shape: tuple[int, int, int], rng: np.random.Generator, n_bleeds: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """-> (HU float32 [X, Y, Z], 0/1 uint8 haemorrhage mask). Coordinates are in units of the shape."""
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij"))
    centre = 0.5 + rng.uniform(-0.03, 0.03, 3)
    head_radii = np.array([0.44, 0.40, 0.42]) * rng.uniform(0.92, 1.05, 3)
    head = _ellipsoid(grid, centre, head_radii)
    brain = _ellipsoid(grid, centre, head_radii - 0.06)
    ventricles = np.zeros(shape, bool)
    for side in (-1, 1):
        offset = np.array([0.0, side * 0.07, 0.0])
        ventricles |= _ellipsoid(grid, centre + offset, np.array([0.12, 0.04, 0.08]) * rng.uniform(0.8, 1.2, 3))

    volume = np.full(shape, AIR_HU, np.float32)
    volume[head] = BONE_HU
    volume[brain] = BRAIN_HU
    volume[ventricles & brain] = CSF_HU

    mask = np.zeros(shape, np.uint8)
    for i in range(n_bleeds):
        low, high = BLEED_RADII[i % len(BLEED_RADII)]
        radii = rng.uniform(low, high) * rng.uniform(0.8, 1.2, 3)
        for _ in range(50):  # a centre inside the brain, away from the ventricles
            bleed_centre = centre + rng.uniform(-1, 1, 3) * (head_radii - 0.06 - radii.max())
            if not ventricles[tuple(np.clip((bleed_centre * (np.array(shape) - 1)).round().astype(int), 0,
                                            np.array(shape) - 1))]:
                break
        blob = _ellipsoid(grid, bleed_centre, radii) & brain
        volume[blob] = rng.uniform(*BLEED_HU)
        mask[blob] = 1
    volume += rng.normal(0.0, 4.0, shape).astype(np.float32)
    return volume, mask


def _nifti(array: np.ndarray, spacing: tuple[float, float, float], path: Path) -> None:
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))


def write_dataset(out_dir: str | Path, n_patients: int = 12, shape: tuple[int, int, int] = (40, 40, 32),
                  seed: int = 0, ich_fraction: float = 0.6, split: tuple[float, float, float] = (0.6, 0.2, 0.2),
                  spacing: tuple[float, float, float] = (1.0, 1.0, 1.5)) -> Path:
    """Writes the dataset and returns `out_dir`. Some patients get two scans; negatives alternate
    between an all-zero mask file and no mask at all; volumes alternate between a bare array and
    a dict {"image", "spacing"}."""
    out_dir = Path(out_dir)
    (out_dir / "volumes").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    number = 0
    for patient in range(n_patients):
        ich = int(rng.random() < ich_fraction) if patient >= 2 else 1 - patient % 2  # both classes always
        for _ in range(1 + int(patient % 4 == 3)):
            number += 1
            volume, mask = synth_head_ct(shape, rng, n_bleeds=int(rng.integers(1, 4)) if ich else 0)
            name = f"{number:03d}"
            payload = volume if number % 2 else {"image": volume, "spacing": spacing}
            with (out_dir / "volumes" / f"{name}.pkl").open("wb") as handle:
                pickle.dump(payload, handle)
            if ich or number % 3:
                _nifti(mask, spacing, out_dir / "masks" / f"{name}.nii")
            rows.append({"path": f"volumes/{name}.pkl", "ich": ich, "patient_id": f"P{patient:03d}"})
    table = pd.DataFrame(rows)
    for name, part in split_by_patient(table, split, seed).items():
        part.to_csv(out_dir / f"{name}.csv", index=False)
    return out_dir


def write_physionet_layout(root: str | Path, n_patients: int = 6, shape: tuple[int, int, int] = (40, 40, 16),
                           seed: int = 0) -> Path:
    """PhysioNet CT-ICH's folder layout with synthetic content: ct_scans/NNN.nii (HU), masks/NNN.nii,
    hemorrhage_diagnosis_raw_ct.csv with one row per axial slice."""
    root = Path(root)
    (root / "ct_scans").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n_patients):
        number = 49 + index  # the public release numbers its scans from 049
        volume, mask = synth_head_ct(shape, rng, n_bleeds=2 if index % 2 == 0 else 0)
        _nifti(volume.astype(np.int16), (0.45, 0.45, 5.0), root / "ct_scans" / f"{number:03d}.nii")
        _nifti(mask * np.uint8(255), (0.45, 0.45, 5.0), root / "masks" / f"{number:03d}.nii")
        for z in range(shape[2]):
            bleed = int(mask[:, :, z].any())
            rows.append({"PatientNumber": number, "SliceNumber": z + 1, "Intraventricular": 0,
                         "Intraparenchymal": bleed, "Subarachnoid": 0, "Epidural": 0, "Subdural": 0,
                         "No_Hemorrhage": 1 - bleed, "Fracture_Yes_No": 0})
    pd.DataFrame(rows).to_csv(root / "hemorrhage_diagnosis_raw_ct.csv", index=False)
    return root
