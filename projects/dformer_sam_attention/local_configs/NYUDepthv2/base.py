"""NYU Depth v2: 40 classes, 795 train / 654 test images at 480×640 (`RGB/`, `Depth/`, `Label/`)."""

from projects.dformer_sam_attention.local_configs.config import SegConfig

NYU_CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "other structure", "other furniture", "other prop",
)

NYU = SegConfig(dataset_name="NYUDepthv2", dataset_path="datasets/NYUDepthv2", class_names=NYU_CLASS_NAMES)
