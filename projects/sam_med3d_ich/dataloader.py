"""Cases from `path,ich,patient_id` CSVs; volumes (.pkl / .npy / .nii / .nii.gz, in HU) with masks
`<mask_dir>/<number>.nii`; MONAI pre-processing; training crops and whole validation volumes.

Every problem with a file raises `DataError` with one line naming the file and the problem. During
training a bad case is skipped and counted (never replaced by zeros).
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    Lambdad,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)
from torch.utils.data import Dataset

REQUIRED_COLUMNS = ("path", "ich", "patient_id")
VOLUME_SUFFIXES = (".pkl", ".npy", ".nii", ".nii.gz")
PKL_ARRAY_KEYS = ("image", "volume", "ct", "data", "array", "img")


class DataError(ValueError):
    """A data problem; the message is one line that names the file."""


@dataclass(frozen=True)
class Case:
    case_id: str
    volume_path: Path
    ich: int
    patient_id: str
    mask_path: Path | None  # None: no mask file (allowed for ICH-negative cases)


@dataclass
class CaseData:
    image: np.ndarray  # float32 [X, Y, Z], HU
    label: np.ndarray  # uint8 [X, Y, Z], 0/1
    affine: np.ndarray  # 4x4 voxel -> mm
    spacing_known: bool

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))


# --------------------------------------------------------------------------------------------- CSVs


def suffix_of(path: Path) -> str:
    return ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix.lower()


def case_number(volume_path: Path) -> str:
    """The number in a volume's file name: `ct_scans/049.nii` and `049.pkl` -> "049"."""
    stem = volume_path.name[: -len(suffix_of(volume_path))] if suffix_of(volume_path) else volume_path.stem
    numbers = re.findall(r"\d+", stem)
    if not numbers:
        raise DataError(f"{volume_path}: no number in the file name to find its mask <mask_dir>/<number>.nii")
    return numbers[-1]


def find_mask(volume_path: Path, mask_dir: Path) -> Path | None:
    number = case_number(volume_path)
    for name in dict.fromkeys((number, str(int(number)))):
        for suffix in (".nii", ".nii.gz"):
            candidate = mask_dir / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def read_cases(csv_path: str | Path, mask_dir: str | Path) -> list[Case]:
    """Rows of a `path,ich,patient_id` CSV; relative volume paths are relative to the CSV's folder."""
    csv_path, mask_dir = Path(csv_path), Path(mask_dir)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file does not exist")
    if not mask_dir.is_dir():
        raise DataError(f"{mask_dir}: mask directory does not exist")
    try:
        table = pd.read_csv(csv_path, dtype={"patient_id": str, "path": str})
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv_path}: empty CSV (expected columns {', '.join(REQUIRED_COLUMNS)})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)} "
                        f"(expected {', '.join(REQUIRED_COLUMNS)}; found {', '.join(map(str, table.columns))})")
    if table.empty:
        raise DataError(f"{csv_path}: no rows")
    bad_ich = ~table["ich"].astype(str).isin(["0", "1", "0.0", "1.0", "True", "False"])
    if bad_ich.any():
        row = int(np.flatnonzero(bad_ich.to_numpy())[0])
        raise DataError(f"{csv_path}: column 'ich' must be 0 or 1 (row {row + 2} has {table['ich'].iloc[row]!r})")
    cases = []
    for row in table.itertuples(index=False):
        volume_path = Path(row.path)
        if not volume_path.is_absolute():
            volume_path = csv_path.parent / volume_path
        ich = int(str(row.ich) in ("1", "1.0", "True"))
        try:
            mask_path = find_mask(volume_path, mask_dir)
        except DataError:
            mask_path = None  # reported when the case is loaded
        cases.append(Case(volume_path.name, volume_path, ich, str(row.patient_id), mask_path))
    reject_shared_masks(cases, csv_path)
    return cases


