"""What the mixin tests that feed placeholders without pixels are about, checked with images (see testers.NO_PIXELS),
and the gradient-checkpointing check that transformers skips for Llava and Idefics.

- eager attention equals SDPA, on left- and right-padded batches, for every family (CLIP: padded captions);
- RoPE scaling set in the LM's config reaches the composite: `linear` changes the outputs, `dynamic` leaves a short
  input alone (it only rescales past `max_position_embeddings`);
- gradient checkpointing recomputes both towers and leaves every gradient unchanged, for every family.
"""

import copy

import pytest
import torch

from hf_mm import HfMmClipModel
from hf_mm.modeling.compat import enable_activation_checkpointing

from .sdist import common_tests
from .testers import DualEncoderTester, generative_cases, tiny_clip_config

CASES = generative_cases()
FAMILIES = sorted(CASES)


def right_pad(inputs: dict, pad_id: int, n: int = 3) -> dict:
    """The left padding of `generative_cases` moved to the end of the first sample (its text is shorter)."""
    ids, mask = inputs["input_ids"].clone(), inputs["attention_mask"].clone()
    ids[0], mask[0] = ids[0].roll(-n), mask[0].roll(-n)
    return {**inputs, "input_ids": ids, "attention_mask": mask}


def build(family, attn_implementation=None):
    model_class, config, inputs = CASES[family]
    torch.manual_seed(0)
    model = model_class(copy.deepcopy(config)).eval()
    if family == "flamingo":  # fresh gates are 0; open them so the images reach the text
        for block in model.model.bridge.gated_cross_attn:
            block.attn_gate.data.fill_(0.5)
            block.ff_gate.data.fill_(0.5)
    if attn_implementation:
        model.set_attn_implementation(attn_implementation)
    return model, dict(inputs)


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("family", FAMILIES)
def test_eager_matches_sdpa_with_images(family, padding):
    eager, inputs = build(family, "eager")
    sdpa, _ = build(family, "sdpa")
    assert eager.config.text_config._attn_implementation == "eager"
    assert sdpa.config.text_config._attn_implementation == "sdpa"
    if padding == "right":
        inputs = right_pad(inputs, eager.config.text_config.pad_token_id)
    with torch.no_grad():
        expected, got = eager(**inputs).logits, sdpa(**inputs).logits
    keep = inputs["attention_mask"].bool()
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=1e-5)


def test_eager_matches_sdpa_for_the_dual_encoder():
    config, inputs = DualEncoderTester(None, tiny_clip_config).prepare_config_and_inputs_for_common()
    outputs = []
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        model = HfMmClipModel(copy.deepcopy(config)).eval()
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            outputs.append(model(**inputs))
    assert inputs["attention_mask"].eq(0).any()  # a padded caption is in the batch
    torch.testing.assert_close(outputs[1].logits_per_image, outputs[0].logits_per_image, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_rope_scaling_from_the_lm_config_reaches_the_composite(family):
    common = common_tests()
    model_class, config, inputs = CASES[family]
    outputs = {}
    for rope_type in ("default", "linear", "dynamic"):
        config = copy.deepcopy(config)
        params = {"rope_type": rope_type, "rope_theta": 10_000.0}
        if rope_type != "default":
            params["factor"] = 10.0
        common._set_config_rope_params(config.text_config, params)
        torch.manual_seed(0)
        model = model_class(config).eval()
        with torch.no_grad():
            outputs[rope_type] = model.model(**inputs).last_hidden_state
    keep = inputs["attention_mask"].bool()
    # `dynamic` rescales only past max_position_embeddings (512); this input is short.
    torch.testing.assert_close(outputs["dynamic"][keep], outputs["default"][keep], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(outputs["linear"][keep], outputs["default"][keep], atol=1e-5)


def linear_calls(module: torch.nn.Module) -> list:
    """A list that grows by one per forward of any nn.Linear inside `module` (recomputation included: the hooks
    sit inside the checkpointed layers, not on them)."""
    calls = []
    for linear in (m for m in module.modules() if isinstance(m, torch.nn.Linear)):
        linear.register_forward_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_recomputes_both_towers_and_leaves_every_gradient_unchanged(family):
    """Every family: with activation checkpointing on, the vision tower's and the LM's layers run again in backward
    (so their activations were not kept), and every gradient equals the run without it."""
    grads, calls = [], []
    for checkpointing in (False, True):
        model, inputs = build(family)
        if family == "blip2":  # the Q-Former's dropout would draw different masks in the two runs
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        model.train()
        if checkpointing:
            enable_activation_checkpointing(model)
        towers = {role: linear_calls(getattr(model.model, role)) for role in ("vision_tower", "language_model")}
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        calls.append({role: len(count) for role, count in towers.items()})
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for role in ("vision_tower", "language_model"):
        assert calls[1][role] > calls[0][role] > 0, (role, calls)  # recomputed in backward
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)
