"""Build train/val/test CSVs from the PhysioNet CT-ICH release.

    python projects/sam_med3d_ich/import_physionet.py --root physionet.org/files/ct-ich/1.3.1 --out_dir splits/
    python projects/sam_med3d_ich/train.py --train_csv splits/train.csv --val_csv splits/val.csv \
        --mask_dir physionet.org/files/ct-ich/1.3.1/masks ...

Layout read: `ct_scans/NNN.nii`, `masks/NNN.nii`, and the per-slice diagnosis CSV
(`hemorrhage_diagnosis_raw_ct.csv`: PatientNumber, SliceNumber, Intraventricular, Intraparenchymal,
Subarachnoid, Epidural, Subdural, No_Hemorrhage, Fracture_Yes_No; one row per slice). A scan is
ICH-positive when any of its slices is not `No_Hemorrhage`. Splits are by patient, stratified by label.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from projects.sam_med3d_ich.dataloader import DataError, case_number
from projects.sam_med3d_ich.splits import split_by_patient
from shared.cli_errors import run_reporting_errors

DIAGNOSIS_CSV = "hemorrhage_diagnosis_raw_ct.csv"
DIAGNOSIS_COLUMNS = ("PatientNumber", "No_Hemorrhage")


def find_diagnosis_csv(root: Path) -> Path:
    if (root / DIAGNOSIS_CSV).is_file():
        return root / DIAGNOSIS_CSV
    for candidate in sorted(root.glob("*.csv")):
        if set(DIAGNOSIS_COLUMNS) <= set(pd.read_csv(candidate, nrows=0).columns):
            return candidate
    raise DataError(f"{root}: no diagnosis CSV ({DIAGNOSIS_CSV} or a CSV with {', '.join(DIAGNOSIS_COLUMNS)})")


def build_table(root: Path, diagnosis_csv: Path | None = None) -> pd.DataFrame:
    """One row per scan: path (absolute), ich, patient_id."""
    scans_dir = root / "ct_scans"
    if not scans_dir.is_dir():
        raise DataError(f"{scans_dir}: folder does not exist (expected PhysioNet CT-ICH's ct_scans/NNN.nii)")
    scans = sorted(p for p in scans_dir.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not scans:
        raise DataError(f"{scans_dir}: no .nii scans")
    diagnosis_csv = diagnosis_csv or find_diagnosis_csv(root)
    diagnosis = pd.read_csv(diagnosis_csv)
    missing = [c for c in DIAGNOSIS_COLUMNS if c not in diagnosis.columns]
    if missing:
        raise DataError(f"{diagnosis_csv}: missing column(s) {', '.join(missing)}")
    diagnosis = diagnosis.dropna(subset=["PatientNumber"])  # blank trailing rows read as NaN
    positive = (diagnosis["No_Hemorrhage"] == 0).groupby(diagnosis["PatientNumber"].astype(int)).any()
    rows = []
    for scan in scans:
        patient = int(case_number(scan))
        if patient not in positive.index:
            raise DataError(f"{diagnosis_csv}: no rows for PatientNumber {patient} (scan {scan.name})")
        rows.append({"path": str(scan.resolve()), "ich": int(positive[patient]), "patient_id": f"{patient:03d}"})
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder holding ct_scans/, masks/ and the diagnosis CSV")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--diagnosis_csv", default=None, help=f"default: <root>/{DIAGNOSIS_CSV}")
    p.add_argument("--val_fraction", type=float, default=0.15)
    p.add_argument("--test_fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        raise DataError(f"{root}: --root folder does not exist (expected PhysioNet CT-ICH's folder with ct_scans/, "
                        "masks/ and the diagnosis CSV)")
    table = build_table(root, Path(args.diagnosis_csv) if args.diagnosis_csv else None)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fractions = (1 - args.val_fraction - args.test_fraction, args.val_fraction, args.test_fraction)
    written = {}
    for name, part in split_by_patient(table, fractions, args.seed).items():
        written[name] = out_dir / f"{name}.csv"
        part.to_csv(written[name], index=False)
        print(f"{name}: {len(part)} scans ({int(part['ich'].sum())} ICH+) -> {written[name]}")
    print(f"use --mask_dir {root / 'masks'}")
    return written


def cli(argv: Sequence[str] | None = None) -> int:
    return run_reporting_errors(lambda: main(argv), (DataError,))


if __name__ == "__main__":
    sys.exit(cli())
