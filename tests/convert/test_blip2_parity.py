"""Parity with transformers' Blip2ForConditionalGeneration: convert a tiny reference and compare logits."""

import subprocess
import sys

import pytest
import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2VisionConfig

import hf_mm
from hf_mm import testing as T
from hf_mm.processing import prepare_tokenizer

TOLERANCE = 1e-5  # fp32, absolute
NUM_QUERIES = 4


def reference_blip2(text="opt", seed=0):
    tokenizer = prepare_tokenizer(T.tiny_tokenizer())
    vision = Blip2VisionConfig(hidden_size=T.HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=T.IMAGE_SIZE, patch_size=T.PATCH_SIZE)  # fmt: skip
    config = Blip2Config(
        vision_config=vision.to_dict(),
        qformer_config=T.tiny_qformer_config().to_dict(),
        text_config=T.tiny_text_config(text).to_dict(),
        num_query_tokens=NUM_QUERIES,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # sharpen the default init so that differences would show in the logits
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    processor = Blip2Processor(T.tiny_image_processor("clip"), tokenizer, num_query_tokens=NUM_QUERIES)
    return model, processor


def batch(processor, with_placeholder=True, padding_side="left"):
    # transformers' Blip2Processor prepends the query placeholders *before* left padding; ours pads first. Both
    # agree under right padding, which the id comparison uses.
    processor.tokenizer.padding_side = padding_side
    texts = ["question: which shape is red? answer:", "what is it?"]
    texts = [("<image>" if with_placeholder else "") + t for t in texts]
    return dict(processor(images=T.random_images(2), text=texts, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("text", ["opt", "llama"])
def test_converted_blip2_matches_reference_logits(text):
    reference, ref_processor = reference_blip2(text)
    model, processor = hf_mm.convert.from_transformers_blip2(reference, ref_processor)
    ref_inputs = batch(ref_processor, with_placeholder=False, padding_side="right")
    inputs = batch(processor, padding_side="right")
    assert torch.equal(inputs["input_ids"], ref_inputs["input_ids"])  # the same query placeholders
    assert (inputs["input_ids"] == model.config.image_token_id).sum(1).tolist() == [NUM_QUERIES] * 2
    with torch.no_grad():
        expected, actual = reference(**ref_inputs).logits, model(**inputs).logits
    delta = (expected - actual).abs().max().item()
    print(f"blip2 parity ({text}): max |delta logits| = {delta:.2e} (logit scale {expected.abs().max():.2f})")
    assert delta <= TOLERANCE


def test_converted_generation_matches_reference():
    reference, ref_processor = reference_blip2()
    model, processor = hf_mm.convert.from_transformers_blip2(reference, ref_processor)
    inputs = batch(processor)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=T.PAD_ID)
    assert torch.equal(model.generate(**inputs, **kwargs), reference.generate(**inputs, **kwargs))


def test_cli_converts_a_saved_checkpoint_that_auto_classes_load(tmp_path):
    reference, ref_processor = reference_blip2()
    reference.save_pretrained(tmp_path / "src")
    ref_processor.save_pretrained(tmp_path / "src")
    command = [sys.executable, "-m", "hf_mm.cli", "convert", "blip2", str(tmp_path / "src"), str(tmp_path / "dst")]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    # A fresh process that only imports hf_mm loads it through Auto*.
    script = (
        "import sys, torch, hf_mm\n"
        "from transformers import AutoModelForImageTextToText, AutoProcessor\n"
        "model = AutoModelForImageTextToText.from_pretrained(sys.argv[1]).eval()\n"
        "processor = AutoProcessor.from_pretrained(sys.argv[1])\n"
        "print(type(model).__name__, type(processor).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "dst")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["HfMmBlip2ForConditionalGeneration", "HfMmBlip2Processor"]
    model = hf_mm.HfMmBlip2ForConditionalGeneration.from_pretrained(tmp_path / "dst").eval()
    processor = hf_mm.HfMmBlip2Processor.from_pretrained(tmp_path / "dst")
    inputs = batch(processor)
    with torch.no_grad():
        delta = (model(**inputs).logits - reference(**inputs).logits).abs().max().item()
    assert delta <= TOLERANCE
