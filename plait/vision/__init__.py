"""Vision preprocessing: safe decoding, CLIP-style resize / crop / normalise, light augmentation."""

from plait.vision.image import (
    CLIP_MEAN,
    CLIP_STD,
    ImageConfig,
    ImageError,
    ImageProcessor,
    center_crop,
    normalize,
    open_image,
    random_resized_crop,
    read_preprocessor_config,
    resize_shortest,
    to_rgb,
    to_tensor,
    write_preprocessor_config,
)

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "ImageConfig", "ImageError", "ImageProcessor", "center_crop",
    "normalize", "open_image", "random_resized_crop", "read_preprocessor_config",
    "resize_shortest", "to_rgb", "to_tensor", "write_preprocessor_config",
]
