"""The training forward pass: encode once, then an automatic round and several click rounds.

Round 0 has no click and no prior mask (the automatic segmentation). The click rounds follow
SAM-Med3D's interaction: they start from an empty prediction (all-zero low-res logits as the mask
prompt), and each adds one click drawn from the error region of the previous click round (missed
voxel -> positive, false positive -> negative) and feeds that round's low-res logits as the dense
prompt; one random click round from the third on gets the mask prompt only. Evaluation measures
"Dice at k clicks" the same way (`inference.interactive_refinement`). The prior is detached: clicks
are not differentiable anyway, and this keeps memory flat in the number of rounds.

It is an `nn.Module` so DDP can wrap it: every parameter used in the rounds is synchronised.
"""

from __future__ import annotations

import torch
from torch import nn

from projects.sam_med3d_ich.clicks import sample_error_clicks
from projects.sam_med3d_ich.model import SamMed3DICH, upsample_logits


class ClickRoundsForward(nn.Module):
    def __init__(self, model: SamMed3DICH, num_clicks: int, freeze_encoder: bool = False) -> None:
        super().__init__()
        if num_clicks < 1:
            raise ValueError(f"num_clicks must be >= 1, got {num_clicks}")
        self.model = model
        self.num_clicks = num_clicks
        self.freeze_encoder = freeze_encoder

    def forward(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """images, labels [B, 1, S, S, S] -> (logits [B, 1, S, S, S] of the automatic round and of
        each click round, 1 + num_clicks of them; ICH logit [B])."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            embeddings = self.model.image_encoder(images)
        _, ich_logit = self.model.classify(embeddings)
        round_logits = [upsample_logits(self.model.decode(embeddings), images.shape[-3:])]

        truth = labels > 0.5
        mask_only_round = -1
        if self.num_clicks >= 3:
            mask_only_round = int(torch.randint(3, self.num_clicks + 1, (1,), generator=generator))
        low_res_size = self.model.prompt_encoder.mask_input_size
        prior = images.new_zeros(images.shape[0], 1, *low_res_size)  # empty start, as SAM-Med3D
        previous = torch.zeros_like(truth)
        clicks: list[tuple[torch.Tensor, torch.Tensor]] = []
        for click_round in range(1, self.num_clicks + 1):
            points = None
            if click_round != mask_only_round:
                clicks.append(sample_error_clicks(previous, truth, generator))
                points = (torch.cat([c for c, _ in clicks], dim=1), torch.cat([lab for _, lab in clicks], dim=1))
            low_res = self.model.decode(embeddings, points, prior)
            logits = upsample_logits(low_res, images.shape[-3:])
            round_logits.append(logits)
            prior, previous = low_res.detach(), logits.detach() > 0
        return round_logits, ich_logit
