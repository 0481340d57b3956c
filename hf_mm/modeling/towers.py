"""Loading pretrained towers for composition: any vision encoder (or the vision half of a dual encoder) and any
causal LM, split into its bare decoder and its output head. Shared by every family's `from_vision_text_pretrained`.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel


def load_vision_config(name_or_path: str, **hub_kwargs) -> PreTrainedConfig:
    """The vision encoder config of a checkpoint; for a dual encoder (CLIPModel, SiglipModel) its `vision_config`."""
    config = AutoConfig.from_pretrained(name_or_path, **hub_kwargs)
    return getattr(config, "vision_config", None) or config


def load_vision_tower(name_or_path: str, **load_kwargs) -> PreTrainedModel:
    """A vision encoder with its pretrained weights.

    A dual-encoder checkpoint keeps its tower under `vision_model.*`, the same prefix the stand-alone vision classes
    (CLIPVisionModel, SiglipVisionModel) use, so loading the vision class on it reads exactly the tower's weights and
    ignores the text half.
    """
    vision_config = load_vision_config(name_or_path)
    return AutoModel.from_pretrained(name_or_path, config=vision_config, **load_kwargs)


def load_causal_lm(name_or_path: str, **load_kwargs) -> PreTrainedModel:
    """Any AutoModelForCausalLM checkpoint; callers take `.base_model` (the decoder) and `get_output_embeddings()`."""
    return AutoModelForCausalLM.from_pretrained(name_or_path, **load_kwargs)


def split_causal_lm(causal_lm: PreTrainedModel):
    """(decoder, lm_head) of a causal LM. A head with a bias would be lost by hf_mm's bias-free head, so refuse it."""
    lm_head = causal_lm.get_output_embeddings()
    if getattr(lm_head, "bias", None) is not None:
        raise ValueError(
            f"{type(causal_lm).__name__} has an LM head with a bias, which hf_mm's bias-free lm_head would drop."
        )
    return causal_lm.base_model, lm_head


__all__ = ["load_vision_config", "load_vision_tower", "load_causal_lm", "split_causal_lm"]
