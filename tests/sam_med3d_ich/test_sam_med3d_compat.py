"""What a SAM-Med3D user brings: its inference loop (keyword calls of prompt encoder and mask decoder),
its published checkpoints in every format its code writes, and its CT pre-processing."""

import argparse

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from projects.sam_med3d_ich.dataloader import Case, VolumeDataset, find_mask, read_cases
from projects.sam_med3d_ich.evaluate import main as evaluate_main
from projects.sam_med3d_ich.inference import load_model_for_inference, predict_volume
from projects.sam_med3d_ich.model import build_ich_model, sam_model_registry3D
from projects.sam_med3d_ich.predict import main as predict_main


def official_style_inference(model, image, click, prev_low_res):
    """The calls of SAM-Med3D's `sam_model_infer` (utils/infer_utils.py), spelled as it spells them:
    float click labels concatenated to an empty [1, 0] tensor, points passed as a list."""
    image_embeddings = model.image_encoder(image)
    points_coords, points_labels = torch.zeros(1, 0, 3), torch.zeros(1, 0)
    points_coords = torch.cat([points_coords, click[0]], dim=1)
    points_labels = torch.cat([points_labels, click[1]], dim=1)
    sparse_embeddings, dense_embeddings = model.prompt_encoder(points=[points_coords, points_labels], boxes=None,
                                                               masks=prev_low_res)
    low_res_masks, _ = model.mask_decoder(image_embeddings=image_embeddings,
                                          image_pe=model.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse_embeddings,
                                          dense_prompt_embeddings=dense_embeddings, multimask_output=False)
    return sparse_embeddings, low_res_masks


def test_an_official_inference_loop_runs_on_our_model_and_matches_our_decode():
    torch.manual_seed(0)
    model = sam_model_registry3D["tiny"]().eval()
    image = torch.randn(1, 1, 32, 32, 32)
    prev = torch.zeros(1, 1, 16, 16, 16)
    with torch.no_grad():
        sparse, official = official_style_inference(model, image, (torch.tensor([[[5.0, 6.0, 7.0]]]),
                                                                   torch.tensor([[1]])), prev)
        ours = model.decode(model.image_encoder(image), (torch.tensor([[[5, 6, 7]]]), torch.tensor([[1]])), prev)
    torch.testing.assert_close(official, ours)
    # SAM-Med3D's point encoding: (coords + 0.5) / size through the random Fourier features, plus the
    # label's embedding, and a padding point (not-a-point embedding) appended when there is no box
    encoder = model.prompt_encoder
    expected = encoder.pe_layer.encode(torch.tensor([5.5, 6.5, 7.5]) / 32) + encoder.point_embeddings[1].weight[0]
    assert sparse.shape == (1, 2, 48)
    torch.testing.assert_close(sparse[0, 0], expected)
    torch.testing.assert_close(sparse[0, 1], encoder.not_a_point_embed.weight[0])
    with pytest.raises(ValueError, match="box prompts are not supported"):
        encoder(points=None, boxes=torch.zeros(1, 6), masks=None)


def test_one_image_embedding_serves_several_prompt_sets_as_in_sam_med3d():
    torch.manual_seed(0)
    model = sam_model_registry3D["tiny"]().eval()
    with torch.no_grad():
        embeddings = model.image_encoder(torch.randn(1, 1, 32, 32, 32))
        sparse, dense = model.prompt_encoder(points=(torch.tensor([[[1, 2, 3]], [[9, 9, 9]]]), torch.tensor([[1], [0]])))
        masks, iou = model.mask_decoder(embeddings, model.prompt_encoder.get_dense_pe(), sparse, dense)
        single = model.decode(embeddings, (torch.tensor([[[9, 9, 9]]]), torch.tensor([[0]])))
    assert masks.shape == (2, 1, 16, 16, 16) and iou.shape == (2, 1)
    torch.testing.assert_close(masks[1:], single)


def test_sliding_window_logits_do_not_depend_on_sw_batch_size():
    torch.manual_seed(0)
    model = build_ich_model("tiny", 8, 32).eval()
    image = torch.rand(1, 1, 50, 20, 33)
    click_map = torch.zeros(50, 20, 33)
    click_map[45, 10, 30] = 1  # one window holds the click, the others do not
    one = predict_volume(model, image, click_map=click_map, overlap=0.25, sw_batch_size=1)
    four = predict_volume(model, image, click_map=click_map, overlap=0.25, sw_batch_size=4)
    torch.testing.assert_close(one.logits, four.logits, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- published checkpoints


def published_files(tmp_path):
    """A tiny Sam3D saved in the formats SAM-Med3D's code writes: train.py's dict (weights under
    model_state_dict next to optimizer state and a pickled argparse Namespace), a bare state dict,
    and a DDP state dict with `module.` prefixes."""
    torch.manual_seed(5)
    state = sam_model_registry3D["tiny"]().state_dict()
    files = {"train_py": tmp_path / "sam_med3d_turbo.pth", "bare": tmp_path / "bare.pth",
             "ddp": tmp_path / "ddp.pth"}
    torch.save({"epoch": 200, "model_state_dict": state, "optimizer_state_dict": {}, "best_dice": 0.7,
                "args": argparse.Namespace(model_type="vit_b_ori", lr=8e-4)}, files["train_py"])
    torch.save(state, files["bare"])
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in state.items()}}, files["ddp"])
    return files


