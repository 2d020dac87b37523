"""DFormerv2-B on NYU Depth v2 (upstream recipe: AdamW 6e-5, wd 0.01, 10 warm-up epochs, poly 0.9;
batch size, drop path and decoder width as in its upstream config)."""

from dataclasses import replace

from projects.dformer_sam_attention.local_configs.NYUDepthv2.base import NYU

C = replace(
    NYU,
    backbone="DFormerv2_B",
    pretrained_model="checkpoints/pretrained/DFormerv2_Base_pretrained.pth",
    decoder="hsg",
    decoder_embed_dim=512,
    batch_size=8,
    nepochs=500,
    drop_path_rate=0.2,
)
