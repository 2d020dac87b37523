"""Whole-volume inference: sliding windows of the model's crop size over volumes of any size,
clicks and previous logits carried into every window, interactive refinement with clicks
simulated from a ground truth (SAM-Med3D's "Dice at k clicks"), and loading a checkpoint for
inference — one of this tool's, or a published SAM-Med3D / SAM-Med3D-turbo file as released."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import SpatialResample

from projects.sam_med3d_ich.clicks import map_to_points, sample_error_clicks
from projects.sam_med3d_ich.config import SAM_MED3D_SPACING_MM
from projects.sam_med3d_ich.model import (
    ARCHITECTURES,
    SamMed3DICH,
    build_ich_model,
    load_sam_checkpoint,
    upsample_logits,
)
from shared.amp import AmpPolicy
from shared.checkpoint import CheckpointError, extract_model_state, load_checkpoint, load_model_state

# A published checkpoint is evaluated with SAM-Med3D's own pre-processing for CT.
SAM_MED3D_PREPROCESSING = {"intensity_norm": "sam_med3d", "hu_window": None,
                           "target_spacing": list(SAM_MED3D_SPACING_MM)}


@dataclass
class VolumePrediction:
    logits: torch.Tensor  # [1, 1, X, Y, Z] float32
    ich_probability: float  # max over the encoded windows of the classifier's probability (NaN: none encoded)


@torch.no_grad()
def predict_volume(model: SamMed3DICH, image: torch.Tensor, click_map: torch.Tensor | None = None,
                   prior_logits: torch.Tensor | None = None, overlap: float = 0.25, sw_batch_size: int = 2,
                   amp: AmpPolicy | None = None, keep_unclicked: bool = False) -> VolumePrediction:
    """image [1, 1, X, Y, Z] pre-processed; click_map [X, Y, Z] with +1/-1 at clicks (or None);
    prior_logits [1, 1, X, Y, Z] from a previous round (or None). Windows are `img_size`^3 with
    Gaussian blending; volumes smaller than a window are padded.

    Each window is decoded with exactly its own clicks (no padding tokens borrowed from other
    windows of the batch), so the result does not depend on `sw_batch_size`. With `keep_unclicked`
    (interactive rounds) a window without a click keeps its prior logits, as SAM-Med3D segments only
    around its prompts; otherwise such a window is decoded without points."""
    model.eval()
    amp = amp or AmpPolicy(image.device.type, None)
    size = model.img_size
    low_res = model.prompt_encoder.mask_input_size
    channels = [image, (click_map if click_map is not None else torch.zeros_like(image[0, 0]))[None, None]
                .to(image), (prior_logits if prior_logits is not None else torch.zeros_like(image)).to(image)]
    window_probabilities: list[torch.Tensor] = []

    def predictor(windows: torch.Tensor) -> torch.Tensor:  # [n, 3, S, S, S] -> [n, 1, S, S, S]
        out = windows[:, 2:3].clone()  # kept windows return their prior
        points = [map_to_points(window[None, 1].round()) for window in windows]
        todo = [i for i, p in enumerate(points) if p is not None or not keep_unclicked]
        if not todo:
            return out
        with amp.autocast():
            embeddings = model.image_encoder(windows[todo, :1])
            _, ich_logit = model.classify(embeddings)
            for row, i in enumerate(todo):
                prior = None
                if prior_logits is not None:
                    prior = F.interpolate(windows[i:i + 1, 2:3], size=low_res, mode="trilinear", align_corners=False)
                decoded = model.decode(embeddings[row:row + 1], points[i], prior)
                out[i:i + 1] = upsample_logits(decoded, (size,) * 3).float()
        window_probabilities.append(torch.sigmoid(ich_logit.float()))
        return out

    logits = sliding_window_inference(torch.cat(channels, dim=1), roi_size=(size,) * 3, sw_batch_size=sw_batch_size,
                                      predictor=predictor, overlap=overlap, mode="gaussian")
    probability = float(torch.cat(window_probabilities).max()) if window_probabilities else math.nan
    return VolumePrediction(logits, probability)


def probability_on_input_grid(probability: torch.Tensor, model_affine: np.ndarray, input_affine: np.ndarray,
                              input_shape: tuple[int, ...]) -> torch.Tensor:
    """probability [1, X', Y', Z'] on the model's grid (reoriented, resampled) -> [1, X, Y, Z] on the
    input's grid and orientation, trilinear through world coordinates."""
    resampled = SpatialResample(mode="bilinear")(MetaTensor(probability.float().cpu(),
                                                            affine=torch.as_tensor(model_affine)),
                                                 dst_affine=torch.as_tensor(input_affine),
                                                 spatial_size=tuple(input_shape))
    return resampled.as_tensor() if isinstance(resampled, MetaTensor) else resampled


def same_grid(model_affine: np.ndarray, model_shape: tuple[int, ...], input_affine: np.ndarray,
              input_shape: tuple[int, ...]) -> bool:
    return tuple(model_shape) == tuple(input_shape) and np.allclose(model_affine, input_affine, atol=1e-5)


@torch.no_grad()
def interactive_refinement(model: SamMed3DICH, image: torch.Tensor, truth: torch.Tensor, num_clicks: int,
                           generator: torch.Generator | None = None, **kwargs: Any) -> list[VolumePrediction]:
    """SAM-Med3D's evaluation on a whole volume: round 0 is the automatic (prompt-free) prediction;
    click round k (1..num_clicks) adds one click drawn from the error region of round k-1's click
    prediction (round 1: from the empty mask, i.e. anywhere in the lesion) with the previous logits
    as mask prompt (all-zero before the first click). -> [automatic, after 1 click, ..., after N]."""
    rounds = [predict_volume(model, image, **kwargs)]
    logits = torch.zeros_like(image)
    click_map = torch.zeros(image.shape[2:], device=image.device)
    truth = truth.bool().reshape(1, 1, *image.shape[2:])
    for _ in range(num_clicks):
        coords, labels = sample_error_clicks(logits > 0, truth, generator)
        if labels[0, 0] >= 0:  # else nothing is left to correct: the prediction stays
            click_map[tuple(coords[0, 0])] = 1.0 if labels[0, 0] == 1 else -1.0
            logits = predict_volume(model, image, click_map=click_map, prior_logits=logits, keep_unclicked=True,
                                    **kwargs).logits
        rounds.append(VolumePrediction(logits, rounds[0].ich_probability))
    return rounds


def published_architecture(state: dict[str, torch.Tensor], source: str) -> str:
    """The registry name whose Sam3D has exactly this state dict's keys and shapes."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name in ARCHITECTURES:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_ich_model(name, 8, 32).state_dict().items()
                        if not k.startswith(("representation_head.", "ich_head."))}
        if {k: v for k, v in shapes.items() if k in expected} == expected:
            return name
    raise CheckpointError(f"{source}: not a SAM-Med3D checkpoint of a known architecture "
                          f"({', '.join(ARCHITECTURES)}); {len(shapes)} tensors, e.g. {sorted(shapes)[:3]}")


def load_model_for_inference(checkpoint: str | os.PathLike, device: torch.device | str = "cpu"
                             ) -> tuple[SamMed3DICH, dict[str, Any]]:
    """-> (model in eval mode, settings: model_config, preprocessing, source, ich_head_trained).

    A `best_model.pth` / `latest_model.pth` of this tool brings its own pre-processing. A published
    SAM-Med3D / SAM-Med3D-turbo file (`model_state_dict` with `args` etc., or a bare state dict,
    `module.` prefixes allowed) runs zero-shot with SAM-Med3D's pre-processing; its ICH head does not
    exist, so no ICH probability is reported for it."""
    payload = load_checkpoint(checkpoint)
    settings = (payload.get("extra") or {}) if isinstance(payload, dict) else {}
    if "model_config" in settings and "preprocessing" in settings:
        model = build_ich_model(**settings["model_config"])
        load_model_state(model, payload, strict=True, source_name=str(checkpoint))
        return model.to(device).eval(), {**settings, "source": "this tool", "ich_head_trained": True}
    try:
        state = extract_model_state(payload)
    except CheckpointError as error:
        raise CheckpointError(f"{checkpoint}: {error}") from None
    model_type = published_architecture(state, str(checkpoint))
    model = build_ich_model(model_type, 8, 32)  # the heads stay untrained: ICH probability is not reported
    load_sam_checkpoint(model, state)
    return model.to(device).eval(), {"model_config": {"model_type": model_type, "visual_tokens": 8,
                                                      "visual_token_dim": 32},
                                     "preprocessing": dict(SAM_MED3D_PREPROCESSING),
                                     "source": "published SAM-Med3D", "ich_head_trained": False}
