import pickle

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from projects.sam_med3d_ich.dataloader import (
    Case,
    DataError,
    TrainCropDataset,
    VolumeDataset,
    collate_skipping_bad,
    find_mask,
    load_case,
    load_volume,
    read_cases,
)
from projects.sam_med3d_ich.import_physionet import main as import_physionet
from projects.sam_med3d_ich.synthetic import write_physionet_layout
from projects.sam_med3d_ich.utils import scan_cases

SHAPE = (6, 5, 4)


def write_case(folder, name="007", volume=None, mask=None, spacing=(0.5, 0.5, 2.0), fmt=".nii"):
    """A volume in `fmt` and (unless mask is False) its mask masks/<number>.nii."""
    volume = np.random.default_rng(0).normal(30, 10, SHAPE).astype(np.float32) if volume is None else volume
    (folder / "masks").mkdir(exist_ok=True)
    path = folder / f"{name}{fmt}"
    if fmt in (".nii", ".nii.gz"):
        nib.save(nib.Nifti1Image(volume, np.diag([*spacing, 1.0])), str(path))
    elif fmt == ".npy":
        np.save(path, volume)
    else:
        with path.open("wb") as handle:
            pickle.dump(volume if fmt == ".pkl" else {"image": volume, "spacing": spacing}, handle)
        path = path if fmt == ".pkl" else path.rename(folder / f"{name}.pkl")
    if mask is not False:
        mask = np.zeros(SHAPE, np.uint8) if mask is None else mask
        nib.save(nib.Nifti1Image(mask, np.diag([*spacing, 1.0])), str(folder / "masks" / f"{name}.nii"))
    return path


@pytest.mark.parametrize("fmt", [".pkl", ".pkl-dict", ".npy", ".nii", ".nii.gz"])
def test_every_volume_format_loads_the_same_hu_values(tmp_path, fmt):
    volume = np.random.default_rng(1).normal(40, 20, SHAPE).astype(np.float32)
    path = write_case(tmp_path, volume=volume, fmt=fmt, mask=False)
    array, affine = load_volume(path)
    np.testing.assert_allclose(array, volume)
    if fmt in (".pkl-dict", ".nii", ".nii.gz"):
        np.testing.assert_allclose(np.diag(affine)[:3], (0.5, 0.5, 2.0))
    else:
        assert affine is None  # bare arrays carry no geometry: the mask's is used


def test_bare_array_takes_its_geometry_from_the_mask(tmp_path):
    path = write_case(tmp_path, fmt=".npy", spacing=(0.4, 0.4, 5.0))
    data = load_case(Case("007", path, 0, "p", find_mask(path, tmp_path / "masks")))
    assert data.spacing == pytest.approx((0.4, 0.4, 5.0)) and data.spacing_known


def test_mask_is_found_by_the_number_in_the_volume_name(tmp_path):
    (tmp_path / "masks").mkdir()
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), np.eye(4)), str(tmp_path / "masks" / "49.nii.gz"))
    assert find_mask(tmp_path / "ct_scan_049.pkl", tmp_path / "masks") == tmp_path / "masks" / "49.nii.gz"
    assert find_mask(tmp_path / "ct_scan_050.pkl", tmp_path / "masks") is None


def csv_with(tmp_path, text):
    path = tmp_path / "cases.csv"
    path.write_text(text)
    (tmp_path / "masks").mkdir(exist_ok=True)
    return path


def test_csv_problems_are_one_line_errors_naming_the_file(tmp_path):
    with pytest.raises(DataError, match=r"cases\.csv: missing column\(s\) ich \(expected path, ich, patient_id"):
        read_cases(csv_with(tmp_path, "path,patient_id\na.pkl,1\n"), tmp_path / "masks")
    with pytest.raises(DataError, match=r"cases\.csv: empty CSV"):
        read_cases(csv_with(tmp_path, ""), tmp_path / "masks")
    with pytest.raises(DataError, match=r"cases\.csv: no rows"):
        read_cases(csv_with(tmp_path, "path,ich,patient_id\n"), tmp_path / "masks")
    with pytest.raises(DataError, match=r"cases\.csv: column 'ich' must be 0 or 1 \(row 2 has 'yes'\)"):
        read_cases(csv_with(tmp_path, "path,ich,patient_id\na.pkl,yes,p\n"), tmp_path / "masks")
    with pytest.raises(DataError, match=r"nothere\.csv: CSV file does not exist"):
        read_cases(tmp_path / "nothere.csv", tmp_path / "masks")


