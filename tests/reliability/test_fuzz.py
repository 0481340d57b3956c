"""Property-based fuzzing (hypothesis) of the processors and the SFT and packing collators.

Each outcome must be valid tensors that satisfy the invariants, or a documented ValueError / TypeError:
- processors: `<image>` placeholder tokens == images x tokens per image; a count mismatch is a ValueError;
  truncation that would cut an image run is a ValueError naming the sample;
- SFT collator: labels are -100 outside assistant turns and on every image placeholder, labelled tokens equal the
  input ids, and no image run is cut (over-long samples are dropped and counted, never truncated);
- packing collator: the same, plus rows no wider than `max_length` and one position restart per kept sample;
- DPO collator: over-long pairs dropped whole (chosen and rejected together), image tokens never scored;
- Qwen2.5-VL processor: each image run expands to its grid, or a ValueError (count mismatch, aspect ratio);
- CLIP processor: one row per caption (within `max_length`) and one image per `pixel_values` entry.

CI runs `HF_MM_FUZZ_EXAMPLES` examples per target (25 by default); `make fuzz` runs 10,000.
"""

import os

import numpy as np
import PIL.Image
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_mm import testing as T
from hf_mm.training.collators import IGNORE_INDEX, VisionSFTCollator
from hf_mm.training.dpo import VisionPreferenceCollator
from hf_mm.training.packing import VisionPackingCollator

EXAMPLES = int(os.environ.get("HF_MM_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

LLAVA = T.tiny_llava_config()
PROCESSORS = {
    "llava": T.tiny_llava_processor(LLAVA),
    "blip2": T.tiny_blip2_processor(T.tiny_blip2_config()),
    "flamingo": T.tiny_flamingo_processor(),
}
MODES = ("RGB", "L", "RGBA", "P", "CMYK", "I;16", "1")

text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="<>|"), max_size=40)


@st.composite
def images(draw, max_count=3):
    count = draw(st.integers(0, max_count))
    made = []
    for _ in range(count):
        width, height = draw(st.integers(1, 90)), draw(st.integers(1, 90))
        pixels = np.random.default_rng(draw(st.integers(0, 999))).integers(0, 255, (height, width, 3), dtype=np.uint8)
        image = PIL.Image.fromarray(pixels)
        mode = draw(st.sampled_from(MODES))
        made.append(image.convert("I;16") if mode == "I;16" else image.convert(mode))
    return made


def _tokens_per_image(name: str, processor) -> int:
    if name == "flamingo":
        return 1
    if name == "blip2":
        return processor.num_query_tokens
    return processor.num_image_tokens(T.IMAGE_SIZE, T.IMAGE_SIZE)


@pytest.mark.parametrize("name", sorted(PROCESSORS))
@FUZZ
@given(pieces=st.lists(text, min_size=1, max_size=4), picture=images(), placeholders=st.integers(0, 3),
       max_length=st.one_of(st.none(), st.integers(4, 120)))  # fmt: skip
def test_processor_outputs_keep_every_image_run_or_refuse(name, pieces, picture, placeholders, max_length):
    processor = PROCESSORS[name]
    token = processor.image_token
    prompt = pieces[0] + "".join(token + piece for piece in (pieces[1:] + [""] * placeholders)[:placeholders])
    truncation = {"truncation": True, "max_length": max_length} if max_length else {}
    try:
        out = processor(images=[picture] if picture else None, text=[prompt], return_tensors="pt", **truncation)
    except (ValueError, TypeError) as error:
        message = str(error)
        assert placeholders != len(picture) or "truncation would cut" in message or "Sample 0" in message, message
        return
    assert placeholders == len(picture)
    ids = out["input_ids"][0].tolist()
    image_id = processor.tokenizer.convert_tokens_to_ids(token)
    assert ids.count(image_id) == len(picture) * _tokens_per_image(name, processor)
    if picture:
        assert out["pixel_values"].shape[0] == len(picture) and np.isfinite(out["pixel_values"].numpy()).all()


@st.composite
def conversations(draw):
    turns, pictures = [], []
    for _ in range(draw(st.integers(1, 3))):
        shown = draw(images(max_count=2))
        pictures += shown
        content = [{"type": "image"} for _ in shown] + [{"type": "text", "text": draw(text)}]
        turns.append({"role": "user", "content": content})
        turns.append({"role": "assistant", "content": [{"type": "text", "text": draw(text) or "ok"}]})
    return {"images": pictures, "messages": turns}


def _roles(ids: list[int], tokenizer) -> list[str]:
    """The chat role every position belongs to, read from the `<|im_start|>role` headers."""
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    roles, role = [], "none"
    for index, token in enumerate(ids):
        if token == start:
            role = tokenizer.decode(ids[index + 1 : index + 16]).split("\n")[0].strip()
        roles.append(role)
    return roles


def _collate(collator, samples):
    """The batch, or None when every sample was over-long (the one refusal a collator may answer with)."""
    try:
        return collator(samples)
    except ValueError as error:
        assert "longer than max_length" in str(error), str(error)
        return None


def _check_labels(batch, tokenizer, image_id: int) -> None:
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        for position, (token, label, role) in enumerate(zip(ids, labels, _roles(ids, tokenizer))):
            if label != IGNORE_INDEX:
                assert label == token and role.startswith("assistant") and token != image_id, position


