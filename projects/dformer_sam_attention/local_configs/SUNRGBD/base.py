"""SUN RGB-D: 37 classes, 5285 train / 5050 test images of varying size, same folder layout as NYU."""

from projects.dformer_sam_attention.local_configs.config import SegConfig

SUN_CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag",
)

SUN = SegConfig(dataset_name="SUNRGBD", dataset_path="datasets/SUNRGBD", class_names=SUN_CLASS_NAMES,
                image_height=480, image_width=480, eval_crop_size=(480, 480), nepochs=300)
