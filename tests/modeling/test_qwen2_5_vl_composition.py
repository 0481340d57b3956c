"""Qwen2.5-VL as a first-class family: composed with the loading keywords every family takes (a 4-bit LM reloads
with the same logits; dtype and attention reach both towers), and through `hf-mm sft` from its recipe."""

import bitsandbytes as bnb
import PIL.Image
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

import hf_mm
from hf_mm import HfMmQwen2_5_VLForConditionalGeneration, HfMmQwen2_5_VLProcessor
from hf_mm import testing as T
from hf_mm.cli import main


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen_towers")
    return T.save_tiny_qwen2_5_vit(root / "vit"), T.save_tiny_causal_lm(root / "qwen2", "qwen2")


def ask(processor):
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour?"}]}]
    prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
    return processor(images=[PIL.Image.new("RGB", (56, 56), "red")], text=[prompt], return_tensors="pt")


def test_4bit_lm_composes_saves_and_reloads_with_the_same_logits(towers, tmp_path):
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    model = HfMmQwen2_5_VLForConditionalGeneration.from_vision_text_pretrained(*towers, quantization_config=quantization)  # fmt: skip
    quantized = {name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    assert quantized and all(name.startswith("model.language_model.") for name in quantized)
    assert model.config.quantization_config.llm_int8_skip_modules == ["model.vision_tower", "model.bridge", "lm_head"]
    model.save_pretrained(tmp_path)
    reloaded = HfMmQwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path)
    assert {n for n, m in reloaded.named_modules() if isinstance(m, bnb.nn.Linear4bit)} == quantized
    inputs = ask(HfMmQwen2_5_VLProcessor.from_vision_text_pretrained(*towers))
    # Autograd stays on: bitsandbytes' CPU no-grad 4-bit kernel fails on 32-wide layers (see the LLaVA test).
    assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)


def test_loading_keywords_reach_both_towers(towers):
    model = HfMmQwen2_5_VLForConditionalGeneration.from_vision_text_pretrained(
        *towers, dtype=torch.bfloat16, attn_implementation="eager"
    )
    assert model.model.vision_tower.dtype == model.model.language_model.dtype == torch.bfloat16
    assert model.config.text_config._attn_implementation == "eager"
    with pytest.raises(TypeError):
        HfMmQwen2_5_VLForConditionalGeneration.from_vision_text_pretrained(*towers, torch.float32)  # keywords only


def test_hf_mm_sft_composes_qwen2_5_vl_from_its_recipe(towers, tmp_path, capsys):
    out = tmp_path / "sft"
    cpu = ["--bf16", "false", "--dtype", "float32", "--report_to", "none", "--save_strategy", "no"]
    data = ["--synthetic_train_samples", "8", "--synthetic_image_size", "32", "--max_steps", "2"]
    main(["sft", "--config", "recipes/qwen2_5_vl_instruct.yaml", *cpu, *data, "--disable_tqdm", "true"]
         + ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--output_dir", str(out)]
         + ["--vision_model_name_or_path", towers[0], "--text_model_name_or_path", towers[1]]
         + ["--gradient_checkpointing", "false"])  # fmt: skip
    assert "[rank 0/1] finished 2 steps" in capsys.readouterr().out
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert type(model) is hf_mm.HfMmQwen2_5_VLForConditionalGeneration
    assert type(AutoProcessor.from_pretrained(out)) is HfMmQwen2_5_VLProcessor
