"""`_no_split_modules` names the blocks FSDP wraps (accelerate's TRANSFORMER_BASED_WRAP reads it) and device_map
never splits: for every generative family, the tower's block, the LM's decoder layer and the bridge's own block
(Flamingo's gated cross-attention, BLIP-2's Q-Former layer), each a class the model really holds."""

import pytest

from tests.conformance.testers import generative_cases

EXPECTED = {
    "llava": {"CLIPEncoderLayer", "LlamaDecoderLayer"},
    "blip2": {"CLIPEncoderLayer", "LlamaDecoderLayer", "Blip2QFormerLayer"},
    "flamingo": {"CLIPEncoderLayer", "LlamaDecoderLayer", "GatedCrossAttentionBlock"},
    "qwen2_5_vl": {"VisionBlock", "Qwen2DecoderLayer"},
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_no_split_modules_name_every_role_block(family):
    model_class, config, _ = generative_cases()[family]
    model = model_class(config)
    names = set(model._no_split_modules)
    held = {type(module).__name__ for module in model.modules()}
    assert EXPECTED[family] <= names, (family, sorted(names))
    assert EXPECTED[family] <= held  # the names resolve to modules FSDP can wrap
    assert set(model.model._no_split_modules) == names
