"""Loading pretrained towers for composition: any vision encoder (or the vision half of a dual encoder) and any
causal LM, split into its bare decoder and its output head. Shared by every family's `from_vision_text_pretrained`.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_MAPPING,
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    Blip2VisionConfig,
    Blip2VisionModel,
    PreTrainedConfig,
    PreTrainedModel,
    SiglipTextConfig,
    SiglipTextModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

try:
    from transformers.utils.output_capturing import maybe_install_capturing_hooks
except ImportError:  # a release that records hidden states without hooks
    maybe_install_capturing_hooks = None

from .safetensors_only import load_safetensors

# Towers transformers does not map in AutoModel (5.23), listed here instead of registering transformers' own
# classes in its global registry.
_UNMAPPED_TOWERS = {SiglipTextConfig: SiglipTextModel, Blip2VisionConfig: Blip2VisionModel}


def is_buildable_tower(config: PreTrainedConfig) -> bool:
    """Whether `tower_from_config` can build `config`."""
    return type(config) in MODEL_MAPPING or type(config) in _UNMAPPED_TOWERS


def tower_from_config(config: PreTrainedConfig) -> PreTrainedModel:
    """A randomly initialised tower for `config` (AutoModel, or the class transformers leaves unmapped)."""
    if type(config) in _UNMAPPED_TOWERS:
        return _UNMAPPED_TOWERS[type(config)]._from_config(config)
    return AutoModel.from_config(config)


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
    cls = _UNMAPPED_TOWERS.get(type(vision_config), AutoModel)
    return load_safetensors(cls.from_pretrained, name_or_path, config=vision_config, **load_kwargs)


def load_text_tower(name_or_path: str, **load_kwargs) -> PreTrainedModel:
    """A text encoder (or a causal LM's bare decoder) with its pretrained weights; for a dual encoder (CLIPModel,
    SiglipModel) its text tower, read from the `text_model.*` keys the stand-alone text classes also use."""
    config = AutoConfig.from_pretrained(name_or_path)
    text_config = getattr(config, "text_config", None) if hasattr(config, "vision_config") else None
    text_config = text_config or config
    cls = _UNMAPPED_TOWERS.get(type(text_config), AutoModel)
    return load_safetensors(cls.from_pretrained, name_or_path, config=text_config, **load_kwargs)


def load_causal_lm(name_or_path: str, **load_kwargs) -> PreTrainedModel:
    """Any AutoModelForCausalLM checkpoint; callers take `.base_model` (the decoder) and `get_output_embeddings()`."""
    return load_safetensors(AutoModelForCausalLM.from_pretrained, name_or_path, **load_kwargs)


def check_text_config(text_config: PreTrainedConfig) -> None:
    """A causal LM that AutoModelForCausalLM can build, and not one of our own composite models."""
    model_type = getattr(text_config, "model_type", "")
    if type(text_config) not in MODEL_FOR_CAUSAL_LM_MAPPING or model_type.startswith("hf_mm_"):
        raise ValueError(
            f"text_config must be a causal LM config (e.g. llama, qwen2, gpt2, opt); got model_type={model_type!r}. "
            "Any model that AutoModelForCausalLM can build works."
        )


def tower_outputs(vision_tower: nn.Module, pixel_values: torch.Tensor, **kwargs):
    """(B, C, H, W) -> the tower's ModelOutput with every hidden state (the features are read from them)."""
    pixel_values = pixel_values.to(vision_tower.dtype)
    return vision_tower(pixel_values=pixel_values, output_hidden_states=True, return_dict=True, **kwargs)


LAST_HIDDEN_STATE = "last_hidden_state"
BLOCK_LISTS = ("encoder.layers", "encoder.layer")  # CLIP, SigLIP, BLIP-2's ViT | ViT, DINOv2


def block_list(vision_tower: nn.Module) -> tuple[nn.Module, str, nn.ModuleList] | None:
    """(parent, attribute, blocks) of the tower's list of transformer blocks, or None for a tower without one."""
    for name, module in vision_tower.named_modules():
        if isinstance(module, nn.ModuleList) and name.endswith(BLOCK_LISTS):
            parent_name, _, attribute = name.rpartition(".")
            return vision_tower.get_submodule(parent_name), attribute, module
    return None


@contextlib.contextmanager
def running_blocks(vision_tower: nn.Module, found: tuple[nn.Module, str, nn.ModuleList] | None, depth: int | None):
    """Inside, the tower runs its first `depth` blocks only (None: all). The block list is swapped for its prefix
    and put back on exit: parameters, state-dict keys and checkpoints never see the difference."""
    if found is None or depth is None or depth >= len(found[2]):
        yield
        return
    parent, attribute, blocks = found
    if maybe_install_capturing_hooks is not None:
        # transformers (5.2x) hooks the blocks it records hidden states from on a model's first call: hook the whole
        # list now, or a first call inside here would hook the prefix alone, for good.
        for module in vision_tower.modules():
            if isinstance(module, PreTrainedModel):
                maybe_install_capturing_hooks(module)
    setattr(parent, attribute, blocks[:depth])
    try:
        yield
    finally:
        setattr(parent, attribute, blocks)


