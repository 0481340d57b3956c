"""hf_mm_qwen2_5_vl: logit parity with transformers' Qwen2_5_VLForConditionalGeneration after import (one image, two
images of different sizes, a padded batch of 2, a video), generation with and without cache, and config checks."""

import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from hf_mm.convert.qwen2_5_vl import from_transformers_qwen2_5_vl
from hf_mm.modeling.qwen2_5_vl import HfMmQwen2_5_ViTConfig
from hf_mm.modeling.qwen2_5_vl.configuration_qwen2_5_vl import HfMmQwen2_5_VLConfig
from tests.modeling.qwen_reference import IMAGE, START, TEXT, VIDEO, VISION, inputs


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        vision_config=VISION, text_config=TEXT, image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START
    )
    reference = Qwen2_5_VLForConditionalGeneration(config).eval()
    return reference, from_transformers_qwen2_5_vl(reference)[0]


@pytest.mark.parametrize("kind", ["one_image", "two_images", "padded_batch", "video"])
def test_logits_match_the_reference(models, kind):
    reference, ours = models
    with torch.no_grad():
        expected = reference(**inputs(kind)).logits
        got = ours(**inputs(kind)).logits
    keep = inputs(kind)["attention_mask"].bool()
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["padded_batch", "video"])
def test_generation_with_and_without_cache_matches_the_reference(models, kind):
    reference, ours = models
    batch = inputs(kind)
    with torch.no_grad():
        expected = reference.generate(**batch, max_new_tokens=4, do_sample=False)
        cached = ours.generate(**batch, max_new_tokens=4, do_sample=False)
        uncached = ours.generate(**batch, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, expected) and torch.equal(uncached, expected)


def test_config_checks_name_the_problem():
    vision = HfMmQwen2_5_ViTConfig(**VISION)
    text = Qwen2_5_VLConfig(text_config=TEXT).text_config
    from transformers import GPT2Config, Qwen2Config

    qwen2 = Qwen2Config(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64)
    with pytest.raises(ValueError, match=r"must have 3 entries .* head_dim / 2 = 8"):
        HfMmQwen2_5_VLConfig(vision_config=vision, text_config=qwen2, mrope_section=[4, 4, 4])
    with pytest.raises(ValueError, match="no rotary position embeddings"):
        HfMmQwen2_5_VLConfig(
            vision_config=vision, text_config=GPT2Config(n_embd=32, n_head=2), mrope_section=[2, 3, 3]
        )
    with pytest.raises(ValueError, match="out_hidden_size=32 must equal the LM's hidden_size=64"):
        HfMmQwen2_5_VLConfig(vision_config=vision, text_config=Qwen2Config(hidden_size=64, num_attention_heads=4),
                             mrope_section=[2, 3, 3])  # fmt: skip
    assert text.model_type == "qwen2_5_vl_text"


def test_saved_model_and_processor_reload_through_auto_classes(models, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from hf_mm.processing import HfMmQwen2_5_VLImageProcessor, HfMmQwen2_5_VLProcessor, prepare_qwen_tokenizer
    from hf_mm.testing import tiny_tokenizer

    _, ours = models
    ours.save_pretrained(tmp_path)
    processor = HfMmQwen2_5_VLProcessor(
        image_processor=HfMmQwen2_5_VLImageProcessor(), tokenizer=prepare_qwen_tokenizer(tiny_tokenizer())
    )
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(ours)
    assert type(AutoProcessor.from_pretrained(tmp_path)) is HfMmQwen2_5_VLProcessor
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs("two_images")).logits, ours(**inputs("two_images")).logits)
    # The M-RoPE wrapper survives the reload (a plain rotary embedding would change the logits).
    assert type(reloaded.model.language_model.rotary_emb).__name__ == "MultimodalRotaryEmbedding"


