"""Flamingo training: the recipe through the CLI, and a learning check on interleaved two-image samples.

Learning check (stated margin; chance is 50%): "Which image has more circles, the first or the second?" on
held-out scenes with a random frozen CLIP tower and a frozen tiny Llama that was first trained here on the same
question asked about *text* ("two circles. no circles. Which image ...?"), as a pretrained LM arrives knowing
language. 300 align steps (resampler + gated blocks only) must reach >= 60% exact match.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer, CLIPVisionConfig

from hf_mm import HfMmFlamingoForConditionalGeneration, HfMmFlamingoProcessor
from hf_mm import testing as T
from hf_mm.cli import main
from hf_mm.data import synthetic
from hf_mm.eval import evaluate, predict
from hf_mm.processing import prepare_flamingo_tokenizer
from tests.training.helpers import CPU, TINY_DATA, train_align

COUNT_WORDS = ("no circles", "one circle", "two circles", "three circles")


def test_flamingo_recipe_trains_only_the_bridge(tmp_path):
    vision = T.save_tiny_vision_tower(tmp_path / "vision")
    text = T.save_tiny_causal_lm(tmp_path / "lm", "qwen2")
    out = tmp_path / "flamingo"
    small = ["--num_latents", "4", "--cross_attn_every_n_layers", "1", "--synthetic_task", "compare_counts"]
    main(["sft", "--config", "recipes/flamingo_align.yaml", *CPU, *TINY_DATA, *small, "--vision_model_name_or_path",
          vision, "--text_model_name_or_path", text, "--output_dir", str(out)])  # fmt: skip
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert isinstance(model, HfMmFlamingoForConditionalGeneration) and model.config.num_latents == 4
    lm = AutoModelForCausalLM.from_pretrained(text)
    name = "model.embed_tokens.weight"  # the LM stayed frozen (its original rows)
    rows = lm.get_input_embeddings().weight.shape[0]
    assert torch.equal(
        model.model.language_model.state_dict()[name.removeprefix("model.")][:rows], lm.state_dict()[name]
    )
    gates = [float(block.attn_gate) for block in model.model.bridge.gated_cross_attn]
    assert any(gate != 0.0 for gate in gates)  # the gates moved off zero


def _text_chat(rng):
    """The comparison asked about text: what the frozen LM knows before it ever sees an image."""
    low = rng.randrange(3)
    high = rng.randrange(low + 1, 4)
    first = rng.random() < 0.5
    counts = (high, low) if first else (low, high)
    user = [{"type": "text", "text": f"{COUNT_WORDS[c]}. "} for c in counts]
    user.append({"type": "text", "text": synthetic.COMPARE_QUESTION})
    return [{"role": "user", "content": user}, {"role": "assistant", "content": "first" if first else "second"}]


def _exact_match(model, processor, samples) -> float:
    return evaluate(predict(model, processor, samples, max_new_tokens=6, batch_size=50), samples)["overall"]


@pytest.mark.slow
def test_two_image_comparison_beats_chance_with_the_lm_frozen(tmp_path):
    lm_path = T.train_tiny_causal_lm(tmp_path / "lm", _text_chat, steps=300, prepare=prepare_flamingo_tokenizer)
    lm, tokenizer = AutoModelForCausalLM.from_pretrained(lm_path), AutoTokenizer.from_pretrained(lm_path)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8)  # fmt: skip
    ids = {key: tokenizer.convert_tokens_to_ids(t) for key, t in (("image_token_id", "<image>"), ("end_of_chunk_token_id", "<|endofchunk|>"))}  # fmt: skip
    config = T.tiny_flamingo_config(vision_config=vision, text_config=lm.config, **ids)
    torch.manual_seed(0)
    model = HfMmFlamingoForConditionalGeneration(config)
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    processor = HfMmFlamingoProcessor(T.tiny_image_processor("clip"), tokenizer)
    held_out = synthetic.compare_counts(200, image_size=32, split="test")
    before = _exact_match(model, processor, held_out)

    model = train_align(model, processor, synthetic.compare_counts(3000, image_size=32), tmp_path / "run")
    after = _exact_match(model, processor, held_out)
    print(f"Flamingo two-image comparison, exact match on held-out scenes: {before:.1%} -> {after:.1%} (chance 50%)")
    assert after >= 0.5 + 0.1
    for name, value in model.model.language_model.state_dict().items():
        assert torch.equal(value, lm.model.state_dict()[name]), name  # the LM stayed frozen
