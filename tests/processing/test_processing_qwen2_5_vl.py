"""HfMmQwen2_5_VLProcessor: vision runs expanded from the grids, token types for M-RoPE, never-cut runs, round trip."""

import numpy as np
import PIL.Image
import pytest
import torch

from hf_mm.modeling.qwen2_5_vl.mrope import mrope_position_ids
from hf_mm.processing.image_processing_qwen2_5_vl import HfMmQwen2_5_VLImageProcessor
from hf_mm.processing.processing_qwen2_5_vl import HfMmQwen2_5_VLProcessor, prepare_qwen_tokenizer
from hf_mm.testing import tiny_tokenizer


def processor() -> HfMmQwen2_5_VLProcessor:
    images = HfMmQwen2_5_VLImageProcessor(size={"shortest_edge": 3136, "longest_edge": 50_000})
    return HfMmQwen2_5_VLProcessor(image_processor=images, tokenizer=prepare_qwen_tokenizer(tiny_tokenizer()))


def chat(*parts) -> list[dict]:
    content = [{"type": p} if p in ("image", "video") else {"type": "text", "text": p} for p in parts]
    return [{"role": "user", "content": content}]


IMAGES = [PIL.Image.new("RGB", (100, 60), "red"), PIL.Image.new("RGB", (200, 200), "blue")]
VIDEO = np.zeros((8, 56, 84, 3), dtype=np.uint8)


def test_two_images_of_different_sizes_and_a_video_expand_to_their_grids():
    p = processor()
    text = p.apply_chat_template(chat("image", "left", "image", "right", "video"), add_generation_prompt=True)
    out = p(images=IMAGES, videos=[VIDEO], fps=4, text=[text], return_tensors="pt")
    image_tokens = [int(g.prod()) // 4 for g in out["image_grid_thw"]]
    video_tokens = int(out["video_grid_thw"][0].prod()) // 4
    assert image_tokens[0] != image_tokens[1]
    ids, types = out["input_ids"][0], out["mm_token_type_ids"][0]
    assert int((ids == p.image_token_id).sum()) == sum(image_tokens) == int((types == 1).sum())
    assert int((ids == p.video_token_id).sum()) == video_tokens == int((types == 2).sum())
    # Every run sits between vision start and end tokens, so M-RoPE sees one run per grid.
    position_ids, _ = mrope_position_ids(
        out["mm_token_type_ids"], out["image_grid_thw"], out["video_grid_thw"], out["second_per_grid_ts"]
    )
    assert position_ids.shape == (3, 1, ids.shape[0])


def test_batch_padding_keeps_token_types_zero_on_pads():
    p = processor()
    texts = [p.apply_chat_template(chat("image", "a long question here"), add_generation_prompt=True),
             p.apply_chat_template(chat("image", "hi"), add_generation_prompt=True)]  # fmt: skip
    out = p(images=IMAGES, text=texts, padding=True, return_tensors="pt")
    pads = out["attention_mask"] == 0
    assert pads.any() and (out["mm_token_type_ids"][pads] == 0).all()


def test_truncation_that_would_cut_a_vision_run_is_refused():
    p = processor()
    text = p.apply_chat_template(chat("image", "what?"), add_generation_prompt=True)
    with pytest.raises(ValueError, match=r"Sample 0: truncation would cut its vision placeholders"):
        p(images=IMAGES[:1], text=[text], truncation=True, max_length=5)


def test_placeholder_and_input_counts_must_agree():
    p = processor()
    one = p.apply_chat_template(chat("image", "x"), add_generation_prompt=True)
    with pytest.raises(ValueError, match="More inputs than <\\|image_pad\\|>"):
        p(images=IMAGES, text=[one])
    with pytest.raises(ValueError, match="Sample 0 has more <\\|image_pad\\|> placeholders"):
        p(images=IMAGES[:1], text=[one + one])
    with pytest.raises(TypeError, match=r"images\[0\] is a str"):
        p(images=["cat.png"], text=[one])


def test_round_trip_keeps_template_and_sizes(tmp_path):
    p = processor()
    p.save_pretrained(tmp_path)
    reloaded = HfMmQwen2_5_VLProcessor.from_pretrained(tmp_path)
    text = p.apply_chat_template(chat("image", "x"), add_generation_prompt=True)
    a = p(images=IMAGES[:1], text=[text], return_tensors="pt")
    b = reloaded(images=IMAGES[:1], text=[text], return_tensors="pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
