"""`from_vision_text_pretrained` on real `from_pretrained` paths (tiny towers saved to a temp dir)."""

import bitsandbytes as bnb
import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    BitsAndBytesConfig,
    CLIPModel,
)

from hf_mm import HfMmLlavaForConditionalGeneration, HfMmLlavaProcessor
from hf_mm import testing as T


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    paths = {kind: T.save_tiny_vision_tower(root / kind, kind) for kind in ("clip", "siglip")}
    paths["clip_dual"] = T.save_tiny_dual_encoder(root / "clip_dual")
    paths.update({kind: T.save_tiny_causal_lm(root / kind, kind) for kind in ("llama", "qwen2", "gpt2")})
    return paths


def compose(towers, vision, text, **kwargs):
    model = HfMmLlavaForConditionalGeneration.from_vision_text_pretrained(towers[vision], towers[text], **kwargs)
    processor = HfMmLlavaProcessor.from_vision_text_pretrained(towers[vision], towers[text], **kwargs)
    return model, processor


def ask(processor, n=2):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=T.random_images(n), text=[text] * n, return_tensors="pt", padding=True)


@pytest.mark.parametrize(
    "vision, text, bridge", [("clip", "llama", "mlp2x_gelu"), ("siglip", "qwen2", "pixel_shuffle")]
)
def test_towers_keep_their_weights_and_the_processor_matches(towers, vision, text, bridge):
    model, processor = compose(towers, vision, text, bridge_type=bridge)
    source_vision = AutoModel.from_pretrained(towers[vision])
    for name, tensor in source_vision.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], tensor), name
    source_lm = AutoModelForCausalLM.from_pretrained(towers[text])
    vocab = source_lm.config.vocab_size
    for name, tensor in source_lm.base_model.state_dict().items():
        ours = model.model.language_model.state_dict()[name]
        assert torch.equal(ours[:vocab] if "embed" in name else ours, tensor), name
    # <image> and the ChatML tokens were added, and the embeddings grew to hold them.
    assert model.get_input_embeddings().num_embeddings == len(processor.tokenizer) == vocab + 3
    assert model.config.image_token_id == processor.image_token_id
    assert model.config.bridge_type == bridge
    out = model.generate(**ask(processor), max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ask(processor)["input_ids"].shape[1] + 4


def test_vision_from_a_dual_encoder_checkpoint_takes_its_vision_tower(towers):
    model, processor = compose(towers, "clip_dual", "llama")
    source = CLIPModel.from_pretrained(towers["clip_dual"]).vision_model.state_dict()
    ours = model.model.vision_tower.state_dict()
    assert ours.keys() == source.keys()
    assert all(torch.equal(ours[k], source[k]) for k in source)
    assert model(**ask(processor)).logits.isfinite().all()


def test_tied_lm_stays_tied_after_composition_and_reload(towers, tmp_path):
    model, processor = compose(towers, "clip", "gpt2", bridge_type="linear")
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert reloaded.lm_head.weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()
    inputs = ask(AutoProcessor.from_pretrained(tmp_path))
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, model.eval()(**inputs).logits)


def test_dtype_and_attn_implementation_pass_through(towers):
    model, processor = compose(towers, "clip", "llama", dtype=torch.bfloat16, attn_implementation="eager")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.model.language_model.config._attn_implementation == "eager"
    assert model.model.vision_tower.config._attn_implementation == "eager"
    assert model(**ask(processor)).logits.dtype == torch.bfloat16


def test_4bit_lm_composes_saves_and_reloads_with_the_same_logits(towers, tmp_path):
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    model, processor = compose(towers, "clip", "llama", quantization_config=quantization)
    quantized = {name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    assert quantized and all(name.startswith("model.language_model.") for name in quantized)
    assert quantization.llm_int8_skip_modules is None  # the caller's config object is not mutated
    model.save_pretrained(tmp_path)
    reloaded = HfMmLlavaForConditionalGeneration.from_pretrained(tmp_path)
    assert {n for n, m in reloaded.named_modules() if isinstance(m, bnb.nn.Linear4bit)} == quantized
    inputs = ask(processor)
    # Autograd stays on: bitsandbytes' CPU no-grad 4-bit kernel fails on 32-wide layers (a plain 4-bit
    # transformers LlamaForCausalLM fails the same way), while the training path works.
    assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)


def test_generation_stops_at_the_chat_templates_end_of_turn(towers, tmp_path):
    model, processor = compose(towers, "clip", "llama")
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == [T.EOS_ID, end]
    model.save_pretrained(tmp_path)
    assert AutoModelForImageTextToText.from_pretrained(tmp_path).generation_config.eos_token_id == [T.EOS_ID, end]
    # A head that always predicts <|im_end|>: generation must stop after one step instead of running to the limit.
    vocab = model.lm_head.out_features
    model.lm_head = torch.nn.Module()
    model.lm_head.forward = lambda hidden: torch.nn.functional.one_hot(
        torch.full(hidden.shape[:-1], end), vocab
    ).float()
    with torch.no_grad():
        inputs = ask(processor, n=1)
        out = model.eval().generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out[0, inputs["input_ids"].shape[1] :].tolist() == [end]
