"""Parity with transformers' LlavaForConditionalGeneration: convert a tiny reference and compare logits."""

import subprocess
import sys

import pytest
import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

import hf_mm
from hf_mm import testing as T
from hf_mm.processing import prepare_tokenizer

TOLERANCE = 1e-5  # fp32, absolute


def reference_llava(vision="clip", feature_layer=(-2, -1), strategy="default", seed=0):
    tokenizer = prepare_tokenizer(T.tiny_tokenizer())
    config = LlavaConfig(
        vision_config=T.tiny_vision_config(vision).to_dict(),
        text_config=T.tiny_text_config("llama").to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=list(feature_layer),
        vision_feature_select_strategy=strategy,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # sharpen the default init so that differences would show in the logits
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    processor = LlavaProcessor(
        image_processor=T.tiny_image_processor(vision),
        tokenizer=tokenizer,
        patch_size=T.PATCH_SIZE,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )
    return model, processor


def padded_batch_with_two_images(processor):
    processor.tokenizer.padding_side = "left"
    texts = ["<image>first <image>second: which is brighter?", "<image>what is this?"]
    return dict(processor(images=T.random_images(3), text=texts, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_converted_llava_matches_reference_logits(strategy):
    reference, ref_processor = reference_llava(strategy=strategy)
    model, processor = hf_mm.convert.from_transformers_llava(reference, ref_processor)
    ref_inputs = padded_batch_with_two_images(ref_processor)
    inputs = padded_batch_with_two_images(processor)
    assert torch.equal(inputs["input_ids"], ref_inputs["input_ids"])  # the same expansion of <image>
    assert (inputs["input_ids"][0] == model.config.image_token_id).sum() == 2 * (16 + (strategy == "full"))
    with torch.no_grad():
        expected, actual = reference(**ref_inputs).logits, model(**inputs).logits
    delta = (expected - actual).abs().max().item()
    print(f"llava parity ({strategy}): max |delta logits| = {delta:.2e} (logit scale {expected.abs().max():.2f})")
    assert delta <= TOLERANCE


def test_converted_generation_matches_reference():
    reference, ref_processor = reference_llava()
    model, processor = hf_mm.convert.from_transformers_llava(reference, ref_processor)
    inputs = padded_batch_with_two_images(processor)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=T.PAD_ID)
    assert torch.equal(model.generate(**inputs, **kwargs), reference.generate(**inputs, **kwargs))


def test_siglip_default_strategy_is_refused_not_silently_changed():
    reference, _ = reference_llava(vision="siglip")
    with pytest.raises(ValueError, match="siglip_vision_model tower has 0 prefix tokens"):
        hf_mm.convert.from_transformers_llava(reference)


def test_cli_converts_a_saved_checkpoint(tmp_path):
    reference, ref_processor = reference_llava()
    reference.save_pretrained(tmp_path / "src")
    ref_processor.save_pretrained(tmp_path / "src")
    command = [sys.executable, "-m", "hf_mm.cli", "convert", "llava", str(tmp_path / "src"), str(tmp_path / "dst")]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    model = hf_mm.HfMmLlavaForConditionalGeneration.from_pretrained(tmp_path / "dst").eval()
    processor = hf_mm.HfMmLlavaProcessor.from_pretrained(tmp_path / "dst")
    inputs = padded_batch_with_two_images(processor)
    with torch.no_grad():
        delta = (model(**inputs).logits - reference(**inputs).logits).abs().max().item()
    assert delta <= TOLERANCE
