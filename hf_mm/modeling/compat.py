"""Names that moved across the transformers releases hf_mm runs on; the composition core reads them here only.

- transformers 5.24 renamed the KV cache from `past_key_values` to `cache`: in every output class, in `generate()`
  (which now calls `forward(cache=...)`) and in the built-in models' keywords (the old one is accepted with a
  warning until 5.40). hf_mm's forwards take either name, and hand the cache on under the installed release's.
  Its output classes subclass transformers' own, so their field follows the release by itself.
- Releases before `SubConfigSpec` (5.16.1 has none, 5.20.2 has it; `NATIVE_SUB_CONFIG_SPECS`) built no sub-config
  for a composite config: each model's `__post_init__` built its own, and `sub_configs` was a plain class attribute.
  `CompositeConfig` does both on those releases, from the same `sub_configs_defaults` the newer ones read.
- 5.24 gives multimodal outputs `image_outputs` / `video_outputs` (the encoder's output, its `pooler_output` being
  the features the LM receives) and keeps `image_hidden_states` only as a property. Before, hf_mm's own stand-ins
  for `MultimodalBaseModelOutputWithPast` / `MultimodalCausalLMOutputWithPast` carry the same fields.
- `activation_checkpointing_enable` is 5.2x's name for `gradient_checkpointing_enable` (now a deprecated alias).
- `transformers.AutoImageProcessor` is a placeholder that demands torchvision on 5.16 (without it, as on this CPU
  stack); its own module has the real class on every release.
- `slice_logits_to_keep` (the head's `logits_to_keep` rule) is in `modeling_utils` only on the newer releases.
- 5.25 loading under DeepSpeed ZeRO-3 keeps every key conversion it knows on the model, not only those that matched
  the checkpoint, so `save_pretrained` wrote legacy prefixes (`keep_matched_weight_conversions`).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from transformers import PreTrainedConfig
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.models.auto.image_processing_auto import AutoImageProcessor

try:
    from transformers.modeling_outputs import MultimodalBaseModelOutputWithPast, MultimodalCausalLMOutputWithPast
except ImportError:  # transformers < 5.24

    @dataclasses.dataclass
    class MultimodalBaseModelOutputWithPast(BaseModelOutputWithPast):
        image_outputs: BaseModelOutputWithPooling | None = None
        video_outputs: BaseModelOutputWithPooling | None = None

    @dataclasses.dataclass
    class MultimodalCausalLMOutputWithPast(CausalLMOutputWithPast):
        image_outputs: BaseModelOutputWithPooling | None = None
        video_outputs: BaseModelOutputWithPooling | None = None


try:
    from transformers.modeling_utils import slice_logits_to_keep
except ImportError:  # older releases sliced inline: an int keeps the last n positions (0: all), a tensor indexes them

    def slice_logits_to_keep(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
        if isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.ndim == 2:
            if logits_to_keep.dtype == torch.bool:
                return hidden_states[logits_to_keep]
            return torch.take_along_dim(hidden_states, logits_to_keep[..., None], dim=1)
        if isinstance(logits_to_keep, int):
            logits_to_keep = slice(-logits_to_keep, None)
        return hidden_states[:, logits_to_keep, :]


try:
    from transformers.configuration_utils import SubConfigSpec

    NATIVE_SUB_CONFIG_SPECS = True
except ImportError:  # transformers < 5.2x: composite configs built their own sub-configs
    NATIVE_SUB_CONFIG_SPECS = False

    class SubConfigSpec:
        """The part of transformers' `SubConfigSpec` (5.2x) that hf_mm's configs use: a config class, or
        `AutoConfig` with a default `model_type`, built from a dict, or from `init_kwargs` when None."""

        def __init__(self, config_class, model_type=None, init_kwargs=None, optional=False):
            self.config_class, self.optional = config_class, optional
            self.model_type = model_type if model_type is not None else config_class.model_type
            self.init_kwargs = init_kwargs or {}

        def create_subconfig(self, key, subconfig=None):
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING

            if isinstance(subconfig, PreTrainedConfig):
                return subconfig
            if subconfig is not None and not isinstance(subconfig, dict):
                raise TypeError(f"`{key}` must be a dict, a PreTrainedConfig or None, got {type(subconfig)}.")
            subconfig = dict(self.init_kwargs if subconfig is None else subconfig)
            if issubclass(self.config_class, PreTrainedConfig):
                return self.config_class(**subconfig)
            return CONFIG_MAPPING[subconfig.get("model_type", self.model_type)](**subconfig)


_FIELDS = {field.name for field in dataclasses.fields(CausalLMOutputWithPast)}
CACHE_NAME = "cache" if "cache" in _FIELDS else "past_key_values"  # the installed release's name for the KV cache


class CompositeConfig(PreTrainedConfig):
    """Base of hf_mm's composite configs: declares `sub_configs_defaults` (a `SubConfigSpec` per sub-config) and gets
    them built before its own `__post_init__` checks run, on every release of the window."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not NATIVE_SUB_CONFIG_SPECS and "sub_configs_defaults" in cls.__dict__:
            cls.sub_configs = {key: spec.config_class for key, spec in cls.sub_configs_defaults.items()}

    def __post_init__(self, **kwargs):
        if not NATIVE_SUB_CONFIG_SPECS:
            for key, spec in getattr(self, "sub_configs_defaults", {}).items():
                if getattr(self, key) is not None or not spec.optional:
                    setattr(self, key, spec.create_subconfig(key, getattr(self, key)))
        super().__post_init__(**kwargs)


def keep_matched_weight_conversions(model) -> None:
    """Forget the key conversions that matched no checkpoint key, as transformers' plain loader does.

    Under ZeRO-3, transformers (5.25) loads through DeepSpeed and keeps its whole conversion mapping on the model;
    `save_pretrained` reverses every one of them, so an hf_mm model trained under ZeRO-3 was saved under the legacy
    prefixes (`vision_tower.vision_model.*`, `language_model.model.*`) that nothing but transformers' own loader
    maps back (tests/training/test_accelerate_zero3.py). Releases without `was_used` are left as they are.
    """
    conversions = getattr(model, "_weight_conversions", None)
    if conversions and all(hasattr(conversion, "was_used") for conversion in conversions):
        model._weight_conversions = [conversion for conversion in conversions if conversion.was_used()]


def enable_activation_checkpointing(model, **kwargs) -> None:
    """Activation (gradient) checkpointing on, under the installed release's name for it."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(**kwargs)


def take_cache(past_key_values, cache):
    """The KV cache a forward was given, under either name (`forward` names both: generate() checks its keywords
    against the signature); both at once is refused. From 5.24 on, `past_key_values=` warns as transformers' own
    models do (they accept it until 5.40)."""
    if past_key_values is not None and cache is not None:
        raise ValueError("Got both cache= and past_key_values=: pass the KV cache once (5.24 calls it `cache`).")
    if past_key_values is not None and CACHE_NAME == "cache":
        warnings.warn(
            "`past_key_values` is deprecated and will be removed in version 5.40.0. Use `cache` instead.",
            FutureWarning,
            stacklevel=3,
        )
    return past_key_values if past_key_values is not None else cache


__all__ = [
    "AutoImageProcessor",
    "CACHE_NAME",
    "CompositeConfig",
    "MultimodalBaseModelOutputWithPast",
    "MultimodalCausalLMOutputWithPast",
    "NATIVE_SUB_CONFIG_SPECS",
    "SubConfigSpec",
    "enable_activation_checkpointing",
    "slice_logits_to_keep",
    "take_cache",
]
