"""LLaVA family: image -> vision_tower -> bridge -> <image> placeholders in the LM input -> language_model.

Where this departs from transformers' `LlavaModel` (whose weights import one to one, see `hf_mm.convert`):
- The vision tower and the LM are any AutoModel vision encoder and any AutoModelForCausalLM's bare decoder.
- The projector is a registered bridge (`model.bridge`), chosen by `config.bridge_type`.
- `default` feature selection drops the prefix tokens the tower actually emitted (CLS, registers), measured as
  `seq_len - h * w`, so towers without CLS (SigLIP) keep every patch.
- Placeholder positions are masked out of `labels` in the outer forward: an image token is never a target.
- A forward whose text holds `<image>` tokens but that gets no images (and no cache) raises instead of running
  the placeholder embedding through the LM.
"""

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils.generic import can_return_tuple

from ..bridges import Bridge, build_bridge
from ..compat import take_cache
from ..composition import (
    ComposedCausalLMOutputWithPast,
    ComposedForConditionalGeneration,
    ComposedModel,
    ComposedModelOutputWithPast,
    ComposedPreTrainedModel,
)
from ..towers import image_features_output, read_tower
from .configuration_llava import HfMmLlavaConfig


def bridge_from_config(config: HfMmLlavaConfig) -> nn.Module:
    """The bridge from the concatenated feature layers (D_v * n_layers) to the LM width."""
    in_features = config.vision_config.hidden_size * len(config.vision_feature_layers)
    return build_bridge(config, in_features, config.text_config.hidden_size)


class HfMmLlavaPreTrainedModel(ComposedPreTrainedModel):
    config: HfMmLlavaConfig

    @torch.no_grad()
    def _init_weights(self, module):
        """The one place weights are initialised: the bridge by its own rule (`Bridge.init_weights`, with the LM's
        initializer_range), the untied lm_head N(0, that std). The towers initialise themselves through this same
        hook chain. From a checkpoint, only the weights it lacks are initialised."""
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, Bridge):
            module.init_weights(std)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class HfMmLlavaModel(HfMmLlavaPreTrainedModel, ComposedModel):
    """The three roles without an LM head; returns `last_hidden_state` for TRL's fused-head loss."""

    @staticmethod
    def build_bridge(config: HfMmLlavaConfig) -> nn.Module:
        return bridge_from_config(config)

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        output_hidden_states: bool | None = None,
        skip_unread_blocks: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """(B_img, C, H, W) pixels -> `pooler_output` (B_img, N_tokens, D_text), the bridge outputs; the tower's own
        `last_hidden_state` (and, when asked for, its hidden states) alongside. `kwargs` go to the tower."""
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        layers = [layer] if isinstance(layer, (int, str)) else list(layer)

        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        outputs, read = read_tower(self.vision_tower, pixel_values, layers, skip_unread_blocks, output_hidden_states,
                                   **kwargs)  # fmt: skip
        features = torch.cat(read, dim=-1)  # (B, P + h*w, D_v * L)

        patch_size = self.config.vision_config.patch_size
        grid = (pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size)
        if strategy == "default":
            features = features[:, features.shape[1] - grid[0] * grid[1] :]  # drop the CLS/register prefix
        return image_features_output(outputs, self.bridge(features, grid_size=grid), output_hidden_states)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        cache: Cache | None = None,  # transformers >= 5.24 name
        inputs_embeds: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> ComposedModelOutputWithPast:
        past_key_values = take_cache(past_key_values, cache)
        image_kwargs = {
            "vision_feature_layer": vision_feature_layer,
            "vision_feature_select_strategy": vision_feature_select_strategy,
        }
        inputs_embeds, features = self.prefix_forward(input_ids, pixel_values, inputs_embeds, past_key_values, image_kwargs)  # fmt: skip
        return self.decode(inputs_embeds, attention_mask, position_ids, past_key_values, features, **kwargs)


class HfMmLlavaForConditionalGeneration(HfMmLlavaPreTrainedModel, ComposedForConditionalGeneration):
    """`model.{vision_tower, bridge, language_model}` plus `lm_head`, tied to the LM embeddings when the LM ties.
    Compose from pretrained parts with `from_vision_text_pretrained(vision, text, bridge_type=..., ...)`."""

    _model_class = HfMmLlavaModel

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        cache: Cache | None = None,  # transformers >= 5.24 name
        inputs_embeds: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> ComposedCausalLMOutputWithPast:
        past_key_values = take_cache(past_key_values, cache)
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=past_key_values,  # the inner model takes both names; this one never warns
            inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **{**kwargs, "return_dict": True},
        )
        return self.head_forward(outputs, input_ids, labels, logits_to_keep, **kwargs)


# The names earlier releases exported.
HfMmLlavaModelOutputWithPast = ComposedModelOutputWithPast
HfMmLlavaCausalLMOutputWithPast = ComposedCausalLMOutputWithPast

__all__ = ["HfMmLlavaPreTrainedModel", "HfMmLlavaModel", "HfMmLlavaForConditionalGeneration"]
