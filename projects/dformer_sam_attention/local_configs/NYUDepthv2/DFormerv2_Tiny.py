"""A CPU-sized DFormerv2 on the synthetic RGB-D scenes (tests, `make demo`): 64×64 crops, 5 classes."""

from dataclasses import replace

from projects.dformer_sam_attention.local_configs.NYUDepthv2.base import NYU
from projects.dformer_sam_attention.utils.synthetic_scenes import SYNTHETIC_CLASS_NAMES

C = replace(
    NYU,
    dataset_name="SyntheticNYU",
    dataset_path="runs/data/synthetic_nyu",
    class_names=SYNTHETIC_CLASS_NAMES,
    channel_order="rgb",
    official_recipe=False,  # a CPU demo: validates on held-out train images, batch per process
    image_height=64,
    image_width=64,
    train_scale_array=(0.75, 1.0, 1.25),
    backbone="DFormerv2_Tiny",
    pretrained_model=None,
    drop_path_rate=0.0,
    decoder_embed_dim=32,
    decoder_align_heads=2,
    text_embed_dim=32,
    ham_rank=8,
    ham_channels=32,
    text_encoder="runs/models/tiny_clip",
    lr=2e-3,
    batch_size=8,
    nepochs=6,
    warm_up_epoch=1,
    num_workers=0,
    seed=0,
    eval_scale_array=(0.75, 1.0, 1.25),
    eval_flip=True,
    eval_crop_size=(64, 64),
    eval_batch_size=4,
)
