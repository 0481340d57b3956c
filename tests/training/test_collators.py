import logging

import pytest
import torch

from hf_mm.testing import random_images, tiny_llava_config, tiny_llava_processor
from hf_mm.training.collators import IGNORE_INDEX, VisionSFTCollator, expand_over_placeholders

CONFIG = tiny_llava_config()
PROCESSOR = tiny_llava_processor(CONFIG)
IMAGES = random_images(3)
TOKENS_PER_IMAGE = 16  # 32px / 8px patches -> 4x4 grid, CLS dropped


def text(content: str) -> dict:
    return {"type": "text", "text": content}


TWO_IMAGE_CHAT = {
    "images": IMAGES[:2],
    "messages": [
        {"role": "system", "content": [text("be brief")]},
        {"role": "user", "content": [{"type": "image"}, text("what is left?")]},
        {"role": "assistant", "content": [text("red")]},
        {"role": "user", "content": [text("and this one?"), {"type": "image"}]},
        {"role": "assistant", "content": [text("blue square")]},
    ],
}


def labelled_text(batch, row: int) -> str:
    labels = batch["labels"][row]
    return PROCESSOR.tokenizer.decode(labels[labels != IGNORE_INDEX])


def test_multi_turn_two_image_labels_cover_exactly_the_assistant_turns():
    batch = VisionSFTCollator(PROCESSOR)([TWO_IMAGE_CHAT])
    assert labelled_text(batch, 0) == "red<|im_end|>blue square<|im_end|>"
    image_positions = batch["input_ids"][0] == PROCESSOR.image_token_id
    assert int(image_positions.sum()) == 2 * TOKENS_PER_IMAGE
    assert (batch["labels"][0][image_positions] == IGNORE_INDEX).all()
    # Every label is either ignored or equal to its input id (no shift in the collator; the model shifts).
    kept = batch["labels"][0] != IGNORE_INDEX
    assert torch.equal(batch["labels"][0][kept], batch["input_ids"][0][kept])
    assert batch["pixel_values"].shape == (2, 3, 32, 32)


def test_string_content_puts_images_before_the_first_user_text():
    sample = {
        "images": IMAGES[:1],
        "messages": [{"role": "user", "content": "colour?"}, {"role": "assistant", "content": "green"}],
    }
    batch = VisionSFTCollator(PROCESSOR)([sample])
    rendered = PROCESSOR.tokenizer.decode(batch["input_ids"][0])
    assert rendered.index("<image>") < rendered.index("colour?")
    assert labelled_text(batch, 0) == "green<|im_end|>"


@pytest.mark.parametrize("conversational", [True, False])
def test_prompt_completion_loss_is_on_the_completion_only(conversational):
    if conversational:
        prompt = [{"role": "user", "content": "what colour?"}]
        completion = [{"role": "assistant", "content": "green"}]
        expected = "green<|im_end|>\n"
    else:
        prompt, completion, expected = "<image>what colour? ", "green", "green<|endoftext|>"
    batch = VisionSFTCollator(PROCESSOR)([{"images": IMAGES[:1], "prompt": prompt, "completion": completion}])
    assert labelled_text(batch, 0) == expected
    assert int((batch["input_ids"][0] == PROCESSOR.image_token_id).sum()) == TOKENS_PER_IMAGE


def test_padding_and_mixed_text_only_samples():
    text_only = {
        "images": [],
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}],
    }
    batch = VisionSFTCollator(PROCESSOR)([TWO_IMAGE_CHAT, text_only])
    lengths = batch["attention_mask"].sum(1)
    assert lengths[0] > lengths[1] and batch["input_ids"].shape[1] == lengths[0]
    padded = batch["attention_mask"][1] == 0
    assert (batch["input_ids"][1][padded] == PROCESSOR.tokenizer.pad_token_id).all()
    assert (batch["labels"][1][padded] == IGNORE_INDEX).all()
    assert labelled_text(batch, 1) == "yes<|im_end|>"
    assert batch["pixel_values"].shape[0] == 2  # only the first sample's images


def test_overlong_samples_are_dropped_and_counted_never_truncated(caplog):
    short = {
        "images": IMAGES[2:],
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    }
    collator = VisionSFTCollator(PROCESSOR, max_length=40)
    with caplog.at_level(logging.WARNING):
        batch = collator([TWO_IMAGE_CHAT, short])
    assert collator.dropped == 1
    assert "1 over-long samples dropped" in caplog.text and "32 image placeholders" in caplog.text
    assert batch["input_ids"].shape[0] == 1 and batch["pixel_values"].shape[0] == 1
    assert int((batch["input_ids"] == PROCESSOR.image_token_id).sum()) == TOKENS_PER_IMAGE


def test_strict_mode_raises_naming_the_sample():
    collator = VisionSFTCollator(PROCESSOR, max_length=40, overlong="error")
    with pytest.raises(ValueError, match=r"Sample 0 .* max_length=40"):
        collator([TWO_IMAGE_CHAT])
    with pytest.raises(ValueError, match="overlong='truncate'"):
        VisionSFTCollator(PROCESSOR, overlong="truncate")


def test_a_template_without_generation_markers_is_refused():
    plain = PROCESSOR.chat_template.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", "")
    processor = tiny_llava_processor(CONFIG)
    processor.chat_template = plain
    with pytest.raises(ValueError, match="generation"):
        VisionSFTCollator(processor)([TWO_IMAGE_CHAT])


def test_unknown_sample_format_is_refused():
    with pytest.raises(ValueError, match="expected 'messages'"):
        VisionSFTCollator(PROCESSOR)([{"images": [], "text": "hello"}])


def test_assistant_mask_is_carried_across_placeholder_runs_and_insertions():
    """The mask found on the unexpanded rendering lands on the same tokens after each placeholder (9) becomes a run,
    and after a processor inserts a run where the text had none (BLIP-2's query tokens)."""
    short_ids, short_mask = [1, 9, 2, 3, 9, 4, 5], [0, 0, 0, 1, 0, 0, 1]
    long_ids = [9, 9, 1, 9, 9, 9, 2, 3, 9, 4, 5]
    got = expand_over_placeholders(short_ids, short_mask, long_ids, {9})
    assert got.tolist() == [False, False, False, False, False, False, False, True, False, False, True]
    with pytest.raises(ValueError, match="differ from its tokenizer's rendering"):
        expand_over_placeholders(short_ids, short_mask, [1, 9, 2, 7, 9, 4, 5], {9})
