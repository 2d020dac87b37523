"""SAM-Med3D building blocks: one class (or one family of helpers) per file, as in segment_anything."""

from projects.sam_med3d_ich.modeling.heads import ICHClassificationHead, VisualTokenHead
from projects.sam_med3d_ich.modeling.image_encoder3d import ImageEncoderViT3D
from projects.sam_med3d_ich.modeling.mask_decoder3d import MaskDecoder3D
from projects.sam_med3d_ich.modeling.prompt_encoder3d import PromptEncoder3D
from projects.sam_med3d_ich.modeling.transformer3d import TwoWayTransformer3D

__all__ = ["ICHClassificationHead", "ImageEncoderViT3D", "MaskDecoder3D", "PromptEncoder3D",
           "TwoWayTransformer3D", "VisualTokenHead"]
