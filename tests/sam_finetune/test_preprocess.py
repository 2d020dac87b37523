"""The one preprocessing path: images read as stored, intensity mapping, SamPredictor's resize, preprocessing.json."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
import torch
from segment_anything import SamPredictor

from projects.sam_finetune.errors import DataError
from projects.sam_finetune.modeling.build import build_sam_tiny
from projects.sam_finetune.preprocess import (
    IntensityMapping,
    Preprocessing,
    map_intensity,
    normalization_mean_std,
    preprocess_image,
    read_image,
)


def microscopy_like(shape=(48, 80), seed=0) -> np.ndarray:
    """12-bit data in a uint16 container: background ~300, cells ~3500, max 4032."""
    rng = np.random.default_rng(seed)
    image = rng.normal(300, 20, shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    image[(yy - 20) ** 2 + (xx - 30) ** 2 < 100] = 3500
    image.flat[0] = 4032
    return np.clip(image, 0, 4032).astype(np.uint16)


def test_read_image_keeps_bit_depth_and_channels(tmp_path):
    gray16 = microscopy_like()
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    tifffile.imwrite(tmp_path / "g16.tif", gray16)
    floats = np.random.default_rng(1).normal(size=(20, 30)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", floats)
    rgba = np.random.default_rng(2).integers(0, 255, (20, 30, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    channel_first = np.stack([gray16[:20, :30]] * 3)  # (3, H, W) as some microscopes write
    tifffile.imwrite(tmp_path / "cf.tif", channel_first)

    np.testing.assert_array_equal(read_image(tmp_path / "g16.png"), gray16)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.tif"), gray16)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), floats)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "cf.tif"), np.moveaxis(channel_first, 0, -1))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: unreadable image"):
        read_image(tmp_path / "broken.png")


def test_16bit_image_reaches_the_model_with_its_contrast():
    image = microscopy_like()
    rgb = map_intensity(image, IntensityMapping())  # auto: percentile window for non-uint8
    cell, background = rgb[20, 30, 0], np.median(rgb[40:, 60:, 0])
    assert cell == 255 and background < 40  # the old 8-bit shift gave max 15 for the whole image
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    tensor, original, input_size = preprocess_image(image, Preprocessing(image_size=64))
    mean, std = normalization_mean_std("sam")
    cell_value = (255 - mean[0]) / std[0]
    assert original == (48, 80) and input_size == (38, 64)
    assert tensor[0, :input_size[0], :input_size[1]].max() == pytest.approx(cell_value, abs=1e-4)


def test_intensity_modes():
    image = np.array([[0, 1000], [2000, 4000]], np.uint16)
    fixed = map_intensity(image, IntensityMapping(mode="fixed", window=[1000, 3000]))[..., 0]
    np.testing.assert_array_equal(fixed, [[0, 0], [128, 255]])
    minmax = map_intensity(image, IntensityMapping(mode="minmax"))[..., 0]
    np.testing.assert_array_equal(minmax, [[0, 64], [128, 255]])
    rgb8 = np.random.default_rng(0).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(map_intensity(rgb8), rgb8)  # auto leaves 8-bit images alone
    assert map_intensity(np.full((4, 4), 7.5, np.float32)).max() == 0  # a constant image: no window


@pytest.mark.parametrize("shape", [(40, 100), (20, 12)], ids=["downscale", "upscale"])
@pytest.mark.parametrize("normalization", ["sam", "zero_one"])
def test_official_predictor_sees_the_same_input(shape, normalization):
    """SamPredictor.set_image on the mapped picture, with pixel_mean/std from preprocessing.json,
    gives the same embedding as our preprocess_image."""
    torch.manual_seed(0)
    sam = build_sam_tiny(image_size=64)
    image = microscopy_like(shape)
    params = Preprocessing(image_size=64, normalization=normalization)
    tensor, original, input_size = preprocess_image(image, params)
    ours = sam.image_encoder(tensor[None])

    mean, std = normalization_mean_std(normalization)
    sam.pixel_mean.copy_(torch.tensor(mean).view(-1, 1, 1))
    sam.pixel_std.copy_(torch.tensor(std).view(-1, 1, 1))
    predictor = SamPredictor(sam)
    predictor.set_image(map_intensity(image, params.intensity))
    assert predictor.input_size == input_size and predictor.original_size == original
    torch.testing.assert_close(predictor.features, ours, atol=1e-5, rtol=1e-5)


def test_preprocessing_json_round_trip(tmp_path):
    params = Preprocessing(image_size=64, normalization="zero_one",
                           intensity=IntensityMapping(mode="fixed", window=[-100.0, 300.0]))
    path = params.save(tmp_path)
    assert path.name == "preprocessing.json"
    assert Preprocessing.load(tmp_path) == params == Preprocessing.load(path)
    path.write_text('{"image_size": 64}')
    with pytest.raises(DataError, match="preprocessing.json: not a usable"):
        Preprocessing.load(path)
