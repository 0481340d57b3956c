"""One test per finding of the conformance audit (issue #17) that the mixin does not already pin down by name.

Each failed on the code before the fix: NaN/1e38 merger weights and N(0, 0.02) tower weights after a partial load,
`HfMmQwen2_5_VLConfig()` refused, Qwen forward/generate from `inputs_embeds` unsupported, Flamingo continuing from
a cache without its images silently, `return_dict=False` ignored, and `shift_labels` bypassing the placeholder rule.
"""

import copy
import logging
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_mm import HfMmClipModel, HfMmLlavaForConditionalGeneration
from hf_mm import testing as T
from hf_mm.modeling.compat import CACHE_NAME
from hf_mm.modeling.qwen2_5_vl import HfMmQwen2_5_VLForConditionalGeneration
from hf_mm.modeling.qwen2_5_vl.configuration_qwen2_5_vl import HfMmQwen2_5_VLConfig

from .testers import DualEncoderTester, generative_cases, tiny_clip_config

CASES = generative_cases()


def reload_without(model, tmp_path, dropped: list[str]):
    """`model` saved, the `dropped` tensors removed from its safetensors, and loaded again."""
    model.save_pretrained(tmp_path)
    path = os.path.join(tmp_path, "model.safetensors")
    state = load_file(path)
    assert set(dropped) <= state.keys()
    save_file({k: v for k, v in state.items() if k not in dropped}, path, metadata={"format": "pt"})
    return type(model).from_pretrained(tmp_path)


def test_weights_missing_from_a_checkpoint_initialise_by_their_own_law(tmp_path):
    torch.manual_seed(0)
    merger = ["model.bridge.mlp.0.weight", "model.bridge.mlp.2.weight", "model.bridge.ln_q.weight"]
    qwen = reload_without(HfMmQwen2_5_VLForConditionalGeneration(T.tiny_qwen2_5_vl_config()), tmp_path / "q", merger)
    params = dict(qwen.named_parameters())
    for name in merger[:2]:  # N(0, initializer_range), not left as whatever memory held (NaN, 1e38)
        assert torch.isfinite(params[name]).all() and 0.01 < params[name].std() < 0.03, name
    assert torch.equal(params[merger[2]], torch.ones_like(params[merger[2]]))

    q_proj, bridge = "model.vision_tower.encoder.layers.0.self_attn.q_proj.weight", "model.bridge.linear_1.weight"
    llava = reload_without(HfMmLlavaForConditionalGeneration(T.tiny_llava_config()), tmp_path / "l", [q_proj, bridge])
    params = dict(llava.named_parameters())
    clip_law = T.HIDDEN**-0.5 * (2 * 2) ** -0.5  # CLIP's own q_proj std: width^-1/2 * (2 layers)^-1/2 = 0.088
    assert abs(params[q_proj].std().item() - clip_law) < 0.25 * clip_law  # not the generic 0.02
    assert abs(params[bridge].std().item() - 0.02) < 0.005


def test_qwen2_5_vl_config_defaults_build_qwen2_5_vl_7b():
    config = HfMmQwen2_5_VLConfig()
    assert config.text_config.hidden_size == config.vision_config.out_hidden_size == 3584
    assert config.mrope_section == [16, 24, 24] and config.text_config.num_hidden_layers == 28


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava", "blip2"])
def test_forward_and_generate_from_inputs_embeds(family):
    model_class, config, inputs = CASES[family]
    torch.manual_seed(0)
    model = model_class(config).eval()
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    from_embeds = {k: v for k, v in inputs.items() if k != "input_ids"} | {"inputs_embeds": embeds}
    with torch.no_grad():
        torch.testing.assert_close(model(**from_embeds).logits, model(**inputs).logits, atol=1e-6, rtol=0)
    kwargs = dict(max_new_tokens=4, do_sample=False, suppress_tokens=list(model.placeholder_token_ids()))
    from_ids = model.generate(**inputs, **kwargs)[:, inputs["input_ids"].shape[1] :]
    assert torch.equal(model.generate(**from_embeds, **kwargs), from_ids)


def test_flamingo_refuses_to_continue_from_a_cache_without_its_images():
    model_class, config, inputs = CASES["flamingo"]
    model = model_class(config).eval()
    first = model.generate(**inputs, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(first.sequences[:, -2:])], 1)
    with pytest.raises(ValueError, match="pass the same images again"):
        model.generate(input_ids=first.sequences, attention_mask=mask, **{CACHE_NAME: getattr(first, CACHE_NAME)},
                       max_new_tokens=2, do_sample=False)  # fmt: skip


@pytest.mark.parametrize("family", sorted(CASES) + ["clip"])
def test_return_dict_false_gives_the_same_values_as_a_tuple(family):
    if family == "clip":
        config, inputs = DualEncoderTester(None, tiny_clip_config).prepare_config_and_inputs_for_common()
        model = HfMmClipModel(config).eval()
    else:
        model_class, config, inputs = CASES[family]
        model = model_class(config).eval()
        inputs = {**inputs, "labels": inputs["input_ids"]}
    with torch.no_grad():
        as_dict, as_tuple = model(**inputs), model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], as_dict.to_tuple()[0]) and torch.equal(as_tuple[1], as_dict.to_tuple()[1])


def test_shift_labels_never_target_placeholders_and_reach_the_loss():
    model_class, config, inputs = CASES["llava"]
    torch.manual_seed(0)
    model = model_class(config).eval()
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    shift_labels = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    with torch.no_grad():
        from_labels = model(**inputs, labels=labels).loss
        from_shift = model(**inputs, shift_labels=shift_labels).loss
        count = (labels[:, 1:] != -100).sum()  # placeholders included: the count is deliberately wrong here
        scaled = model(**inputs, labels=labels, num_items_in_batch=count).loss
    torch.testing.assert_close(from_shift, from_labels)
    assert scaled < from_labels  # divided by the caller's count, as Trainer's contract says


def test_a_count_that_includes_placeholders_is_reported(caplog):
    from transformers.utils import logging as hf_logging

    model_class, config, inputs = CASES["blip2"]
    model = model_class(copy.deepcopy(config)).eval()
    hf_logging.enable_propagation()
    with caplog.at_level(logging.WARNING), torch.no_grad():
        model(**inputs, labels=inputs["input_ids"], num_items_in_batch=torch.tensor(10))
    hf_logging.disable_propagation()
    assert "placeholder tokens were loss targets" in caplog.text


def test_a_composition_keyword_the_config_does_not_have_is_refused(tmp_path):
    """A misspelled setting (or another library's loading keyword) would be stored in the config and do nothing."""
    towers = T.save_tiny_vision_tower(tmp_path / "vision"), T.save_tiny_causal_lm(tmp_path / "text")
    with pytest.raises(TypeError, match=r"\['bridge_typ'\] are not fields of HfMmLlavaConfig"):
        HfMmLlavaForConditionalGeneration.from_vision_text_pretrained(*towers, bridge_typ="linear")
    with pytest.raises(TypeError, match=r"\['low_cpu_mem_usage'\] are not fields of HfMmClipConfig"):
        HfMmClipModel.from_vision_text_pretrained(*towers, low_cpu_mem_usage=True)