def test_case_problems_name_the_file_and_the_problem(tmp_path):
    def case(path, ich=1):
        return Case(path.name, path, ich, "p", find_mask(path, tmp_path / "masks"))

    with pytest.raises(DataError, match=r"missing\.pkl: volume file does not exist"):
        load_case(Case("x", tmp_path / "missing.pkl", 0, "p", None))
    wrong_shape = write_case(tmp_path, "001", mask=np.zeros((6, 5, 3), np.uint8))
    with pytest.raises(DataError, match=r"001\.nii: mask shape \(6, 5, 3\) differs from volume shape \(6, 5, 4\)"):
        load_case(case(wrong_shape))
    non_binary = write_case(tmp_path, "002", mask=np.full(SHAPE, 2, np.uint8))
    with pytest.raises(DataError, match=r"002\.nii: non-binary mask \(values 2; expected 0/1\)"):
        load_case(case(non_binary))
    nan_volume = np.zeros(SHAPE, np.float32)
    nan_volume[0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"003\.nii: volume contains NaN"):
        load_case(case(write_case(tmp_path, "003", volume=nan_volume)))
    with pytest.raises(DataError, match=r"004\.nii: ICH-positive case has no mask <mask_dir>/004\.nii"):
        load_case(case(write_case(tmp_path, "004", mask=False), ich=1))
    negative = load_case(case(tmp_path / "004.nii", ich=0))  # negatives may have no mask: empty label
    assert negative.label.sum() == 0
    pkl = tmp_path / "005.pkl"
    pkl.write_bytes(pickle.dumps({"a": np.zeros(SHAPE), "b": np.ones(SHAPE)}))
    with pytest.raises(DataError, match=r"005\.pkl: pickled dict holds no single 3D array \(keys: a, b"):
        load_volume(pkl)


def test_masks_stored_as_0_255_are_binarised(tmp_path):
    mask = np.zeros(SHAPE, np.uint8)
    mask[1, 1, 1] = 255
    path = write_case(tmp_path, mask=mask)
    assert load_case(Case("007", path, 1, "p", find_mask(path, tmp_path / "masks"))).label.sum() == 1


def test_scan_skips_and_counts_bad_cases_and_measures_lesions(tmp_path):
    mask = np.zeros(SHAPE, np.uint8)
    mask[:2, :2, :2] = 1  # 8 voxels of 0.5 * 0.5 * 2 mm^3 = 0.004 mL
    good = write_case(tmp_path, "010", mask=mask)
    cases = [Case("010", good, 1, "p1", find_mask(good, tmp_path / "masks")),
             Case("011", tmp_path / "011.pkl", 0, "p2", None)]
    kept, stats = scan_cases(cases, "train")
    assert [c.case_id for c in kept] == ["010"]
    assert stats["bad_cases"] == 1 and "011.pkl: volume file does not exist" in stats["bad_case_reasons"][0]["reason"]
    assert stats["lesion_volume_ml"]["mean"] == pytest.approx(0.004)
    assert stats["spacing_mm"]["mean"] == pytest.approx([0.5, 0.5, 2.0])


def test_bad_case_during_training_is_skipped_and_counted(synthetic_root):
    cases = read_cases(synthetic_root / "train.csv", synthetic_root / "masks")
    cases.append(Case("gone.pkl", synthetic_root / "gone.pkl", 0, "px", None))
    dataset = TrainCropDataset(cases, 32, "brain_window", (0, 80), None, 0.75, 0.0, seed=0)
    batch = collate_skipping_bad([dataset[0], dataset[len(cases) - 1]])
    assert batch["size"] == 1 and batch["image"].shape == (1, 1, 32, 32, 32)
    assert batch["skipped"][0][0] == "gone.pkl" and "does not exist" in batch["skipped"][0][1]


