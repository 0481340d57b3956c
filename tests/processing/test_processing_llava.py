import numpy as np
import pytest
import torch

import hf_mm
from hf_mm import HfMmLlavaProcessor
from hf_mm import testing as T
from hf_mm.processing import prepare_tokenizer


def processor_for(bridge="mlp2x_gelu", vision="clip", **kwargs):
    config = T.tiny_llava_config(vision, "llama", bridge, **kwargs)
    return config, T.tiny_llava_processor(config, vision)


@pytest.mark.parametrize(
    "bridge, strategy, expected",
    [
        ("linear", "default", 16),
        ("mlp2x_gelu", "full", 17),
        ("pixel_shuffle", "default", 4),
        ("perceiver", "full", 8),
        ("qwen_adapter", "default", 9),
    ],  # fmt: skip
)
def test_expands_each_image_to_the_bridge_token_count(bridge, strategy, expected):
    config, processor = processor_for(bridge, vision_feature_select_strategy=strategy)
    inputs = processor(images=T.random_images(3), text=["a <image> b <image>", "<image> c"], padding=True)
    counts = [ids.count(config.image_token_id) for ids in inputs["input_ids"]]
    assert counts == [2 * expected, expected]
    assert np.asarray(inputs["pixel_values"]).shape == (3, 3, T.IMAGE_SIZE, T.IMAGE_SIZE)


def test_perceiver_bridge_emits_a_fixed_count_whatever_the_image_size(tmp_path):
    """BLIP-3's prefix bridge: num_latents tokens per image, for any number of vision tokens in."""
    bridge = hf_mm.modeling.get_bridge("perceiver")(8, 16, num_latents=5, depth=1, heads=2, head_dim=4)
    for tokens in (4, 17, 64):
        assert bridge(torch.randn(2, tokens, 8)).shape == (2, 5, 16)
    config, processor = processor_for("perceiver", perceiver_num_latents=6)
    assert config.tokens_per_image(16, 32) == 6 and processor.num_image_tokens(224, 448) == 6
    processor.save_pretrained(tmp_path)
    reloaded = HfMmLlavaProcessor.from_pretrained(tmp_path)
    inputs = reloaded(images=T.random_images(1), text="<image> what?")
    assert inputs["input_ids"][0].count(config.image_token_id) == 6


def test_batches_pad_on_the_tokenizer_side():
    _, processor = processor_for()
    processor.tokenizer.padding_side = "left"
    inputs = processor(images=T.random_images(2), text=["<image> a long question here", "<image>"], padding=True)
    mask = inputs["attention_mask"]
    assert len(mask[0]) == len(mask[1]) and mask[1][0] == 0 and mask[1][-1] == 1


@pytest.mark.parametrize("n_images", [1, 0, 3])
def test_placeholder_and_image_counts_must_agree(n_images):
    _, processor = processor_for()
    images = T.random_images(n_images) if n_images else None
    with pytest.raises(ValueError, match=f"holds 2 '<image>' placeholders but {n_images} images were given"):
        processor(images=images, text="<image> and <image>")


@pytest.mark.parametrize("bad", ["cat.png", 3, {"pixels": 1}])
def test_wrong_image_type_is_a_type_error_naming_the_index(bad):
    _, processor = processor_for()
    with pytest.raises(TypeError, match=rf"images\[1\] is a {type(bad).__name__}; expected a PIL.Image.Image"):
        processor(images=[T.random_images(1)[0], bad], text="<image><image>")


def test_truncation_never_cuts_an_image_run_and_names_the_sample():
    _, processor = processor_for()
    texts = ["short <image>", "a much longer question that pushes its image far to the right <image>"]
    ok = processor(images=T.random_images(1), text=texts[:1], truncation=True, max_length=64)
    assert len(ok["input_ids"][0]) <= 64
    with pytest.raises(ValueError, match=r"Sample 1: truncation would cut its image placeholders \(\d+ of 16"):
        processor(images=T.random_images(2), text=texts, truncation=True, max_length=40)