def reject_shared_masks(cases: list[Case], csv_path: Path) -> None:
    """Two different volumes whose names lead to one mask file (`patient12_scan1.pkl` and
    `patient13_scan1.pkl` both -> `1.nii`) would train on a wrong label: refuse, naming both."""
    owner: dict[Path, Path] = {}
    for case in cases:
        if case.mask_path is None:
            continue
        first = owner.setdefault(case.mask_path, case.volume_path)
        if first != case.volume_path:
            raise DataError(f"{csv_path}: {first.name} and {case.volume_path.name} both resolve to the mask "
                            f"{case.mask_path} (the mask is found by the last number in the file name); "
                            "rename the volumes so that each has its own number")


# ------------------------------------------------------------------------------------------ volumes


def _array_from_pickle(path: Path) -> tuple[np.ndarray, Any]:
    with path.open("rb") as handle:
        try:
            obj = pickle.load(handle)
        except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad file
            raise DataError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
    if isinstance(obj, np.ndarray):
        return obj, None
    if isinstance(obj, dict):
        arrays = {k: v for k, v in obj.items() if isinstance(v, np.ndarray) and v.ndim >= 3}
        key = next((k for k in PKL_ARRAY_KEYS if k in arrays), None)
        if key is None and len(arrays) == 1:
            key = next(iter(arrays))
        if key is None:
            raise DataError(f"{path}: pickled dict holds no single 3D array "
                            f"(keys: {', '.join(map(str, obj))}; expected one of {', '.join(PKL_ARRAY_KEYS)})")
        return arrays[key], obj.get("spacing")
    raise DataError(f"{path}: pickle holds {type(obj).__name__}, expected a numpy array or a dict with one")


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    array = np.asarray(array)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {tuple(array.shape)}")
    return array


def load_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (HU array float32 [X, Y, Z], 4x4 affine or None when the format stores no geometry)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: volume file does not exist")
    suffix = suffix_of(path)
    affine = None
    if suffix == ".pkl":
        array, spacing = _array_from_pickle(path)
        if spacing is not None:
            affine = np.diag([*np.asarray(spacing, dtype=float).ravel()[:3], 1.0])
    elif suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as error:  # noqa: BLE001 - numpy raises ValueError/OSError/EOFError for broken files
            raise DataError(f"{path}: not a readable .npy array ({type(error).__name__}: {error})") from None
    elif suffix in (".nii", ".nii.gz"):
        try:
            image = nib.load(str(path))
            array = np.asanyarray(image.dataobj)
        except Exception as error:  # noqa: BLE001 - nibabel raises many kinds for broken files
            raise DataError(f"{path}: not a readable NIfTI ({type(error).__name__}: {error})") from None
        affine = image.affine
    else:
        raise DataError(f"{path}: unsupported volume format {suffix!r} (use {', '.join(VOLUME_SUFFIXES)})")
    array = _as_3d(array, path).astype(np.float32)
    if not np.isfinite(array).all():
        raise DataError(f"{path}: volume contains NaN or infinite values")
    return array, affine


