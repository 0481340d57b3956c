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
- Video (`process_video`): frames are sampled at `target_fps` (the paper's dynamic FPS, 2 by default) within
  [min_frames, max_frames], padded to a multiple of 2 by repeating the last frame, and all resized to one size
  whose total token count stays under `max_video_tokens` (the resolution drops, never the frames).
  `second_per_grid_ts` (seconds per temporal patch) lets M-RoPE place the frames in absolute time.
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


def sample_frame_indices(
    num_frames: int, fps: float, target_fps: float, min_frames: int, max_frames: int, temporal: int
):
    """Indices of the frames to keep: `target_fps` over the clip's duration, clamped to [min, max] and rounded to a
    multiple of `temporal`; a clip shorter than that keeps every frame (padding then fills the last patch)."""
    wanted = round(num_frames / fps * target_fps)
    count = min(max(wanted, min_frames), max_frames, num_frames)
    if count < num_frames:  # sampling: a whole number of temporal patches
        count = max(temporal, count // temporal * temporal)
    return np.linspace(0, num_frames - 1, count).round().astype(int)


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
    video_target_fps = 2.0
    video_min_frames = 4
    video_max_frames = 768
    video_min_pixels = 128 * 28 * 28
    max_video_tokens = 16384
    valid_kwargs = HfMmQwen2_5_VLImageProcessorKwargs
    model_input_names = ["pixel_values", "image_grid_thw"]

    def resized_size(self, height: int, width: int, size: SizeDict | None = None) -> tuple[int, int]:
        """The processed (height, width) of an image of `height` x `width` pixels."""
        size = size or (self.size if isinstance(self.size, SizeDict) else SizeDict(**self.size))
        factor = self.patch_size * self.merge_size
        return smart_resize(height, width, factor, size.shortest_edge, size.longest_edge, self.max_aspect_ratio)

    def _preprocess(self, images: list[np.ndarray], do_resize: bool, size: SizeDict, resample, do_rescale: bool,
                    rescale_factor: float, do_normalize: bool, image_mean, image_std, return_tensors=None,
                    **kwargs) -> BatchFeature:  # fmt: skip
        patch, merge, temporal = self.patch_size, self.merge_size, self.temporal_patch_size
        all_patches, grids = [], []
        for index, image in enumerate(images):  # (C, H, W), channel-first
            if do_resize:
                try:
                    height, width = self.resized_size(*image.shape[-2:], size)
                except ValueError as error:
                    raise ValueError(f"images[{index}]: {error}") from None
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

    def process_video(self, video, fps: float, return_tensors=None) -> BatchFeature:
        """A video as a list of frames (PIL / HWC arrays) or a (T, H, W, C) uint8 array, recorded at `fps`.

        Returns `pixel_values_videos` (N, 3 * 2 * 14 * 14), `video_grid_thw` (1, 3) and `second_per_grid_ts` (1,).
        """
        frames = np.stack(
            [np.asarray(frame.convert("RGB") if hasattr(frame, "convert") else frame) for frame in video]
        )
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"A video must be (T, H, W, 3) frames; got an array of shape {frames.shape}.")
        if fps <= 0:
            raise ValueError(f"fps={fps} must be positive: the frame rate the video was recorded at.")
        temporal, factor = self.temporal_patch_size, self.patch_size * self.merge_size
        keep = sample_frame_indices(len(frames), fps, self.video_target_fps, self.video_min_frames,
                                    self.video_max_frames, temporal)  # fmt: skip
        frames = frames[keep]
        if len(frames) % temporal:  # repeat the last frame to fill the final temporal patch
            frames = np.concatenate([frames, np.repeat(frames[-1:], temporal - len(frames) % temporal, axis=0)])
        budget = self.max_video_tokens * factor * factor * temporal // len(frames)  # pixels per frame
        height, width = smart_resize(*frames.shape[1:3], factor, min(self.video_min_pixels, budget), budget,
                                     self.max_aspect_ratio)  # fmt: skip
        size = SizeDict(height=height, width=width)
        processed = []
        for frame in frames:
            frame = self.resize(frame.transpose(2, 0, 1), size, resample=self.resample)
            frame = self.normalize(self.rescale(frame, self.rescale_factor), self.image_mean, self.image_std)
            processed.append(np.asarray(frame, dtype=np.float32))
        grid = [len(frames) // temporal, height // self.patch_size, width // self.patch_size]
        sampled_fps = fps * len(keep) / len(video)
        data = {
            "pixel_values_videos": patchify(np.stack(processed), self.patch_size, self.merge_size, temporal),
            "video_grid_thw": np.array([grid], dtype=np.int64),
            "second_per_grid_ts": np.array([temporal / sampled_fps], dtype=np.float32),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = ["HfMmQwen2_5_VLImageProcessor", "map_box", "patchify", "sample_frame_indices", "smart_resize"]