def test_chat_template_renders_images_and_marks_only_assistant_tokens():
    _, processor = processor_for()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "compare"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "left is red"}]},
        {"role": "user", "content": [{"type": "text", "text": "and now?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "right is blue"}]},
    ]
    text = processor.apply_chat_template(messages)
    assert text.count("<image>") == 2 and text.startswith("<|im_start|>user\n<image><image>compare")
    rendered = processor.tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = rendered["input_ids"], rendered["assistant_masks"]
    assistant_text = processor.tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert assistant_text == "left is red<|im_end|>right is blue<|im_end|>"


def test_save_and_load_keep_template_and_counts(tmp_path):
    config, processor = processor_for("pixel_shuffle")
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "chat_template.jinja").exists()
    loaded = HfMmLlavaProcessor.from_pretrained(tmp_path)
    assert loaded.chat_template == processor.chat_template
    assert (loaded.patch_size, loaded.bridge_type, loaded.image_token_id) == (
        8,
        "pixel_shuffle",
        config.image_token_id,
    )
    assert loaded.bridge_settings == config.bridge_settings() and loaded.bridge_settings["factor"] == 2
    text = ["<image> hi"]
    images = T.random_images(1)
    assert loaded(images=images, text=text)["input_ids"] == processor(images=images, text=text)["input_ids"]


def test_prepare_tokenizer_adds_tokens_once_and_keeps_an_existing_template():
    tokenizer = prepare_tokenizer(T.tiny_tokenizer())
    size = len(tokenizer)
    assert {"<image>", "<|im_start|>", "<|im_end|>"} <= set(tokenizer.get_vocab())
    assert len(prepare_tokenizer(tokenizer)) == size
    custom = T.tiny_tokenizer()
    custom.chat_template = "{{ messages[0]['content'] }}"
    assert prepare_tokenizer(custom).chat_template == "{{ messages[0]['content'] }}"
    assert "<|im_start|>" not in custom.get_vocab()


def test_processor_requires_the_image_token():
    with pytest.raises(ValueError, match="The tokenizer has no '<image>' token"):
        HfMmLlavaProcessor(image_processor=T.tiny_image_processor("clip"), tokenizer=T.tiny_tokenizer())


def test_tensor_and_array_images_are_accepted():
    _, processor = processor_for()
    array = np.zeros((32, 32, 3), dtype=np.uint8)
    tensor = torch.zeros(3, 32, 32, dtype=torch.uint8)
    inputs = processor(images=[array, tensor], text="<image><image>", return_tensors="pt")
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)


def test_qwen_adapter_reads_positions_and_emits_its_query_count():
    from hf_mm.modeling.bridges import sincos_2d

    torch.manual_seed(0)
    bridge = hf_mm.modeling.get_bridge("qwen_adapter")(8, 16, num_queries=4, heads=2)
    for side in (2, 4, 7):  # any patch grid in, 4 tokens out
        assert bridge(torch.randn(2, side * side, 8), grid_size=(side, side)).shape == (2, 4, 16)
    features = torch.randn(1, 16, 8)
    shuffled = features[:, torch.randperm(16)]
    # Cross-attention alone is blind to the patches' order; the 2D positions added to the keys are not.
    assert not torch.allclose(bridge(features, (4, 4)), bridge(shuffled, (4, 4)), atol=1e-5)
    assert bridge(torch.randn(1, 17, 8), (4, 4)).shape == (1, 4, 16)  # a CLS token first gets no position
    pos = sincos_2d(8, 3, 5)  # rows in the first half of the channels, columns in the second
    assert pos.shape == (15, 8) and torch.equal(pos[0, :4], pos[4, :4]) and not torch.equal(pos[0, 4:], pos[4, 4:])
    with pytest.raises(ValueError, match="adapter_num_queries=5 must be a square"):
        hf_mm.modeling.get_bridge("qwen_adapter")(8, 16, num_queries=5)
    with pytest.raises(ValueError, match="adapter_heads=3 must divide the LM width 16"):
        hf_mm.modeling.get_bridge("qwen_adapter")(8, 16, num_queries=4, heads=3)
    config, processor = processor_for("qwen_adapter")
    assert config.tokens_per_image(16, 32) == 9 and processor.num_image_tokens(224, 448) == 9


def test_a_processor_saved_before_bridges_owned_their_rule_still_counts_the_same(tmp_path):
    """processor_config.json files written before `bridge_type` was stored carry `downsample_factor` or
    `fixed_image_tokens`; they load with the counts they had."""
    import json

    for legacy, bridge, expected in [({"downsample_factor": 2}, "pixel_shuffle", 4), ({"fixed_image_tokens": 6}, "perceiver", 6),
                                     ({"downsample_factor": 1}, "mlp2x_gelu", 16)]:  # fmt: skip
        _, processor = processor_for(bridge, perceiver_num_latents=6)
        processor.save_pretrained(tmp_path / bridge)
        path = tmp_path / bridge / "processor_config.json"
        saved = json.loads(path.read_text())
        for key in ("bridge_type", "bridge_settings", "fixed_image_tokens"):
            saved.pop(key, None)
        path.write_text(json.dumps({**saved, **legacy}))
        assert HfMmLlavaProcessor.from_pretrained(tmp_path / bridge).num_image_tokens(32, 32) == expected
