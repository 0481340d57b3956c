"""Guards for the next rename in transformers (5.24 renames `past_key_values` to `cache`):
- hf_mm's output classes build on transformers' own and redeclare none of their fields, so a renamed field reaches
  them for free;
- generate() with the cache really uses it: the cache grows by one position per new token, in every family."""

import dataclasses
import inspect
import warnings

import pytest
import torch
import transformers.modeling_outputs as hf_outputs
from transformers.utils import ModelOutput

import hf_mm.modeling.blip2.modeling_blip2
import hf_mm.modeling.clip.modeling_clip
import hf_mm.modeling.composition
import hf_mm.modeling.qwen2_5_vl.modeling_qwen2_5_vit
from hf_mm.modeling.compat import CACHE_NAME

from .testers import generative_cases

MODULES = [
    hf_mm.modeling.composition,
    hf_mm.modeling.blip2.modeling_blip2,
    hf_mm.modeling.clip.modeling_clip,
    hf_mm.modeling.qwen2_5_vl.modeling_qwen2_5_vit,
]
OUTPUTS = sorted(
    {cls for module in MODULES for _, cls in inspect.getmembers(module, inspect.isclass)
     if issubclass(cls, ModelOutput) and cls.__module__.startswith("hf_mm")},
    key=lambda cls: cls.__name__,
)  # fmt: skip
# The fields of transformers' generic outputs that a release may rename (as 5.24 renamed past_key_values); `loss`
# is every output's own first field (transformers' CLIPOutput declares it too).
CASES = generative_cases()
TRANSFORMERS_FIELDS = {
    field.name
    for _, cls in inspect.getmembers(hf_outputs, inspect.isclass)
    if issubclass(cls, ModelOutput) and dataclasses.is_dataclass(cls)
    for field in dataclasses.fields(cls)
} - {"loss"}


@pytest.mark.parametrize("cls", OUTPUTS, ids=[cls.__name__ for cls in OUTPUTS])
def test_output_classes_redeclare_no_field_of_transformers_outputs(cls):
    own = set(vars(cls).get("__annotations__", {}))
    bases_with_cache = [base for base in cls.__mro__[1:] if base.__module__.startswith("transformers")]
    redeclared = own & TRANSFORMERS_FIELDS
    assert not redeclared, f"{cls.__name__} redeclares {sorted(redeclared)}: subclass transformers' own output instead"
    if {"past_key_values", "cache"} & {f.name for f in dataclasses.fields(cls)}:
        assert bases_with_cache, f"{cls.__name__} carries a cache without a transformers output base"


@pytest.mark.parametrize("family", sorted(CASES))
def test_generate_grows_the_cache_it_returns(family):
    model_class, config, inputs = CASES[family]
    model = model_class(config).eval()
    new = 4
    suppress = list(model.placeholder_token_ids())
    out = model.generate(**inputs, max_new_tokens=new, do_sample=False, return_dict_in_generate=True,
                         suppress_tokens=suppress)  # fmt: skip
    cache = getattr(out, CACHE_NAME)
    # The cache holds the prompt and every generated token but the last (whose keys are never computed).
    assert cache is not None and cache.get_seq_length() == inputs["input_ids"].shape[1] + new - 1


@pytest.mark.parametrize("family", sorted(CASES))
def test_forward_takes_the_cache_under_either_name(family):
    """transformers 5.24's generate() passes `cache=`, earlier releases `past_key_values=`: both decode the same."""
    import copy

    model_class, config, inputs = CASES[family]
    model = model_class(config).eval()
    with torch.no_grad():
        prefill = model(**inputs, use_cache=True)
        step = {
            "input_ids": prefill.logits[:, -1:].argmax(-1),
            "attention_mask": torch.ones_like(inputs["attention_mask"][:, :1]),
        }
        step["attention_mask"] = torch.cat([inputs["attention_mask"], step["attention_mask"]], 1)
        if family == "flamingo":
            step |= {"image_hidden_states": prefill.image_hidden_states,
                     "media_offsets": (inputs["input_ids"] == config.image_token_id).sum(1)}  # fmt: skip
        cache = getattr(prefill, CACHE_NAME)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            old = model(**step, past_key_values=copy.deepcopy(cache)).logits
        new = model(**step, cache=copy.deepcopy(cache)).logits
    assert torch.equal(old, new)
    # From 5.24 the old name is deprecated, as in transformers' own models; before, it is the only name.
    deprecated = [w for w in caught if "`past_key_values` is deprecated" in str(w.message)]
    assert len(deprecated) == (1 if CACHE_NAME == "cache" else 0)
    with pytest.raises(ValueError, match="pass the KV cache once"):
        model(**step, cache=cache, past_key_values=cache)
