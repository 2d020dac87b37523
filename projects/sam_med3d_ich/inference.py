"""Whole-volume inference: sliding windows of the model's crop size over volumes of any size,
optional clicks and previous logits carried into every window, interactive refinement with clicks
simulated from a ground truth, and loading a trained checkpoint with its pre-processing settings."""

from __future__ import annotations

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
from projects.sam_med3d_ich.model import SamMed3DICH, build_ich_model, upsample_logits
from shared.amp import AmpPolicy
from shared.checkpoint import CheckpointError, load_checkpoint, load_model_state


@dataclass
class VolumePrediction:
    logits: torch.Tensor  # [1, 1, X, Y, Z] float32
    ich_probability: float  # max over windows of the classifier's probability


@torch.no_grad()
def predict_volume(model: SamMed3DICH, image: torch.Tensor, click_map: torch.Tensor | None = None,
                   prior_logits: torch.Tensor | None = None, overlap: float = 0.25, sw_batch_size: int = 2,
                   amp: AmpPolicy | None = None) -> VolumePrediction:
    """image [1, 1, X, Y, Z] pre-processed; click_map [X, Y, Z] with +1/-1 at clicks (or None);
    prior_logits [1, 1, X, Y, Z] from a previous round (or None). Windows are `img_size`^3 with
    Gaussian blending; volumes smaller than a window are padded."""
    model.eval()
    amp = amp or AmpPolicy(image.device.type, None)
    size = model.img_size
    low_res = model.prompt_encoder.mask_input_size
    channels = [image, (click_map if click_map is not None else torch.zeros_like(image[0, 0]))[None, None]
                .to(image), (prior_logits if prior_logits is not None else torch.zeros_like(image)).to(image)]
    window_probabilities: list[torch.Tensor] = []

    def predictor(windows: torch.Tensor) -> torch.Tensor:  # [n, 3, S, S, S] -> [n, 1, S, S, S]
        with amp.autocast():
            embeddings = model.image_encoder(windows[:, :1])
            _, ich_logit = model.classify(embeddings)
            points = map_to_points(windows[:, 1].round())
            prior = None
            if prior_logits is not None:
                prior = F.interpolate(windows[:, 2:3], size=low_res, mode="trilinear", align_corners=False)
            logits = upsample_logits(model.decode(embeddings, points, prior), (size,) * 3)
        window_probabilities.append(torch.sigmoid(ich_logit.float()))
        return logits.float()

    logits = sliding_window_inference(torch.cat(channels, dim=1), roi_size=(size,) * 3, sw_batch_size=sw_batch_size,
                                      predictor=predictor, overlap=overlap, mode="gaussian")
    return VolumePrediction(logits, float(torch.cat(window_probabilities).max()))


def probability_on_input_grid(probability: torch.Tensor, model_affine: np.ndarray, input_affine: np.ndarray,
                              input_shape: tuple[int, ...]) -> torch.Tensor:
    """probability [1, X', Y', Z'] on the model's (resampled) grid -> [1, X, Y, Z] on the input's grid,
    trilinear through world coordinates; masks and metrics are reported in the input's geometry."""
    resampled = SpatialResample(mode="bilinear")(MetaTensor(probability.float().cpu(),
                                                            affine=torch.as_tensor(model_affine)),
                                                 dst_affine=torch.as_tensor(input_affine),
                                                 spatial_size=tuple(input_shape))
    return resampled.as_tensor() if isinstance(resampled, MetaTensor) else resampled


@torch.no_grad()
def interactive_refinement(model: SamMed3DICH, image: torch.Tensor, truth: torch.Tensor, num_clicks: int,
                           generator: torch.Generator | None = None, **kwargs: Any) -> list[VolumePrediction]:
    """Round 0 without clicks, then `num_clicks` rounds each adding one click drawn from the current
    error region of the whole volume, with the previous logits as the prior. -> one prediction per round."""
    prediction = predict_volume(model, image, **kwargs)
    rounds = [prediction]
    click_map = torch.zeros(image.shape[2:], device=image.device)
    truth = truth.bool().reshape(1, 1, *image.shape[2:])
    for _ in range(num_clicks):
        coords, labels = sample_error_clicks(prediction.logits > 0, truth, generator)
        if labels[0, 0] < 0:  # nothing left to correct
            rounds.append(prediction)
            continue
        click_map[tuple(coords[0, 0])] = 1.0 if labels[0, 0] == 1 else -1.0
        prediction = predict_volume(model, image, click_map=click_map, prior_logits=prediction.logits, **kwargs)
        rounds.append(prediction)
    return rounds


def load_trained_model(checkpoint: str | os.PathLike, device: torch.device | str = "cpu"
                       ) -> tuple[SamMed3DICH, dict[str, Any]]:
    """A `best_model.pth` / `latest_model.pth` of this tool -> (model in eval mode, its settings:
    model_config and preprocessing)."""
    payload = load_checkpoint(checkpoint)
    settings = (payload.get("extra") or {}) if isinstance(payload, dict) else {}
    if "model_config" not in settings or "preprocessing" not in settings:
        raise CheckpointError(f"{checkpoint}: not a checkpoint of this tool (no model_config/preprocessing; "
                              "to start from published SAM-Med3D weights use train.py --checkpoint)")
    model = build_ich_model(**settings["model_config"])
    load_model_state(model, payload, strict=True, source_name=str(checkpoint))
    return model.to(device).eval(), settings