def read_tower(vision_tower: nn.Module, pixel_values: torch.Tensor, layers: list, skip_unread_blocks: bool = False,
               output_hidden_states: bool | None = False, **kwargs):  # fmt: skip
    """(the tower's outputs, [(B, N, D_v) features for each of `layers`]) with `tower_features`' meaning of a
    layer. With `skip_unread_blocks` (the models' forward passes it) the tower runs only up to the deepest block
    that is read: LLaVA's `vision_feature_layer=-2` never runs the last block, whose output nothing uses; the
    tower's `last_hidden_state` is then that block's. Without it (`get_image_features`, whose outputs transformers'
    contract fixes), when the caller returns every hidden state or attention, for a "last_hidden_state" read, and
    under torch.compile (swapping modules mid-trace would break the graph), the whole tower runs."""
    whole = (not skip_unread_blocks or output_hidden_states or kwargs.get("output_attentions")
             or LAST_HIDDEN_STATE in layers or torch.compiler.is_compiling())  # fmt: skip
    found = None if whole else block_list(vision_tower)
    depth = None
    if found is not None:
        total = len(found[2])  # hidden_states has total + 1 entries: the embeddings, then each block's output
        layers = [layer % (total + 1) for layer in layers]  # absolute: the truncated tuple is shorter
        depth = max(*layers, 1)  # at least one block: transformers records the embeddings from its input
    with running_blocks(vision_tower, found, depth):
        outputs = tower_outputs(vision_tower, pixel_values, **kwargs)
    return outputs, [tower_features(outputs, layer) for layer in layers]


def tower_features(outputs, layer: int | str) -> torch.Tensor:
    """(B, N, D_v) features from `tower_outputs`, chosen by `vision_feature_layer`, which means the same in every
    family: an int indexes the tower's `hidden_states` (0: the embeddings, -1: the last block's output, before any
    final norm), and "last_hidden_state" is the tower's own final output (after its post-layernorm where it has
    one, as BLIP-2's ViT and SigLIP). Every token is kept, CLS included."""
    return outputs.last_hidden_state if layer == LAST_HIDDEN_STATE else outputs.hidden_states[layer]


class FeatureLayerCompatMixin:
    """For BLIP-2's and Flamingo's configs, whose `vision_feature_layer=-1` meant `last_hidden_state` before the
    families agreed on one meaning. A config saved since then marks an explicit -1 (`FEATURE_LAYER_MARKER`); an
    unmarked -1 is from before, and loads as "last_hidden_state", so old checkpoints keep their outputs."""

    FEATURE_LAYER_MARKER = "vision_feature_layer_indexes"

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        config_dict = dict(config_dict)
        if config_dict.pop(cls.FEATURE_LAYER_MARKER, None) is None and config_dict.get("vision_feature_layer") == -1:
            config_dict["vision_feature_layer"] = LAST_HIDDEN_STATE
        return super().from_dict(config_dict, **kwargs)

    def to_dict(self):
        config_dict = super().to_dict()
        if self.vision_feature_layer == -1:
            config_dict[self.FEATURE_LAYER_MARKER] = "hidden_states"
        return config_dict


def image_features_output(outputs, pooler_output, output_hidden_states: bool | None) -> BaseModelOutputWithPooling:
    """transformers' v5 `get_image_features` contract: the tower's `last_hidden_state` (B, N, D_v), the bridge
    outputs as `pooler_output` (B_img, N_tokens, D_text: one entry per image, what serving engines scatter), and the
    tower's hidden states and attentions only when they were asked for."""
    return BaseModelOutputWithPooling(
        last_hidden_state=outputs.last_hidden_state,
        pooler_output=pooler_output,
        hidden_states=outputs.hidden_states if output_hidden_states else None,
        attentions=getattr(outputs, "attentions", None),
    )


def check_feature_layer(vision_config: PreTrainedConfig, layer: int | str) -> None:
    """`layer` indexes one of the tower's hidden states (the embeddings and every block), or is
    "last_hidden_state" (see `tower_features`)."""
    if isinstance(layer, str):
        if layer != LAST_HIDDEN_STATE:
            raise ValueError(
                f"vision_feature_layer={layer!r}: give an index into the tower's hidden states, or "
                f"{LAST_HIDDEN_STATE!r} for the tower's own final output."
            )
        return
    num_states = vision_config.num_hidden_layers + 1
    if not -num_states <= layer < num_states:
        raise ValueError(
            f"vision_feature_layer={layer} is out of range: the tower has {num_states} hidden states, so it must lie "
            f"in [{-num_states}, {num_states - 1}]."
        )


def embedding_weight_name(language_model: PreTrainedModel) -> str:
    """The input embedding's weight name inside `language_model` (embed_tokens, wte, decoder.embed_tokens ...),
    for `_tied_weights_keys`."""
    embedding = language_model.get_input_embeddings()
    for name, module in language_model.named_modules():
        if module is embedding:
            return f"{name}.weight"
    raise ValueError("The language model's input embedding is not one of its submodules.")


def split_causal_lm(causal_lm: PreTrainedModel):
    """(decoder, lm_head) of a causal LM. A head with a bias would be lost by hf_mm's bias-free head, so refuse it."""
    lm_head = causal_lm.get_output_embeddings()
    if getattr(lm_head, "bias", None) is not None:
        raise ValueError(
            f"{type(causal_lm).__name__} has an LM head with a bias, which hf_mm's bias-free lm_head would drop."
        )
    return causal_lm.base_model, lm_head


__all__ = [
    "is_buildable_tower",
    "tower_from_config",
    "load_vision_config",
    "load_vision_tower",
    "load_text_tower",
    "load_causal_lm",
    "split_causal_lm",
    "embedding_weight_name",
    "check_text_config",
    "check_feature_layer",
    "tower_features",
    "LAST_HIDDEN_STATE",
    "FeatureLayerCompatMixin",
    "tower_outputs",
    "image_features_output",
]
