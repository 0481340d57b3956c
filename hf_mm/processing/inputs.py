"""Input checks shared by every hf_mm processor."""

import itertools

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


HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def check_placeholder_count(text, images, image_token: str) -> None:
    """As many `image_token` placeholders in `text` as images, or a ValueError with both counts. transformers 5.24
    refuses a mismatch while expanding; 5.16 stops with a bare StopIteration (too few images) or expands nothing
    (no images), so hf_mm checks first, on every release."""
    if text is None:
        return
    texts = [text] if isinstance(text, str) else list(text)
    n_placeholders = sum(sample.count(image_token) for sample in texts)
    n_images = len(_flatten_images(images)) if images is not None else 0
    if n_placeholders != n_images:
        raise ValueError(
            f"The text holds {n_placeholders} {image_token!r} placeholders but {n_images} images were given: pass "
            "one image per placeholder (the processor expands each into that image's run)."
        )


def _prepare_one(image, index: int):
    if not isinstance(image, PIL.Image.Image):
        return image
    try:
        image.load()  # PIL opens lazily: decode now, so a broken file fails here with its index, not deep inside
    except Exception as error:  # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error...
        raise ValueError(
            f"images[{index}] cannot be decoded ({type(error).__name__}: {error}): the file is truncated or corrupt. "
            "Re-encode it or leave it out."
        ) from None
    if image.mode in HIGH_BIT_MODES:  # 16/32-bit grayscale: scale to 8 bits; an RGB conversion would clip at 255
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = PIL.Image.fromarray((array / peak * 255).round().clip(0, 255).astype(np.uint8), mode="L")
    return image


def prepare_images(images):
    """`check_image_types`, then every PIL image decoded (a truncated or corrupt file raises a ValueError naming its
    index) and high-bit-depth grayscale scaled to 8 bits. The nesting (one list per sample) is kept."""
    check_image_types(images)
    if images is None:
        return None
    counter = itertools.count()

    def visit(item):
        if isinstance(item, (list, tuple)):
            return type(item)(visit(inner) for inner in item)
        return _prepare_one(item, next(counter))

    return visit(images)


__all__ = ["check_image_types", "prepare_images"]
