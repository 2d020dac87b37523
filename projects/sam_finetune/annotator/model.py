"""The model behind the page: any checkpoint sam_finetune loads, the image embedding through the tool's
one preprocessing function, and prompts -> masks exactly as `SamPredictor.predict` computes them.

A click runs only the prompt encoder and the mask decoder on a cached embedding. The decoder's
four outputs come from one call: output 0 is what `SamPredictor.predict(..., multimask_output=False)`
(and so predict.py) returns, outputs 1-3 are its multimask candidates.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from projects.sam_finetune.modeling.loading import load_sam
from projects.sam_finetune.modeling.strategies import load_finetuned
from projects.sam_finetune.preprocess import (
    PREPROCESSING_FILE,
    Preprocessing,
    map_intensity,
    preprocess_image,
    read_image,
)
from shared.checkpoint import CheckpointError, load_checkpoint

MAX_POINTS = 64  # prompts per mask; more is not a click-by-click annotation


@dataclass
class Embedding:
    features: torch.Tensor  # (1, C, h, w) image embedding, as SamPredictor.features
    original_size: tuple[int, int]  # (H, W) of the stored image
    input_size: tuple[int, int]  # (h, w) of the resized image inside the padded square


@dataclass
class Prompts:
    """One object's prompts in the image's own pixels (x, y)."""

    points: list[tuple[float, float]]
    labels: list[int]  # 1 object, 0 background
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1

    def problem(self) -> str | None:
        if len(self.points) != len(self.labels):
            return f"{len(self.points)} points but {len(self.labels)} labels"
        if len(self.points) > MAX_POINTS:
            return f"at most {MAX_POINTS} points per object"
        if any(label not in (0, 1) for label in self.labels):
            return "point labels are 1 (object) or 0 (background)"
        if not self.points and self.box is None:
            return "no prompt: click a point or draw a box"
        if self.box is not None and not (self.box[0] < self.box[2] and self.box[1] < self.box[3]):
            return "a box needs x0 < x1 and y0 < y1"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"points": [list(p) for p in self.points], "labels": list(self.labels),
                "box": None if self.box is None else list(self.box)}


@dataclass
class Prediction:
    masks: np.ndarray  # (4, H, W) bool: 0 = single-mask output (predict.py's), 1-3 = multimask candidates
    iou: np.ndarray  # (4,) predicted IoU of each
    low_res_logits: np.ndarray  # (4, 256, 256) for vit_b, as SamPredictor returns


@dataclass
class AnnotationModel:
    sam: Sam
    preprocessing: Preprocessing
    description: dict[str, Any]  # checkpoint, model type, strategy: shown on the page
    fingerprint: str  # model weights + preprocessing: the embedding cache key's first half

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # one forward at a time (the prefetch thread shares the model)
        self._transform = ResizeLongestSide(self.preprocessing.image_size)

    @property
    def device(self) -> torch.device:
        return self.sam.device

    def display_image(self, path: Path) -> np.ndarray:
        """HxWx3 uint8: the picture the model sees, before resizing (what the page shows)."""
        return map_intensity(read_image(path), self.preprocessing.intensity)

    @torch.inference_mode()
    def embed(self, path: Path) -> Embedding:
        tensor, original_size, input_size = preprocess_image(read_image(path), self.preprocessing)
        with self._lock:
            features = self.sam.image_encoder(tensor.unsqueeze(0).to(self.device))
        return Embedding(features=features, original_size=original_size, input_size=input_size)

    @torch.inference_mode()
    def predict(self, embedding: Embedding, prompts: Prompts) -> Prediction:
        problem = prompts.problem()
        if problem:
            raise ValueError(problem)
        sam, device = self.sam, self.device
        points = boxes = None
        if prompts.points:  # as SamPredictor.predict: numpy transform, then float32 tensors
            coords = self._transform.apply_coords(np.asarray(prompts.points, np.float32), embedding.original_size)
            points = (torch.as_tensor(coords, dtype=torch.float, device=device)[None],
                      torch.as_tensor(prompts.labels, dtype=torch.int, device=device)[None])
        if prompts.box is not None:
            box = self._transform.apply_boxes(np.asarray(prompts.box, np.float32), embedding.original_size)
            boxes = torch.as_tensor(box, dtype=torch.float, device=device)
        with self._lock:
            sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
            low_res, iou = sam.mask_decoder.predict_masks(  # all 4 outputs; forward() would slice them
                image_embeddings=embedding.features.to(device), image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
            masks = sam.postprocess_masks(low_res, embedding.input_size, embedding.original_size)
        return Prediction(masks=(masks[0] > sam.mask_threshold).cpu().numpy(), iou=iou[0].float().cpu().numpy(),
                          low_res_logits=low_res[0].float().cpu().numpy())


# --- loading ----------------------------------------------------------------------------------------


def file_digest(*paths: Path | None, extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        if path is None:
            continue
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def _adapter_weights(path: str | Path, model_type: str | None) -> dict[str, Any]:
    payload = load_checkpoint(path)
    if not isinstance(payload, dict) or "strategy" not in payload:
        raise CheckpointError(f"{path}: not a best_model_adapter.pth")
    if payload["strategy"] != "adapter":
        raise CheckpointError(f"{path}: {payload['strategy']} weights are already merged into best_model_sam.pth; "
                              "--strategy_weights is only for adapter runs")
    if model_type is None or payload.get("model_type") not in (None, model_type):
        raise CheckpointError(f"{path}: adapter weights for {payload.get('model_type')}, not {model_type}")
    return payload


def load_annotation_model(checkpoint: str | Path, model_type: str | None = None, normalization: str | None = None,
                          strategy_weights: str | Path | None = None, device: str = "cpu") -> AnnotationModel:
    """Any checkpoint predict.py takes, through the tool's `load_sam`: a training payload (best_model.pth,
    latest_model.pth: adapters and LoRA rebuilt from its config), or a bare Meta-format state dict (official
    vit_b/l/h, best_model_sam.pth) with `model_type`; plus, for an adapter run's export, `strategy_weights`
    (best_model_adapter.pth, put in by `load_finetuned`).

    Preprocessing: a training payload's own config; for a bare state dict the preprocessing.json beside it
    (written with every export), else `normalization` (default "sam") at the model's size. A
    `normalization` that contradicts the checkpoint's own is refused.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: checkpoint file not found")
    if strategy_weights is None:
        loaded = load_sam(checkpoint, model_type, None, normalization or "sam")
        sam, preprocessing, model_type, strategy = loaded.sam, loaded.preprocessing, loaded.model_type, loaded.strategy
        told_by = loaded.preprocessing_from
    else:
        stored = load_checkpoint(checkpoint)
        if isinstance(stored, dict) and ("config" in stored or "config" in (stored.get("extra") or {})):
            raise CheckpointError(f"{checkpoint}: a training checkpoint holds its adapter weights already; "
                                  "--strategy_weights goes with a best_model_sam.pth export")
        payload = _adapter_weights(strategy_weights, model_type)
        beside = checkpoint.parent / PREPROCESSING_FILE
        preprocessing = Preprocessing.load(beside) if beside.is_file() else None
        told_by = str(beside) if preprocessing else None
        try:
            sam = load_finetuned(model_type, str(checkpoint),
                                 preprocessing.image_size if preprocessing and model_type == "tiny" else None, payload)
        except ValueError as error:
            raise CheckpointError(f"{strategy_weights}: {error}") from None
        preprocessing = preprocessing or Preprocessing(image_size=sam.image_encoder.img_size,
                                                       normalization=normalization or "sam")
        strategy = "adapter"
    if told_by and normalization is not None and normalization != preprocessing.normalization:
        raise CheckpointError(f"{told_by}: says normalization {preprocessing.normalization!r}; "
                              f"--normalization {normalization} would not match it")
    if preprocessing.image_size != sam.image_encoder.img_size:
        raise CheckpointError(f"{checkpoint}: model input size {sam.image_encoder.img_size}, but the preprocessing "
                              f"says {preprocessing.image_size}")
    sam = sam.to(torch.device(device)).eval()
    fingerprint = file_digest(checkpoint, Path(strategy_weights) if strategy_weights else None,
                              extra=repr(sorted(preprocessing.to_dict().items())))
    description = {"checkpoint": checkpoint.name, "model_type": model_type, "strategy": strategy,
                   "image_size": preprocessing.image_size, "normalization": preprocessing.normalization,
                   "intensity": preprocessing.intensity.mode}
    return AnnotationModel(sam=sam, preprocessing=preprocessing, description=description, fingerprint=fingerprint)
