"""HfMmQwen2_5_VLImageProcessor: equal to transformers' Qwen2-VL image processor, smart_resize's contract, block-major
patches, and boxes mapped between original and processed pixels."""

import numpy as np
import PIL.Image
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as reference_smart_resize

from hf_mm.modeling.compat import AutoImageProcessor  # `transformers.AutoImageProcessor` needs torchvision on 5.16
from hf_mm.processing.image_processing_qwen2_5_vl import (
    HfMmQwen2_5_VLImageProcessor,
    map_box,
    patchify,
    smart_resize,
)

SIZES = [(100, 60), (300, 500), (30, 30), (57, 211), (1200, 1600)]


def images(sizes=SIZES, mode="RGB"):
    rng = np.random.default_rng(0)
    return [PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode) for h, w in sizes]


def test_outputs_equal_the_reference_image_processor():
    expected = Qwen2VLImageProcessorPil()(images=images(), return_tensors="np")
    got = HfMmQwen2_5_VLImageProcessor()(images=images(), return_tensors="np")
    np.testing.assert_array_equal(got["image_grid_thw"], expected["image_grid_thw"])
    np.testing.assert_array_equal(got["pixel_values"], expected["pixel_values"])
    assert got["pixel_values"].shape[1] == 3 * 2 * 14 * 14


def test_min_and_max_pixels_follow_the_size_setting():
    processor = HfMmQwen2_5_VLImageProcessor(size={"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 16})
    grids = processor(images=images([(30, 30), (1200, 1600)]), return_tensors="np")["image_grid_thw"]
    areas = [int(h * w) * 14 * 14 for _, h, w in grids]
    assert areas[0] >= 28 * 28 * 4 and areas[1] <= 28 * 28 * 16


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000))
def test_smart_resize_contract(height, width):
    if max(height, width) / min(height, width) > 200:
        with pytest.raises(ValueError, match=f"{height}x{width} pixels has aspect ratio"):
            smart_resize(height, width)
        return
    new_h, new_w = smart_resize(height, width)
    assert new_h % 28 == 0 and new_w % 28 == 0 and new_h >= 28 and new_w >= 28
    assert new_h * new_w <= 28 * 28 * 1280 or min(new_h, new_w) == 28
    assert new_h * new_w >= 56 * 56
    assert new_h == new_w or (new_h > new_w) == (height > width)  # the orientation is kept
    assert (new_h, new_w) == reference_smart_resize(height, width)


def test_patches_are_block_major_and_fill_both_temporal_slots():
    image = np.arange(1 * 3 * 4 * 4, dtype=np.float32).reshape(1, 3, 4, 4)  # one frame, 4x4 px, patch 1
    patches = patchify(np.repeat(image, 2, axis=0), patch=1, merge=2, temporal=2)  # (16, 3 * 2)
    first_block = [(r, c) for r in (0, 1) for c in (0, 1)]  # rows 0-3: the top-left 2x2 block, row-major inside
    for row, (r, c) in enumerate(first_block):
        np.testing.assert_array_equal(patches[row], np.repeat(image[0, :, r, c], 2))
    np.testing.assert_array_equal(patches[4], np.repeat(image[0, :, 0, 2], 2))  # then the next block to the right


def test_map_box_goes_both_ways():
    original, processed = (480, 640), smart_resize(480, 640)
    box = [100, 50, 300, 200]
    there = map_box(box, original, processed)
    assert there[2] == pytest.approx(300 * processed[1] / 640)
    assert map_box(there, processed, original) == pytest.approx(box)


def test_saved_processor_reloads_through_auto_image_processor(tmp_path):
    processor = HfMmQwen2_5_VLImageProcessor(size={"shortest_edge": 3136, "longest_edge": 200_000})
    processor.save_pretrained(tmp_path)
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is HfMmQwen2_5_VLImageProcessor and reloaded.size["longest_edge"] == 200_000


def test_grayscale_and_rgba_images_are_converted():
    got = HfMmQwen2_5_VLImageProcessor()(images=images([(60, 60)], "L") + images([(60, 60)], "RGBA"))
    assert got["pixel_values"].shape == (2 * 4 * 4, 1176)


def clip(frames: int, height: int = 120, width: int = 160) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def test_video_is_sampled_at_the_target_fps_and_placed_in_absolute_time():
    out = HfMmQwen2_5_VLImageProcessor().process_video(clip(90), fps=30)  # 3 s at 30 fps -> 6 frames at 2 fps
    t, h, w = out["video_grid_thw"][0]
    assert t == 3 and out["pixel_values_videos"].shape == (t * h * w, 1176)
    assert out["second_per_grid_ts"][0] == pytest.approx(1.0)  # 2 frames per temporal patch at 2 fps


def test_video_token_budget_lowers_the_resolution_not_the_frames():
    processor = HfMmQwen2_5_VLImageProcessor()
    processor.max_video_tokens = 200
    out = processor.process_video(clip(300, 480, 640), fps=30)  # 10 s -> 20 frames -> 10 temporal patches
    t, h, w = out["video_grid_thw"][0]
    assert t == 10 and t * h * w // 4 <= 200


def test_a_static_video_patches_like_its_frame_and_odd_frame_counts_are_padded():
    processor = HfMmQwen2_5_VLImageProcessor()
    frame = clip(1)[0]
    out = processor.process_video(np.stack([frame] * 3), fps=1)  # 3 frames, all kept -> padded to 4
    t, h, w = out["video_grid_thw"][0]
    assert t == 2
    resized = PIL.Image.fromarray(frame).resize((int(w) * 14, int(h) * 14), PIL.Image.Resampling.BICUBIC)
    image = processor(images=[resized], do_resize=False, return_tensors="np")
    assert tuple(image["image_grid_thw"][0]) == (1, h, w)
    np.testing.assert_allclose(out["pixel_values_videos"][: h * w], image["pixel_values"], atol=1e-6)


@pytest.mark.parametrize(
    "video, fps, message", [(np.zeros((4, 8, 8)), 2, "must be"), (np.zeros((4, 56, 56, 3)), 0, "fps=0")]
)
def test_bad_videos_are_named(video, fps, message):
    with pytest.raises(ValueError, match=message):
        HfMmQwen2_5_VLImageProcessor().process_video(video, fps=fps)