def test_synthetic_layout_is_split_by_patient(synthetic_root):
    splits = {name: pd.read_csv(synthetic_root / f"{name}.csv") for name in ("train", "val", "test")}
    for table in splits.values():
        assert list(table.columns) == ["path", "ich", "patient_id"]
        assert set(table["ich"]) == {0, 1}
    patients = [set(t["patient_id"]) for t in splits.values()]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    all_cases = pd.concat(splits.values())
    for row in all_cases.itertuples():
        number = row.path.split("/")[-1][:3]
        if row.ich:
            assert (synthetic_root / "masks" / f"{number}.nii").is_file()
    kinds = {type(pickle.loads((synthetic_root / p).read_bytes())).__name__ for p in all_cases["path"]}
    assert kinds == {"ndarray", "dict"}
    assert len(all_cases) > all_cases["patient_id"].nunique()  # some patients have two scans


def test_physionet_importer_builds_patient_splits_that_load(tmp_path):
    root = write_physionet_layout(tmp_path / "ct-ich", n_patients=8, shape=(24, 24, 6), seed=0)
    diagnosis = root / "hemorrhage_diagnosis_raw_ct.csv"
    assert pd.read_csv(diagnosis).columns.tolist() == [  # the public release's columns (v1.3.1)
        "PatientNumber", "SliceNumber", "Intraventricular", "Intraparenchymal", "Subarachnoid", "Epidural",
        "Subdural", "No_Hemorrhage", "Fracture_Yes_No"]
    with diagnosis.open("a") as handle:  # a blank row at the end reads as NaN and must not break the import
        handle.write(",,,,,,,,\n")
    written = import_physionet(["--root", str(root), "--out_dir", str(tmp_path / "splits"),
                                "--val_fraction", "0.25", "--test_fraction", "0.25"])
    tables = {name: pd.read_csv(path, dtype={"patient_id": str}) for name, path in written.items()}
    assert sum(len(t) for t in tables.values()) == 8
    assert set(tables["train"]["patient_id"]).isdisjoint(tables["val"]["patient_id"])
    everything = pd.concat(tables.values())
    expected = {f"{49 + i:03d}": int(i % 2 == 0) for i in range(8)}  # bleeds in every other synthetic scan
    assert dict(zip(everything["patient_id"], everything["ich"])) == expected
    kept, stats = scan_cases(read_cases(written["train"], root / "masks"), "train")
    assert stats["bad_cases"] == 0 and stats["spacing_mm"]["mean"] == pytest.approx([0.45, 0.45, 5.0])


def test_training_crops_follow_pos_ratio_and_are_seeded(synthetic_root):
    cases = [c for c in read_cases(synthetic_root / "train.csv", synthetic_root / "masks") if c.ich]

    def crops(pos_ratio, epoch):
        dataset = TrainCropDataset(cases, 16, "brain_window", (0, 80), None, pos_ratio, 0.0, seed=0)
        dataset.set_epoch(epoch)
        return [dataset[i] for i in range(len(cases))]

    assert all(c["label"].sum() > 0 and c["ich"] == 1 for c in crops(1.0, 0))  # centred on haemorrhage
    assert sum(c["label"].sum() > 0 for c in crops(0.0, 0)) < len(cases)
    first, again, other = crops(0.5, 0), crops(0.5, 0), crops(0.5, 1)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again))
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(first, other))


def test_augmentation_prob_zero_leaves_the_windowed_volume_untouched(synthetic_root):
    case = read_cases(synthetic_root / "train.csv", synthetic_root / "masks")[0]
    whole = VolumeDataset([case], "brain_window", (0, 80), None)[0]["image"]  # 32^3: the crop is the volume
    plain = TrainCropDataset([case], 32, "brain_window", (0, 80), None, 0.5, 0.0, seed=0)[0]["image"]
    augmented = TrainCropDataset([case], 32, "brain_window", (0, 80), None, 0.5, 1.0, seed=0)[0]["image"]
    assert torch.equal(plain, whole)
    assert not torch.allclose(augmented, whole)


def test_intensity_normalisations(tmp_path):
    volume = np.full(SHAPE, -1000.0, np.float32)
    volume[1:5, 1:4, 1:3] = np.linspace(10, 70, 24).reshape(4, 3, 2)
    path = write_case(tmp_path, volume=volume)
    case = Case("007", path, 0, "p", find_mask(path, tmp_path / "masks"))
    window = VolumeDataset([case], "brain_window", (0, 80), None)[0]["image"]
    assert window.min() == 0 and window[0, 1, 1, 1] == pytest.approx(10 / 80)
    narrow = VolumeDataset([case], "brain_window", (20, 60), None)[0]["image"]
    assert narrow[0, 1, 1, 1] == 0 and narrow.max() == 1
    zscore = VolumeDataset([case], "sam_med3d", (0, 80), None)[0]["image"]
    foreground = zscore[torch.from_numpy(volume[None] > 0)]
    assert foreground.mean() == pytest.approx(0, abs=1e-5) and foreground.std() == pytest.approx(1, abs=1e-5)


