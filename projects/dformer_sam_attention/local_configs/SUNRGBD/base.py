"""SUN RGB-D: 37 classes, 5285 train / 5050 test images of varying size; the official layout keeps the
labels in `labels/` (not `Label/`), and the official loader feeds DFormerv2 RGB (not BGR)."""

from projects.dformer_sam_attention.local_configs.config import SegConfig

SUN_CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag",
)

# official SUN RGB-D recipe shared by S/B/L: AdamW 8e-5, wd 0.01, poly 0.9, 10 warm-up epochs, 300 epochs,
# total batch 16, decoder width 1024, 480×480 crops
SUN = SegConfig(dataset_name="SUNRGBD", dataset_path="datasets/SUNRGBD", class_names=SUN_CLASS_NAMES,
                label_folder="labels", channel_order="rgb", image_height=480, image_width=480,
                eval_crop_size=(480, 480), nepochs=300, lr=8e-5, batch_size=16, decoder_embed_dim=1024,
                drop_path_rate=0.1)
