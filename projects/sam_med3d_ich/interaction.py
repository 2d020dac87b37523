"""The training forward pass: encode once, then several prompt/decoder rounds with simulated clicks.

Round 0 has no click and no prior mask (the automatic segmentation validation measures). Each later
round adds one click from the error region of the previous round and feeds that round's low-res
logits as the dense prompt; one random round from the third on gets the prior mask only, as in
SAM-Med3D's training. The prior is detached: clicks are not differentiable anyway, and this keeps
memory flat in the number of rounds.

It is an `nn.Module` so DDP can wrap it: every parameter used in the rounds is synchronised.
"""

from __future__ import annotations

import torch
from torch import nn

from projects.sam_med3d_ich.clicks import sample_error_clicks
from projects.sam_med3d_ich.model import SamMed3DICH, upsample_logits


class ClickRoundsForward(nn.Module):
    def __init__(self, model: SamMed3DICH, num_rounds: int, freeze_encoder: bool = False) -> None:
        super().__init__()
        if num_rounds < 1:
            raise ValueError(f"num_clicks must be >= 1, got {num_rounds}")
        self.model = model
        self.num_rounds = num_rounds
        self.freeze_encoder = freeze_encoder

    def forward(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """images, labels [B, 1, S, S, S] -> (logits [B, 1, S, S, S] per round, ICH logit [B])."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            embeddings = self.model.image_encoder(images)
        _, ich_logit = self.model.classify(embeddings)

        truth = labels > 0.5
        mask_only_round = -1
        if self.num_rounds >= 3:
            mask_only_round = int(torch.randint(2, self.num_rounds, (1,), generator=generator))
        clicks: list[tuple[torch.Tensor, torch.Tensor]] = []
        prior, round_logits = None, []
        for round_index in range(self.num_rounds):
            points = None
            if round_index > 0 and round_index != mask_only_round:
                clicks.append(sample_error_clicks(round_logits[-1].detach() > 0, truth, generator))
                points = (torch.cat([c for c, _ in clicks], dim=1), torch.cat([lab for _, lab in clicks], dim=1))
            low_res = self.model.decode(embeddings, points, prior)
            round_logits.append(upsample_logits(low_res, images.shape[-3:]))
            prior = low_res.detach()
        return round_logits, ich_logit
