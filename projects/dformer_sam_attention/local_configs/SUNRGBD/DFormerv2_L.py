"""DFormerv2-L on SUN RGB-D (official recipe: see base.py; drop path 0.27)."""

from dataclasses import replace

from projects.dformer_sam_attention.local_configs.SUNRGBD.base import SUN

C = replace(SUN, backbone="DFormerv2_L",
            pretrained_model="checkpoints/pretrained/DFormerv2_Large_pretrained.pth", drop_path_rate=0.27)