@FUZZ
@given(
    samples=st.lists(conversations(), min_size=1, max_size=4), max_length=st.one_of(st.none(), st.integers(16, 400))
)
def test_sft_collator_labels_only_assistant_tokens_and_never_cuts_an_image(samples, max_length):
    processor = PROCESSORS["llava"]
    collator = VisionSFTCollator(processor, max_length=max_length)
    per_image = _tokens_per_image("llava", processor)
    if (batch := _collate(collator, samples)) is None:
        return
    kept = len(samples) - collator.dropped
    assert batch["input_ids"].shape[0] == kept
    _check_labels(batch, processor.tokenizer, LLAVA.image_token_id)
    placeholders = int((batch["input_ids"] == LLAVA.image_token_id).sum())
    pictures = batch["pixel_values"].shape[0] if "pixel_values" in batch else 0
    assert placeholders == pictures * per_image  # every kept image has its whole run


@FUZZ
@given(
    samples=st.lists(conversations(), min_size=1, max_size=5), max_length=st.one_of(st.none(), st.integers(64, 600))
)
def test_packing_collator_keeps_samples_apart(samples, max_length):
    processor = PROCESSORS["llava"]
    collator = VisionPackingCollator(processor, max_length=max_length)
    if (batch := _collate(collator, samples)) is None:
        return
    kept = len(samples) - collator.dropped
    assert int((batch["position_ids"][:, :] == 0).sum()) >= kept  # one restart per sample (+ row padding)
    if max_length is not None:
        assert batch["input_ids"].shape[1] <= max_length
    starts = batch["position_ids"] == 0
    assert (batch["labels"][starts] == IGNORE_INDEX).all()  # no sample learns the next one's first token
    _check_labels(batch, processor.tokenizer, LLAVA.image_token_id)
    images_kept = int((batch["input_ids"] == LLAVA.image_token_id).sum()) // _tokens_per_image("llava", processor)
    assert images_kept == (batch["pixel_values"].shape[0] if "pixel_values" in batch else 0)


@st.composite
def preference_pairs(draw):
    shown = draw(images(max_count=2))
    prompt = [{"role": "user", "content": [{"type": "image"} for _ in shown] + [{"type": "text", "text": draw(text)}]}]
    answer = lambda: [{"role": "assistant", "content": [{"type": "text", "text": draw(text) or "ok"}]}]  # noqa: E731
    return {"images": shown, "prompt": prompt, "chosen": answer(), "rejected": answer()}


@FUZZ
@given(
    pairs=st.lists(preference_pairs(), min_size=1, max_size=3), max_length=st.one_of(st.none(), st.integers(16, 300))
)
def test_dpo_collator_drops_overlong_pairs_whole_and_never_scores_image_tokens(pairs, max_length):
    processor = PROCESSORS["llava"]
    collator = VisionPreferenceCollator(processor, max_length=max_length)
    if (batch := _collate(collator, pairs)) is None:
        return
    kept = len(pairs) - collator.dropped
    assert batch["input_ids"].shape[0] == 2 * kept  # chosen and rejected rows of every kept pair
    image_positions = batch["input_ids"] == LLAVA.image_token_id
    assert not batch["completion_mask"].bool()[image_positions].any()
    per_image = _tokens_per_image("llava", processor)
    shown = sum(len(pair["images"]) for pair in pairs)
    assert int(image_positions.sum()) % per_image == 0 and int(image_positions.sum()) <= 2 * shown * per_image


QWEN = None


def _qwen():
    global QWEN
    if QWEN is None:
        import tempfile
        from pathlib import Path

        from hf_mm.processing import HfMmQwen2_5_VLProcessor

        QWEN = HfMmQwen2_5_VLProcessor.from_vision_text_pretrained(
            None, T.save_tiny_causal_lm(Path(tempfile.mkdtemp()) / "lm", "qwen2")
        )
    return QWEN


@FUZZ
@given(pieces=st.lists(text, min_size=1, max_size=3), picture=images(max_count=2), placeholders=st.integers(0, 2))
def test_qwen_processor_expands_each_image_to_its_grid_or_refuses(pieces, picture, placeholders):
    processor = _qwen()
    run = "<|vision_start|><|image_pad|><|vision_end|>"
    prompt = pieces[0] + "".join(run + piece for piece in (pieces[1:] + [""] * placeholders)[:placeholders])
    try:
        out = processor(images=picture or None, text=[prompt], return_tensors="pt")
    except ValueError as error:
        message = str(error)
        assert placeholders != len(picture) or "aspect ratio" in message, message
        return
    assert placeholders == len(picture)
    pads = int((out["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    grids = out["image_grid_thw"].prod(-1).sum().item() if picture else 0
    assert pads == grids // processor.image_processor.merge_size**2


CLIP = None


def _clip():
    global CLIP
    if CLIP is None:
        from hf_mm import HfMmClipProcessor

        CLIP = HfMmClipProcessor(image_processor=T.tiny_image_processor("clip"), tokenizer=T.tiny_tokenizer())
    return CLIP


@FUZZ
@given(
    captions=st.lists(text, max_size=4),
    picture=images(max_count=3),
    max_length=st.one_of(st.none(), st.integers(1, 64)),
)
def test_clip_processor_returns_one_row_per_caption_and_image(captions, picture, max_length):
    processor = _clip()
    truncation = {"truncation": True, "max_length": max_length} if max_length else {}
    try:
        out = processor(images=picture or None, text=captions or None, padding=True, return_tensors="pt", **truncation)
    except ValueError as error:
        assert not captions and not picture, str(error)  # nothing to process is the one refusal
        return
    if captions:
        assert out["input_ids"].shape[0] == len(captions)
        assert max_length is None or out["input_ids"].shape[1] <= max_length
    if picture:
        assert out["pixel_values"].shape[0] == len(picture) and np.isfinite(out["pixel_values"].numpy()).all()
