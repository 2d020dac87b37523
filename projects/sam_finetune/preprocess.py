"""The one preprocessing path from an image file to SAM's input, used by training, evaluation,
prediction and the exported predictor (`preprocessing.json` beside every export).

    image = read_image(path)                       # as stored: any bit depth, 1-4 channels
    tensor, original_size, input_size = preprocess_image(image, cfg)   # cfg: FinetuneConfig,
                                                   # DataConfig or Preprocessing
    # tensor (3, S, S) float32, normalised and zero-padded; original_size / input_size are (h, w)
    # of the stored image and of the resized image inside the padded square.

Steps, in this order, each a public function:

1. `read_image(path)`: the array exactly as stored (uint8 / uint16 / int / float, HxW or HxWxC, colour
   images in RGB(A) order). TIFF goes through tifffile (float, 16-bit, channel-first), the rest
   through OpenCV with IMREAD_UNCHANGED (no EXIF rotation). Unreadable -> `DataError("<file>: ...")`.
2. `map_intensity(image, intensity)`: -> HxWx3 uint8 RGB, the picture the model sees (also what to
   show a person, e.g. on an annotation page). Grayscale is repeated to 3 channels, alpha dropped.
   `IntensityMapping.mode` (config `data.intensity`):
     - "auto" (default): uint8 images unchanged; any other type (16-bit, int, float) is windowed
       between its `percentiles` (default 0.5 and 99.5) so a 12-bit image keeps its contrast;
     - "fixed": window `[low, high]` in stored units (e.g. CT Hounsfield units), the same for all images;
     - "minmax": each image's own min and max.
   A window maps low -> 0 and high -> 255 linearly, clipped, rounded to uint8.
3. `resize_to_input(rgb, image_size)`: longest side -> image_size with segment-anything's own
   `ResizeLongestSide.apply_image` (PIL bilinear with antialiasing), so the official `SamPredictor`
   given the uint8 picture of step 2 sees exactly the same pixels.
4. `normalize_and_pad(resized, normalization, image_size)`: "sam" = ImageNet mean/std of
   `Sam.pixel_mean/pixel_std`, "zero_one" = pixels / 255 (MedSAM); then zero padding at the bottom and
   right to image_size x image_size, as `Sam.preprocess` does. -> (3, S, S) float32 tensor.

Training applies augmentation between steps 3 and 4 (on the uint8 resized picture); evaluation and
prediction call `preprocess_image`, which is steps 2-4.

`Preprocessing` holds every setting above; `Preprocessing.save(folder)` writes `preprocessing.json`
and `Preprocessing.load(path)` reads it back (a folder or the file itself).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from projects.sam_finetune.errors import DataError
from projects.sam_finetune.transforms import image_to_tensor, normalize_image, pad_to_square

TIFF_SUFFIXES = (".tif", ".tiff")
PREPROCESSING_FILE = "preprocessing.json"


@dataclass
class IntensityMapping:
    """How stored values become 0..255 pixels (config section `data.intensity`)."""

    mode: Literal["auto", "fixed", "minmax"] = "auto"
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])  # "auto", non-uint8 images
    window: list[float] | None = None  # "fixed": [low, high] in stored units

    def problem(self) -> str | None:
        """A message "<key>: <problem>" when the settings cannot be used, else None."""
        low, high = (self.percentiles + [None, None])[:2]
        if len(self.percentiles) != 2 or not 0 <= low < high <= 100:
            return f"percentiles: must be [low, high] with 0 <= low < high <= 100, got {self.percentiles}"
        if self.mode == "fixed" and (self.window is None or len(self.window) != 2 or self.window[0] >= self.window[1]):
            return f"window: mode 'fixed' needs [low, high] with low < high, got {self.window}"
        if self.mode != "fixed" and self.window is not None:
            return f"window: only used by mode 'fixed' (mode is {self.mode!r}); remove it"
        return None


@dataclass
class Preprocessing:
    """Every setting of the path image file -> model input; saved beside exports as preprocessing.json."""

    image_size: int = 1024
    normalization: Literal["sam", "zero_one"] = "sam"
    intensity: IntensityMapping = field(default_factory=IntensityMapping)

    FILE_NAME: ClassVar[str] = PREPROCESSING_FILE

    @classmethod
    def from_config(cls, cfg: Any) -> Preprocessing:
        """From a FinetuneConfig, a DataConfig (its `data` section) or a Preprocessing."""
        if isinstance(cfg, Preprocessing):
            return cfg
        data = getattr(cfg, "data", cfg)
        return cls(image_size=data.image_size, normalization=data.normalization,
                   intensity=dataclasses.replace(data.intensity))

    def to_dict(self) -> dict[str, Any]:
        """The settings plus, for readers without this code, what each step does."""
        mean, std = normalization_mean_std(self.normalization)
        return {
            "image_size": self.image_size,
            "normalization": self.normalization,
            "intensity": dataclasses.asdict(self.intensity),
            "pixel_mean": list(mean),
            "pixel_std": list(std),
            "steps": [
                "read the image as stored (no bit-depth conversion); grayscale -> 3 channels, alpha dropped",
                "intensity: window [low, high] -> 0..255 uint8 (auto: uint8 unchanged, otherwise the "
                "percentile window of each image; fixed: the given window; minmax: each image's min/max)",
                "resize the longest side to image_size with segment_anything ResizeLongestSide.apply_image",
                "(pixels - pixel_mean) / pixel_std, then zero-pad bottom/right to image_size x image_size",
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        intensity = IntensityMapping(**data.get("intensity", {}))
        made = cls(image_size=int(data["image_size"]), normalization=data["normalization"], intensity=intensity)
        problem = intensity.problem()
        if made.normalization not in ("sam", "zero_one") or problem:
            raise ValueError(problem or f"normalization: expected 'sam' or 'zero_one', got {made.normalization!r}")
        return made

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / PREPROCESSING_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Preprocessing:
        """From preprocessing.json, or a folder holding it; DataError naming the file when unusable."""
        path = Path(path)
        path = path / PREPROCESSING_FILE if path.is_dir() else path
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(f"{path}: not a usable {PREPROCESSING_FILE} ({error})") from None


def normalization_mean_std(normalization: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (pixel_mean, pixel_std) on the 0..255 scale that `Sam.preprocess` would need for this mode."""
    from projects.sam_finetune.transforms import SAM_PIXEL_MEAN, SAM_PIXEL_STD

    if normalization == "zero_one":
        return (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)
    if normalization == "sam":
        return SAM_PIXEL_MEAN, SAM_PIXEL_STD
    raise ValueError(f"unknown normalization {normalization!r} (expected 'sam' or 'zero_one')")


