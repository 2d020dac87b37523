"""DFormerv2-S on SUN RGB-D (images vary in size: evaluate one at a time, sliding window optional)."""

from dataclasses import replace

from projects.dformer_sam_attention.local_configs.SUNRGBD.base import SUN

C = replace(SUN, backbone="DFormerv2_S",
            pretrained_model="checkpoints/pretrained/DFormerv2_Small_pretrained.pth", batch_size=16)