def load_mask(path: str | Path, expected_shape: tuple[int, ...], volume_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """-> (0/1 uint8 [X, Y, Z], affine). Masks stored as 0/255 are accepted; other values are not."""
    path = Path(path)
    try:
        image = nib.load(str(path))
        array = _as_3d(np.asanyarray(image.dataobj), path)
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001
        raise DataError(f"{path}: not a readable NIfTI mask ({type(error).__name__}: {error})") from None
    if array.shape != tuple(expected_shape):
        raise DataError(f"{path}: mask shape {tuple(array.shape)} differs from volume shape "
                        f"{tuple(expected_shape)} of {volume_path.name}")
    values = np.unique(array)
    if set(values.tolist()) <= {0, 1}:
        binary = array.astype(np.uint8)
    elif set(values.tolist()) <= {0, 255}:
        binary = (array > 0).astype(np.uint8)
    else:
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise DataError(f"{path}: non-binary mask (values {shown}; expected 0/1)")
    return binary, image.affine


def load_case(case: Case) -> CaseData:
    image, affine = load_volume(case.volume_path)
    if case.mask_path is None:
        if case.ich:
            number = case_number(case.volume_path)
            raise DataError(f"{case.volume_path}: ICH-positive case has no mask <mask_dir>/{number}.nii")
        label, mask_affine = np.zeros(image.shape, np.uint8), None
    else:
        label, mask_affine = load_mask(case.mask_path, image.shape, case.volume_path)
    # geometry: the volume's own, else its NIfTI mask's, else 1 mm isotropic (flagged in the statistics)
    known = affine is not None or mask_affine is not None
    affine = affine if affine is not None else mask_affine if mask_affine is not None else np.eye(4)
    return CaseData(image, label, np.asarray(affine, dtype=np.float64), known)


# ------------------------------------------------------------------------------------- transforms


def _znormalise_foreground(image: torch.Tensor) -> torch.Tensor:
    """SAM-Med3D's normalisation (torchio `ZNormalization(masking_method=lambda x: x > 0)`):
    z-score with the mean and standard deviation of the voxels > 0."""
    foreground = image[image > 0]
    if foreground.numel() < 2:
        return image - image.mean()
    return (image - foreground.mean()) / foreground.std().clamp_min(1e-6)


def _clamp_ct(image: torch.Tensor) -> torch.Tensor:
    """SAM-Med3D clamps CT to [-1000, 1000] HU (`tio.Clamp`) before its normalisation."""
    return image.clamp(-1000.0, 1000.0)


def preprocessing(intensity_norm: str, hu_window: tuple[float, float] | None,
                  target_spacing: tuple[float, float, float] | None) -> list:
    """The one rule that maps a HU volume to the model's input, shared by training, evaluation and
    prediction: canonical (RAS) orientation, resampling to `target_spacing` (mm; None keeps the
    native grid), then the intensity mapping. `sam_med3d` is SAM-Med3D's CT pipeline (ToCanonical,
    1.5 mm, Clamp(-1000, 1000), z-score over voxels > 0); `brain_window` maps `hu_window` to [0, 1]."""
    keys = ("image", "label")
    steps: list = [Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if target_spacing is not None:
        steps.append(Spacingd(keys, pixdim=target_spacing, mode=("bilinear", "nearest")))
    if intensity_norm == "brain_window":
        if hu_window is None:
            raise ValueError("intensity_norm brain_window needs a HU window")
        steps.append(ScaleIntensityRanged("image", a_min=hu_window[0], a_max=hu_window[1], b_min=0.0, b_max=1.0,
                                          clip=True))
    elif intensity_norm == "sam_med3d":
        steps += [Lambdad("image", _clamp_ct), Lambdad("image", _znormalise_foreground)]
    else:
        raise ValueError(f"unknown intensity_norm {intensity_norm!r}")
    return steps


def training_augmentation(crop_size: int, pos_ratio: float, prob: float) -> list:
    keys = ("image", "label")
    return [
        SpatialPadd(keys, spatial_size=(crop_size,) * 3),
        RandCropByPosNegLabeld(keys, label_key="label", spatial_size=(crop_size,) * 3, pos=pos_ratio,
                               neg=1.0 - pos_ratio, num_samples=1),
        RandFlipd(keys, prob=prob, spatial_axis=0),
        RandFlipd(keys, prob=prob, spatial_axis=1),
        RandFlipd(keys, prob=prob, spatial_axis=2),
        RandRotated(keys, range_x=0.26, range_y=0.26, range_z=0.26, prob=prob, mode=("bilinear", "nearest"),
                    padding_mode="zeros"),
        RandScaleIntensityd("image", factors=0.1, prob=prob),
        RandShiftIntensityd("image", offsets=0.1, prob=prob),
        RandGaussianNoised("image", std=0.02, prob=prob),
    ]


def to_meta(data: CaseData) -> dict[str, MetaTensor]:
    affine = torch.as_tensor(data.affine)
    return {"image": MetaTensor(torch.from_numpy(data.image)[None], affine=affine),
            "label": MetaTensor(torch.from_numpy(data.label.astype(np.float32))[None], affine=affine)}


# ---------------------------------------------------------------------------------------- datasets


class _BadCase(dict):
    """What a dataset returns for a case it could not load: {"case_id", "reason"}."""


class TrainCropDataset(Dataset):
    """Random `crop_size`^3 crops. Each item's augmentation is seeded from (seed, epoch, case index), so
    a resumed run draws the same crops; the epoch lives in shared memory so persistent workers see it.
    The order of cases is the loader's (shared.distributed.make_dataloader: drawn from (seed, epoch))."""

    def __init__(self, cases: list[Case], crop_size: int, intensity_norm: str, hu_window: tuple[float, float] | None,
                 target_spacing: tuple[float, float, float] | None, pos_ratio: float, augmentation_prob: float,
                 seed: int) -> None:
        self.cases = cases
        self.transforms = Compose(preprocessing(intensity_norm, hu_window, target_spacing)
                                  + training_augmentation(crop_size, pos_ratio, augmentation_prob))
        self.seed = seed
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict:
        epoch = int(self._epoch)
        case = self.cases[index]
        try:
            data = load_case(case)
        except DataError as error:
            return _BadCase(case_id=case.case_id, reason=str(error))
        item_seed = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]
        self.transforms.set_random_state(seed=int(item_seed))
        with warnings.catch_warnings():  # negatives have no foreground to centre a crop on: expected
            warnings.filterwarnings("ignore", message=".*Num foregrounds 0.*")
            warnings.filterwarnings("ignore", message=".*unable to generate class balanced samples.*")
            out = self.transforms(to_meta(data))
        crop = out[0] if isinstance(out, list) else out
        label = crop["label"].as_tensor().float().round()
        return {"image": crop["image"].as_tensor().float(), "label": label,
                # crop-level target: haemorrhage visible in this crop (equals the scan's label on whole volumes)
                "ich": torch.tensor(float(case.ich == 1 and bool(label.any()))), "case_id": case.case_id}


class VolumeDataset(Dataset):
    """Whole pre-processed volumes (no crop) for sliding-window validation and evaluation."""

    def __init__(self, cases: list[Case], intensity_norm: str, hu_window: tuple[float, float] | None,
                 target_spacing: tuple[float, float, float] | None) -> None:
        self.cases = cases
        self.transforms = Compose(preprocessing(intensity_norm, hu_window, target_spacing))

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict:
        case = self.cases[index]
        try:
            data = load_case(case)
        except DataError as error:
            return _BadCase(case_id=case.case_id, reason=str(error))
        out = self.transforms(to_meta(data))
        affine = np.asarray(out["image"].affine, dtype=np.float64)
        spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        return {"image": out["image"].as_tensor().float(), "label": out["label"].as_tensor().float().round(),
                "ich": case.ich, "case_id": case.case_id, "spacing": spacing, "affine": affine}


def collate_skipping_bad(items: list[dict]) -> dict:
    """Stack good items; bad cases go to batch["skipped"] as (case_id, reason) so the trainer counts them."""
    good = [it for it in items if not isinstance(it, _BadCase)]
    skipped = [(it["case_id"], it["reason"]) for it in items if isinstance(it, _BadCase)]
    batch: dict[str, Any] = {"skipped": skipped, "size": len(good)}
    if good:
        batch["image"] = torch.stack([it["image"] for it in good])
        batch["label"] = torch.stack([it["label"] for it in good])
        batch["ich"] = torch.stack([it["ich"] for it in good])
        batch["case_id"] = [it["case_id"] for it in good]
    return batch


def first_item(items: list[dict]) -> dict:
    """Collate for batch size 1 over whole volumes of different shapes."""
    return items[0]
