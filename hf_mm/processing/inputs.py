"""Input checks shared by every hf_mm processor."""

import numpy as np
import PIL.Image
import torch

_IMAGE_TYPES = (PIL.Image.Image, np.ndarray, torch.Tensor)


def _flatten_images(images) -> list:
    """Nested lists of images (one list per sample) -> a flat list; anything else is returned as a one-list."""
    if isinstance(images, (list, tuple)):
        return [image for item in images for image in _flatten_images(item)]
    return [images]


def check_image_types(images) -> None:
    """Refuse anything but PIL images, arrays and tensors, before transformers opens strings as paths or URLs."""
    for index, image in enumerate(_flatten_images(images) if images is not None else []):
        if not isinstance(image, _IMAGE_TYPES):
            raise TypeError(
                f"images[{index}] is a {type(image).__name__}; expected a PIL.Image.Image, numpy array or "
                "torch tensor. Open files with PIL.Image.open(path).convert('RGB') first."
            )


__all__ = ["check_image_types"]
