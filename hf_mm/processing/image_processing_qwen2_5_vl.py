"""HfMmQwen2_5_VLImageProcessor: native-resolution images as flattened patches, on PIL/NumPy (no torchvision).

Each image is resized by `smart_resize` to sides that are multiples of 28 (patch 14 x merge 2), with the pixel count
kept within [min_pixels, max_pixels] (`size["shortest_edge"]`, `size["longest_edge"]`) and the aspect ratio kept,
then normalised (CLIP mean/std) and cut into 14x14 patches, laid out block-major (each 2x2 block of neighbouring
patches is 4 consecutive rows) and repeated over the 2 temporal slots of the Conv3d. Outputs: `pixel_values`
(N_patches, 3 * 2 * 14 * 14) for the whole batch and `image_grid_thw` (n_images, 3).

Choices written down:
- Aspect ratios above `max_aspect_ratio` (200, the reference's limit) are refused with the image's size, not warped.
- Boxes for grounding are in absolute pixels of the *resized* image (the paper's choice); `map_box` converts
  between the original and the resized image, both ways.
"""

import math

import numpy as np
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs


class HfMmQwen2_5_VLImageProcessorKwargs(ImagesKwargs, total=False):
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    max_aspect_ratio: float


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 1280,
    max_aspect_ratio: float = 200,
) -> tuple[int, int]:
    """The (height, width) an image is resized to: multiples of `factor`, area within [min, max]_pixels, aspect kept."""
    if height < 1 or width < 1:
        raise ValueError(f"An image of {height}x{width} pixels has no area; images need at least 1x1 pixel.")
    ratio = max(height, width) / min(height, width)
    if ratio > max_aspect_ratio:
        raise ValueError(
            f"An image of {height}x{width} pixels has aspect ratio {ratio:.0f} > max_aspect_ratio={max_aspect_ratio}. "
            "Crop or pad it closer to square, or raise max_aspect_ratio."
        )
    new_h, new_w = round(height / factor) * factor, round(width / factor) * factor
    if new_h * new_w > max_pixels:  # shrink: largest multiples of `factor` whose area fits
        scale = math.sqrt(height * width / max_pixels)
        new_h = max(factor, math.floor(height / scale / factor) * factor)
        new_w = max(factor, math.floor(width / scale / factor) * factor)
    elif new_h * new_w < min_pixels:  # grow: smallest multiples of `factor` whose area reaches min_pixels
        scale = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * scale / factor) * factor
        new_w = math.ceil(width * scale / factor) * factor
    return new_h, new_w


def map_box(box, from_size: tuple[int, int], to_size: tuple[int, int]) -> list[float]:
    """[x1, y1, x2, y2] in an image of `from_size` (height, width) -> the same box in an image of `to_size`."""
    (from_h, from_w), (to_h, to_w) = from_size, to_size
    x1, y1, x2, y2 = box
    return [x1 * to_w / from_w, y1 * to_h / from_h, x2 * to_w / from_w, y2 * to_h / from_h]


def patchify(image: np.ndarray, patch: int, merge: int, temporal: int) -> np.ndarray:
    """(T, C, H, W) frames -> (T/temporal * H/patch * W/patch, C * temporal * patch * patch), block-major."""
    frames, channels, height, width = image.shape
    gh, gw = height // patch, width // patch
    x = image.reshape(frames // temporal, temporal, channels, gh // merge, merge, patch, gw // merge, merge, patch)
    # -> (t, gh/m, gw/m, m_row, m_col, C, temporal, p_row, p_col)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(frames // temporal * gh * gw, channels * temporal * patch * patch)


class HfMmQwen2_5_VLImageProcessor(PilBackend):
    resample = PILImageResampling.BICUBIC
    size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}
    default_to_square = False
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    patch_size = 14
    temporal_patch_size = 2
    merge_size = 2
    max_aspect_ratio = 200
    valid_kwargs = HfMmQwen2_5_VLImageProcessorKwargs
    model_input_names = ["pixel_values", "image_grid_thw"]

    def resized_size(self, height: int, width: int, size: SizeDict | None = None) -> tuple[int, int]:
        """The processed (height, width) of an image of `height` x `width` pixels."""
        size = size or SizeDict(**self.size)
        factor = self.patch_size * self.merge_size
        return smart_resize(height, width, factor, size.shortest_edge, size.longest_edge, self.max_aspect_ratio)

    def _preprocess(self, images: list[np.ndarray], do_resize: bool, size: SizeDict, resample, do_rescale: bool,
                    rescale_factor: float, do_normalize: bool, image_mean, image_std, return_tensors=None,
                    **kwargs) -> BatchFeature:  # fmt: skip
        patch, merge, temporal = self.patch_size, self.merge_size, self.temporal_patch_size
        all_patches, grids = [], []
        for image in images:  # (C, H, W), channel-first
            if do_resize:
                height, width = self.resized_size(*image.shape[-2:], size)
                image = self.resize(image, SizeDict(height=height, width=width), resample=resample)
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            frames = np.repeat(np.asarray(image, dtype=np.float32)[None], temporal, axis=0)  # one image, T slots
            all_patches.append(patchify(frames, patch, merge, temporal))
            grids.append([1, image.shape[-2] // patch, image.shape[-1] // patch])
        data = {"pixel_values": np.concatenate(all_patches), "image_grid_thw": np.array(grids, dtype=np.int64)}
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = ["HfMmQwen2_5_VLImageProcessor", "map_box", "patchify", "smart_resize"]