def test_evaluate_runs_every_published_format_zero_shot_with_sam_med3d_preprocessing(synthetic_root, tmp_path):
    test_csv = synthetic_root / "test.csv"
    summaries = {}
    for name, path in published_files(tmp_path).items():
        with pytest.warns(UserWarning) if name == "train_py" else _nothing():
            summaries[name] = evaluate_main(["--checkpoint", str(path), "--csv", str(test_csv), "--mask_dir",
                                             str(synthetic_root / "masks"), "--output_dir", str(tmp_path / name),
                                             "--num_clicks", "2", "--overlap", "0"])
    tables = {name: pd.read_csv(tmp_path / name / "per_case_metrics.csv") for name in summaries}
    for name, summary in summaries.items():
        assert summary["source"] == "published SAM-Med3D" and summary["cases"] == len(pd.read_csv(test_csv))
        assert summary["preprocessing"] == {"intensity_norm": "sam_med3d", "hu_window": None,
                                            "target_spacing": [1.5, 1.5, 1.5]}
        assert np.isnan(summary["ich_auc"]) and "no ICH classifier" in summary["ich_auc_note"]
        assert summary["cases_resampled_to_input_grid"] == summary["cases"]  # synthetic spacing is 1 x 1 x 1.5 mm
        pd.testing.assert_frame_equal(tables[name], tables["train_py"])  # same weights, same numbers


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_predict_runs_a_published_checkpoint_and_writes_the_input_grid_and_orientation(synthetic_root, tmp_path):
    """A volume stored left-right flipped (LAS) gives the flipped mask of the same volume stored RAS:
    the prediction is made in canonical orientation and written back in the input's."""
    path = published_files(tmp_path)["bare"]
    case = read_cases(synthetic_root / "test.csv", synthetic_root / "masks")[0]
    volume = np.asarray(nib.load(str(find_mask(case.volume_path, synthetic_root / "masks"))).dataobj) * 70.0 + 30.0
    ras = np.diag([1.5, 1.5, 1.5, 1.0])
    las = ras.copy()
    las[0, 0], las[0, 3] = -1.5, 1.5 * (volume.shape[0] - 1)  # same world positions, x stored reversed
    nib.save(nib.Nifti1Image(volume.astype(np.float32), ras), str(tmp_path / "ras.nii.gz"))
    nib.save(nib.Nifti1Image(volume[::-1].astype(np.float32), las), str(tmp_path / "las.nii.gz"))
    x, y, z = (int(v) for v in np.argwhere(volume > 50)[0]) if (volume > 50).any() else (16, 16, 16)
    masks = {}
    for name, click_x in (("ras", x), ("las", volume.shape[0] - 1 - x)):
        result = predict_main(["--checkpoint", str(path), "--input", str(tmp_path / f"{name}.nii.gz"),
                               "--output", str(tmp_path / f"{name}_mask.nii.gz"), "--click", str(click_x), str(y),
                               str(z), "1", "--overlap", "0"])
        written = nib.load(str(tmp_path / f"{name}_mask.nii.gz"))
        assert written.shape == volume.shape and np.allclose(written.affine, ras if name == "ras" else las)
        masks[name] = np.asarray(written.dataobj)
        assert result["clicks"] == 1
    np.testing.assert_array_equal(masks["las"][::-1], masks["ras"])


def test_load_model_for_inference_names_a_file_that_is_no_sam_med3d_checkpoint(tmp_path):
    torch.save({"model_state_dict": {"backbone.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(Exception, match=r"other\.pth: not a SAM-Med3D checkpoint of a known architecture"):
        load_model_for_inference(tmp_path / "other.pth")


# -------------------------------------------------------------------------------------- preprocessing


def test_sam_med3d_preprocessing_clamps_reorients_resamples_and_zscores(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.normal(40, 20, (12, 10, 8)).astype(np.float32)
    volume[0, 0, 0], volume[1, 1, 1] = 3000.0, -3000.0  # beyond [-1000, 1000]: clamped
    (tmp_path / "masks").mkdir()
    las = np.diag([-1.5, 1.5, 1.5, 1.0])
    nib.save(nib.Nifti1Image(volume, las), str(tmp_path / "001.nii"))
    nib.save(nib.Nifti1Image(np.zeros(volume.shape, np.uint8), las), str(tmp_path / "masks" / "001.nii"))
    case = Case("001.nii", tmp_path / "001.nii", 0, "p", tmp_path / "masks" / "001.nii")
    item = VolumeDataset([case], "sam_med3d", None, (1.5, 1.5, 1.5))[0]
    assert np.allclose(np.diag(item["affine"])[:3], (1.5, 1.5, 1.5))  # RAS, 1.5 mm
    clamped = np.clip(volume, -1000, 1000)[::-1]  # x reversed into RAS order
    foreground = clamped[clamped > 0]
    expected = (clamped - foreground.mean()) / foreground.std(ddof=1)
    np.testing.assert_allclose(item["image"][0].numpy(), expected, rtol=1e-4, atol=1e-4)
    coarse = VolumeDataset([case], "sam_med3d", None, (3.0, 3.0, 3.0))[0]
    assert coarse["spacing"] == pytest.approx((3.0, 3.0, 3.0)) and coarse["image"].shape[1] < volume.shape[0]