def set_sam_normalization(sam: Any, normalization: str) -> Any:
    """Set a segment-anything `Sam`'s pixel_mean / pixel_std (not saved in its state dict) so that
    `Sam.preprocess`, used by the official `SamPredictor`, normalises like `normalize_and_pad`."""
    mean, std = normalization_mean_std(normalization)
    sam.pixel_mean.copy_(torch.tensor(mean).view(-1, 1, 1))
    sam.pixel_std.copy_(torch.tensor(std).view(-1, 1, 1))
    return sam


# --- 1. reading -------------------------------------------------------------------------------------


def read_image(path: str | Path) -> np.ndarray:
    """The image exactly as stored: HxW or HxWxC (C <= 4, RGB(A) order), its own dtype.

    Raises DataError("<file>: unreadable image ...") for a missing or broken file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        try:
            image = np.asarray(tifffile.imread(path, key=0))
        except Exception as error:  # tifffile raises many types for broken files
            raise DataError(f"{path}: unreadable TIFF ({type(error).__name__}: {error})") from None
        if image.ndim == 3 and image.shape[0] <= 4 < min(image.shape[1:]):  # channel-first
            image = np.moveaxis(image, 0, -1)
        return image
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # as stored; ignores EXIF orientation
    if image is None:
        raise DataError(f"{path}: unreadable image")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


# --- 2. intensity -----------------------------------------------------------------------------------


def color_channels(image: np.ndarray) -> np.ndarray:
    """HxW[xC] -> HxWx1 or HxWx3: the channels that carry intensity (alpha dropped)."""
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an HxW image or HxWxC with 1-4 channels, got shape {image.shape}")
    return image[:, :, :1] if image.shape[2] in (1, 2) else image[:, :, :3]  # gray(+alpha) / RGB(+alpha)


def intensity_window(image: np.ndarray, intensity: IntensityMapping) -> tuple[float, float] | None:
    """(low, high) in stored units that maps to 0..255, or None when the image is used as it is."""
    channels = color_channels(image)
    if intensity.mode == "fixed":
        return float(intensity.window[0]), float(intensity.window[1])
    if intensity.mode == "auto" and channels.dtype == np.uint8:
        return None
    values = channels.astype(np.float64)
    if intensity.mode == "minmax":
        return float(np.nanmin(values)), float(np.nanmax(values))
    low, high = np.nanpercentile(values, intensity.percentiles)
    return float(low), float(high)


def map_intensity(image: np.ndarray, intensity: IntensityMapping | None = None) -> np.ndarray:
    """HxW[xC] as stored -> HxWx3 uint8 RGB: the picture the model sees (and a person should see).

    A constant image (low == high) maps to zeros.
    """
    intensity = intensity or IntensityMapping()
    channels = color_channels(image)
    window = intensity_window(image, intensity)
    if window is None:
        pixels = channels
    else:
        low, high = window
        scaled = (channels.astype(np.float64) - low) / (high - low) if high > low else np.zeros(channels.shape)
        pixels = np.rint(np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels)


# --- 3. resizing and 4. normalising -----------------------------------------------------------------


def resize_to_input(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """HxWx3 uint8 -> hxwx3 uint8 with max(h, w) == image_size, exactly as `SamPredictor.set_image`."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"resize_to_input expects HxWx3 uint8 (map_intensity's output), got "
                         f"{rgb.dtype} {rgb.shape}")
    return ResizeLongestSide(image_size).apply_image(rgb)


def normalize_and_pad(resized: np.ndarray, normalization: str, image_size: int) -> torch.Tensor:
    """hxwx3 uint8 (longest side image_size) -> (3, S, S) float32, normalised then zero-padded."""
    return image_to_tensor(pad_to_square(normalize_image(resized, normalization), image_size))


def preprocess_image(image: np.ndarray, cfg_or_params: Any) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """Image as stored -> (input tensor (3, S, S) float32, original_size (h, w), input_size (h, w)).

    `cfg_or_params`: a `Preprocessing`, a FinetuneConfig or its DataConfig. `input_size` is the size of
    the resized image inside the padded square (prompts and masks are cropped to it).
    """
    params = Preprocessing.from_config(cfg_or_params)
    resized = resize_to_input(map_intensity(image, params.intensity), params.image_size)
    original_size = (int(image.shape[0]), int(image.shape[1]))
    input_size = (int(resized.shape[0]), int(resized.shape[1]))
    return normalize_and_pad(resized, params.normalization, params.image_size), original_size, input_size