def test_composes_a_saved_vit_with_any_rope_lm_and_generates(tmp_path):
    import PIL.Image
    from transformers import AutoModelForImageTextToText

    from hf_mm.modeling.qwen2_5_vl import HfMmQwen2_5_ViTModel, HfMmQwen2_5_VLForConditionalGeneration
    from hf_mm.processing import HfMmQwen2_5_VLImageProcessor, HfMmQwen2_5_VLProcessor
    from hf_mm.testing import save_tiny_causal_lm

    tower = HfMmQwen2_5_ViTModel(HfMmQwen2_5_ViTConfig(**VISION))
    tower.save_pretrained(tmp_path / "vit")
    HfMmQwen2_5_VLImageProcessor(size={"shortest_edge": 3136, "longest_edge": 20_000}).save_pretrained(
        tmp_path / "vit"
    )
    for kind in ("llama", "qwen2"):
        text = save_tiny_causal_lm(tmp_path / kind, kind)
        model = HfMmQwen2_5_VLForConditionalGeneration.from_vision_text_pretrained(str(tmp_path / "vit"), text)
        processor = HfMmQwen2_5_VLProcessor.from_vision_text_pretrained(str(tmp_path / "vit"), text)
        assert processor.image_processor.size["longest_edge"] == 20_000
        end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert end in model.generation_config.eos_token_id  # chat answers stop at the end of the turn
        assert torch.equal(model.model.vision_tower.blocks[0].attn.qkv.weight, tower.blocks[0].attn.qkv.weight)
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour?"}]}]
        prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
        batch = processor(images=[PIL.Image.new("RGB", (90, 60), "red")], text=[prompt], return_tensors="pt")
        with torch.no_grad():
            cached = model.generate(**batch, max_new_tokens=3, do_sample=False)
            uncached = model.generate(**batch, max_new_tokens=3, do_sample=False, use_cache=False)
        assert torch.equal(cached, uncached) and cached.shape[1] == batch["input_ids"].shape[1] + 3
        model.save_pretrained(tmp_path / f"vlm-{kind}")
        reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / f"vlm-{kind}").eval()
        with torch.no_grad():
            assert torch.equal(reloaded(**batch).logits, model(**batch).logits)


@pytest.mark.parametrize("original_format", [True, False], ids=["legacy_visual_keys", "model_visual_keys"])
def test_imports_checkpoints_saved_in_either_key_layout(models, tmp_path, original_format):
    from safetensors import safe_open

    reference, ours = models
    reference.save_pretrained(tmp_path, save_original_format=original_format)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        prefixes = {".".join(k.split(".")[:2]) for k in f.keys()}
    if original_format:  # Qwen's own layout
        assert {"visual.blocks", "model.layers"} <= prefixes
    else:
        assert {"model.visual", "model.language_model"} <= prefixes
    imported, _ = from_transformers_qwen2_5_vl(tmp_path)
    with torch.no_grad():
        assert torch.equal(imported(**inputs("video")).logits, ours(**inputs("video")).logits)


def test_composes_a_fresh_vit_from_a_config_when_no_tower_is_given(tmp_path):
    from hf_mm.modeling.qwen2_5_vl import HfMmQwen2_5_VLForConditionalGeneration
    from hf_mm.testing import save_tiny_causal_lm

    text = save_tiny_causal_lm(tmp_path / "qwen2", "qwen2")
    vision = HfMmQwen2_5_ViTConfig(**{**VISION, "depth": 1, "fullatt_block_indexes": [0]})
    model = HfMmQwen2_5_VLForConditionalGeneration.from_vision_text_pretrained(None, text, vision_config=vision)
    assert model.config.vision_config.depth == 1 and model.config.vision_config.out_hidden_size == 32
    assert model.model.bridge.mlp[2].out_features == model.config.text_config.hidden_size


def test_a_folder_with_a_tokenizer_imports_with_its_processor(models, tmp_path):
    import PIL.Image

    from hf_mm.processing import HfMmQwen2_5_VLImageProcessor, prepare_qwen_tokenizer
    from hf_mm.testing import tiny_tokenizer

    reference, _ = models
    reference.save_pretrained(tmp_path)
    prepare_qwen_tokenizer(tiny_tokenizer()).save_pretrained(tmp_path)
    HfMmQwen2_5_VLImageProcessor(size={"shortest_edge": 3136, "longest_edge": 30_000}).save_pretrained(tmp_path)
    model, processor = from_transformers_qwen2_5_vl(tmp_path)
    assert processor.image_processor.size["longest_edge"] == 30_000
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    batch = processor(
        images=[PIL.Image.new("RGB", (80, 60))], text=[processor.apply_chat_template(chat)], return_tensors="pt"
    )
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == int(batch["image_grid_thw"].prod()) // 4
