"""SAM as a trainable module: encode a batch of images once, then prompt-encode and decode each image.

`Sam.forward` runs under `torch.no_grad()`, and segment-anything 1.0's mask decoder repeats the image
embedding once per prompt, so it cannot take several images with several prompts each in one
call. This module calls the three parts directly: the encoder on the whole batch, then the prompt
encoder and mask decoder once per image with all of that image's prompts. It is also what DDP wraps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn


@dataclass
class ImagePrompts:
    """The prompts of one image, in the input frame: N instances."""

    boxes: torch.Tensor | None = None  # (N, 4) x0, y0, x1, y1
    point_coords: torch.Tensor | None = None  # (N, P, 2) x, y
    point_labels: torch.Tensor | None = None  # (N, P) 1 positive, 0 negative, -1 padding

    def to(self, device: torch.device) -> ImagePrompts:
        move = (lambda t: None if t is None else t.to(device))  # noqa: E731
        return ImagePrompts(move(self.boxes), move(self.point_coords), move(self.point_labels))


class PromptedSam(nn.Module):
    def __init__(self, sam: Sam):
        super().__init__()
        self.sam = sam

    @property
    def image_size(self) -> int:
        return self.sam.image_encoder.img_size

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised, padded images -> (B, C, S/patch, S/patch) embeddings."""
        return self.sam.image_encoder(images)

    def forward(self, prompts: list[ImagePrompts], images: torch.Tensor | None = None,
                image_embeddings: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image: (low-res mask logits (N, 1, 4*h, 4*w), predicted IoU (N, 1)).

        Give `images` to run the encoder, or precomputed `image_embeddings` (the embedding cache).
        """
        if image_embeddings is None:
            image_embeddings = self.encode_images(images)
        dense_pe = self.sam.prompt_encoder.get_dense_pe()
        outputs = []
        for embedding, prompt in zip(image_embeddings, prompts):
            points = None if prompt.point_coords is None else (prompt.point_coords, prompt.point_labels)
            sparse, dense = self.sam.prompt_encoder(points=points, boxes=prompt.boxes, masks=None)
            low_res_logits, iou_pred = self.sam.mask_decoder(
                image_embeddings=embedding.unsqueeze(0), image_pe=dense_pe,
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
            )
            outputs.append((low_res_logits, iou_pred))
        return outputs


def upscale_logits(low_res_logits: torch.Tensor, image_size: int) -> torch.Tensor:
    """(N, 1, h, w) low-res logits -> (N, 1, S, S) in the padded input frame, as Sam.postprocess_masks."""
    return F.interpolate(low_res_logits.float(), (image_size, image_size), mode="bilinear", align_corners=False)
