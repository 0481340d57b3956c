"""Names that moved across the transformers releases hf_mm runs on; the composition core reads them here only.

- transformers 5.24 renamed the KV cache from `past_key_values` to `cache`: in every output class, in `generate()`
  (which now calls `forward(cache=...)`) and in the built-in models' keywords (the old one is accepted with a
  warning until 5.40). hf_mm's forwards take either name, and hand the cache on under the installed release's.
  Its output classes subclass transformers' own, so their field follows the release by itself.
"""

from __future__ import annotations

import dataclasses

from transformers.modeling_outputs import CausalLMOutputWithPast

_FIELDS = {field.name for field in dataclasses.fields(CausalLMOutputWithPast)}
CACHE_NAME = "cache" if "cache" in _FIELDS else "past_key_values"  # the installed release's name for the KV cache


def take_cache(past_key_values, cache):
    """The KV cache a forward was given, under either name (`forward` names both: generate() checks its keywords
    against the signature); both at once is refused."""
    if past_key_values is not None and cache is not None:
        raise ValueError("Got both cache= and past_key_values=: pass the KV cache once (5.24 calls it `cache`).")
    return past_key_values if past_key_values is not None else cache


__all__ = ["CACHE_NAME", "take_cache"]
