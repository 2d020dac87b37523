"""DFormerv2-S on SUN RGB-D (official recipe: see base.py; drop path 0.1)."""

from dataclasses import replace

from projects.dformer_sam_attention.local_configs.SUNRGBD.base import SUN

C = replace(SUN, backbone="DFormerv2_S",
            pretrained_model="checkpoints/pretrained/DFormerv2_Small_pretrained.pth", drop_path_rate=0.1)