def test_target_spacing_resamples_and_reports_the_new_spacing(tmp_path):
    path = write_case(tmp_path, volume=np.zeros((8, 8, 4), np.float32), mask=np.zeros((8, 8, 4), np.uint8),
                      spacing=(1.0, 1.0, 2.0))
    case = Case("007", path, 0, "p", find_mask(path, tmp_path / "masks"))
    item = VolumeDataset([case], "brain_window", (0, 80), (2.0, 2.0, 2.0))[0]
    assert item["image"].shape[1:3] == (4, 4) and item["spacing"] == pytest.approx((2.0, 2.0, 2.0))


def test_corrupt_npy_is_skipped_and_counted_naming_the_file(tmp_path, capsys):
    good = write_case(tmp_path, "020", fmt=".npy")
    (tmp_path / "021.npy").write_bytes(b"\x93NUMPY garbage, not an array")
    write_case(tmp_path, "021", fmt=".nii", mask=None)  # its mask exists; the volume is what is broken
    (tmp_path / "021.nii").unlink()
    cases = [Case("020.npy", good, 0, "p1", find_mask(good, tmp_path / "masks")),
             Case("021.npy", tmp_path / "021.npy", 0, "p2", find_mask(tmp_path / "021.npy", tmp_path / "masks"))]
    kept, stats = scan_cases(cases, "train")
    assert [c.case_id for c in kept] == ["020.npy"] and stats["bad_cases"] == 1
    assert "021.npy: not a readable .npy array" in stats["bad_case_reasons"][0]["reason"]
    from projects.sam_med3d_ich.predict import cli as predict_cli

    assert predict_cli(["--checkpoint", str(tmp_path / "none.pth"), "--input", str(tmp_path / "021.npy"),
                        "--output", str(tmp_path / "m.nii.gz")]) == 2  # the checkpoint is checked first
    assert "none.pth: checkpoint file does not exist" in capsys.readouterr().err


def test_two_volumes_resolving_to_one_mask_are_rejected_naming_both(tmp_path):
    write_case(tmp_path, "patient12_scan1", fmt=".pkl", mask=False)
    write_case(tmp_path, "patient13_scan1", fmt=".pkl", mask=False)
    (tmp_path / "masks").mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), np.eye(4)), str(tmp_path / "masks" / "1.nii"))
    pd.DataFrame({"path": ["patient12_scan1.pkl", "patient13_scan1.pkl"], "ich": [0, 0],
                  "patient_id": ["12", "13"]}).to_csv(tmp_path / "cases.csv", index=False)
    with pytest.raises(DataError, match=r"cases\.csv: patient12_scan1\.pkl and patient13_scan1\.pkl both resolve "
                                        r"to the mask .*1\.nii"):
        read_cases(tmp_path / "cases.csv", tmp_path / "masks")


def test_ich_label_and_mask_disagreements_are_warned_and_counted(tmp_path):
    lesion = np.zeros(SHAPE, np.uint8)
    lesion[1, 1, 1] = 1
    empty_positive = write_case(tmp_path, "030")
    lesion_negative = write_case(tmp_path, "031", mask=lesion)
    cases = [Case("030", empty_positive, 1, "p1", find_mask(empty_positive, tmp_path / "masks")),
             Case("031", lesion_negative, 0, "p2", find_mask(lesion_negative, tmp_path / "masks"))]
    with pytest.warns(UserWarning) as caught:
        kept, stats = scan_cases(cases, "val")
    messages = " | ".join(str(w.message) for w in caught)
    assert "030.nii: ich=1 but its mask is empty" in messages and "031.nii: ich=0 but its mask marks a lesion" in messages
    assert len(kept) == 2 and stats["ich_mask_disagreements"] == 2
    assert [d["case_id"] for d in stats["ich_mask_disagreement_cases"]] == ["030", "031"]
