"""generate() across the generative families, each with images and a left-padded batch: greedy (cached, uncached
and per sample), sampling, beam search, the static cache, and continuing from a returned cache.

transformers' GenerationTesterMixin is not in its sdist (see sdist.py); these are hf_mm's checks of the same
contracts on inputs that carry pixels.
"""

import pytest
import torch

from hf_mm.modeling.compat import CACHE_NAME

from .testers import generative_cases

CASES = generative_cases()
FAMILIES = sorted(CASES)
NEW = 5


def build(family):
    model_class, config, inputs = CASES[family]
    torch.manual_seed(0)
    model = model_class(config).eval()
    if family == "flamingo":  # fresh gates are 0 (the model is the LM); open them so images reach the text
        for block in model.model.bridge.gated_cross_attn:
            block.attn_gate.data.fill_(0.5)
            block.ff_gate.data.fill_(0.5)
    return model, {k: v.clone() for k, v in inputs.items()}


def greedy(model, inputs, **kwargs):
    pad = model.config.text_config.pad_token_id
    # A random model may emit a placeholder id; an uncached step would then re-read it as an image without pixels.
    kwargs = {"max_new_tokens": NEW, "do_sample": False, "pad_token_id": pad, **kwargs}
    kwargs.setdefault("suppress_tokens", list(model.placeholder_token_ids()))
    return model.generate(**inputs, **kwargs)


def one_sample(family, inputs, index):
    """Sample `index` alone, without its padding, with only its own image."""
    keep = inputs["attention_mask"][index].bool()
    single = {
        "input_ids": inputs["input_ids"][index, keep][None],
        "attention_mask": inputs["attention_mask"][index, keep][None],
    }
    if family == "qwen2_5_vl":
        per_image = inputs["pixel_values"].shape[0] // inputs["image_grid_thw"].shape[0]
        single["pixel_values"] = inputs["pixel_values"][index * per_image : (index + 1) * per_image]
        single["image_grid_thw"] = inputs["image_grid_thw"][index : index + 1]
    else:
        single["pixel_values"] = inputs["pixel_values"][index : index + 1]
    return single


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_cached_uncached_and_padding_free_agree(family):
    model, inputs = build(family)
    cached = greedy(model, inputs)
    assert cached.shape[1] == inputs["input_ids"].shape[1] + NEW
    assert torch.equal(cached, greedy(model, inputs, use_cache=False))
    # The padded sample generates what it generates alone: padding and the other samples' images change nothing.
    alone = greedy(model, one_sample(family, inputs, 0))
    assert torch.equal(cached[0, -NEW:], alone[0, -NEW:])


@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_is_reproducible_and_cache_independent(family):
    model, inputs = build(family)
    kwargs = dict(do_sample=True, top_k=20, temperature=1.5)
    runs = []
    for use_cache in (True, True, False):
        torch.manual_seed(7)
        runs.append(greedy(model, inputs, use_cache=use_cache, **kwargs))
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    assert not torch.equal(runs[0], greedy(model, inputs))  # the temperature really samples


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_with_images(family):
    model, inputs = build(family)
    out = greedy(model, inputs, num_beams=3, num_return_sequences=2, output_scores=True, return_dict_in_generate=True)
    assert out.sequences.shape == (2 * inputs["input_ids"].shape[0], inputs["input_ids"].shape[1] + NEW)
    uncached = greedy(model, inputs, num_beams=3, num_return_sequences=2, use_cache=False)
    assert torch.equal(out.sequences, uncached)
    # Each sample's beams see that sample's image: beam search on sample 0 alone finds the same best sequence.
    alone = greedy(model, one_sample(family, inputs, 0), num_beams=3)
    assert torch.equal(out.sequences[0, -NEW:], alone[0, -NEW:])


@pytest.mark.parametrize("family", FAMILIES)
def test_static_cache_matches_the_dynamic_cache(family):
    model, inputs = build(family)
    assert torch.equal(greedy(model, inputs, cache_implementation="static"), greedy(model, inputs))


@pytest.mark.parametrize("family", FAMILIES)
def test_continuing_from_a_returned_cache(family):
    """Generate 2 tokens, then 3 more from the returned cache (images passed again): the same 5 tokens as one call."""
    model, inputs = build(family)
    full = greedy(model, inputs)
    first = greedy(model, inputs, max_new_tokens=2, return_dict_in_generate=True)
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(first.sequences[:, -2:])], 1)
    more = {**inputs, "input_ids": first.sequences, "attention_mask": mask}
    continued = greedy(model, more, max_new_tokens=NEW - 2, **{CACHE_NAME: getattr(first, CACHE_NAME)})
    assert torch.equal(continued, full)
