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

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.utils.generic import can_return_tuple

from ...processing.tokenization import IMAGE_TOKEN, prepare_tokenizer, stop_at_end_of_turn
from ..bridges import PerceiverResampler, QwenAdapterBridge, build_bridge
from ..heads import CausalLMHeadMixin
from ..initialization import GuardedInitMixin
from ..safetensors_only import SafetensorsOnlyMixin
from ..towers import (
    embedding_weight_name,
    image_features_output,
    load_causal_lm,
    load_vision_tower,
    split_causal_lm,
    tower_from_config,
    tower_outputs,
)
from .configuration_llava import HfMmLlavaConfig


@dataclass
class HfMmLlavaModelOutputWithPast(BaseModelOutputWithPast):
    """`last_hidden_state` (B, L, D) of the LM, plus the bridge outputs `image_hidden_states` (N_img_tokens, D)."""

    image_hidden_states: torch.Tensor | None = None


@dataclass
class HfMmLlavaCausalLMOutputWithPast(CausalLMOutputWithPast):
    """transformers' causal-LM output plus the bridge outputs `image_hidden_states`."""

    image_hidden_states: torch.Tensor | None = None


# Roles that composition keeps in full precision. bitsandbytes matches skip entries as prefixes of full module
# names, so they must be full paths ("vision_tower" alone would not match "model.vision_tower").
FULL_PRECISION_ROLES = ("model.vision_tower", "model.bridge", "lm_head")


def _skip_non_lm_roles(quantization_config):
    """A copy of the LM's quantization config that also names the full-precision roles, so that reloading the
    saved composite quantizes exactly what was quantized at composition: the LM's linear layers."""
    quantization_config = copy.deepcopy(quantization_config)
    skip = list(quantization_config.llm_int8_skip_modules or [])
    quantization_config.llm_int8_skip_modules = skip + [m for m in FULL_PRECISION_ROLES if m not in skip]
    return quantization_config


def bridge_from_config(config: HfMmLlavaConfig) -> nn.Module:
    """The bridge from the concatenated feature layers (D_v * n_layers) to the LM width."""
    in_features = config.vision_config.hidden_size * len(config.vision_feature_layers)
    return build_bridge(config.bridge_type, in_features, config.text_config.hidden_size, **config.bridge_settings())


class HfMmLlavaPreTrainedModel(GuardedInitMixin, SafetensorsOnlyMixin, PreTrainedModel):
    config: HfMmLlavaConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module):
        """The one place weights are initialised.

        Towers are built by their own classes, which initialise themselves through this same hook chain; only the
        bridge is ours. Its linear layers get N(0, initializer_range of the LM) and zero bias, as LLaVA's projector
        in transformers, so a fresh bridge emits small features of the LM's embedding scale; a perceiver's latents
        and frame embeddings get N(0, 1), as in Flamingo; the Qwen-VL adapter's queries N(0, 0.02), as in Qwen-VL.
        """
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, PerceiverResampler):  # its own parameters; its layers are visited on their own
            init.normal_(module.latents)  # N(0, 1), as Flamingo's latents and time embeddings
            init.normal_(module.frame_embeddings)
        elif isinstance(module, QwenAdapterBridge):
            init.normal_(module.query, std=0.02)  # Qwen-VL: trunc_normal(0.02)
        elif isinstance(module, nn.MultiheadAttention):  # the packed q/k/v projection is no nn.Linear
            init.normal_(module.in_proj_weight, mean=0.0, std=std)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class HfMmLlavaModel(HfMmLlavaPreTrainedModel):
    """The three roles without an LM head; returns `last_hidden_state` for TRL's fused-head loss."""

    def __init__(self, config: HfMmLlavaConfig):
        super().__init__(config)
        self.vision_tower = tower_from_config(config.vision_config)
        self.bridge = self.build_bridge(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    @staticmethod
    def build_bridge(config: HfMmLlavaConfig) -> nn.Module:
        """This family's bridge for `config` (families that reuse this model swap in their own)."""
        return bridge_from_config(config)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """(B_img, C, H, W) pixels -> `pooler_output` (B_img, N_tokens, D_text), the bridge outputs; the tower's own
        `last_hidden_state` (and, when asked for, its hidden states) alongside. `kwargs` go to the tower."""
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        layers = [layer] if isinstance(layer, int) else list(layer)

        outputs = tower_outputs(self.vision_tower, pixel_values, **kwargs)
        features = torch.cat([outputs.hidden_states[i] for i in layers], dim=-1)  # (B, P + h*w, D_v * L)

        patch_size = self.config.vision_config.patch_size
        grid = (pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size)
        if strategy == "default":
            features = features[:, features.shape[1] - grid[0] * grid[1] :]  # drop the CLS/register prefix
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return image_features_output(outputs, self.bridge(features, grid_size=grid), output_hidden_states)

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """(B, L) bool mask of `<image>` positions, from ids or, without ids, by matching the placeholder embedding."""
        if input_ids is not None:
            return input_ids == self.config.image_token_id
        token = torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
        return (inputs_embeds == self.get_input_embeddings()(token)).all(-1)

    def _scatter_image_features(self, inputs_embeds, placeholder_mask, image_features) -> torch.Tensor:
        n_tokens, n_features = int(placeholder_mask.sum()), image_features.shape[0] * image_features.shape[1]
        if n_tokens != n_features:
            raise ValueError(
                f"Image features and image tokens do not match: tokens: {n_tokens}, features: {n_features}. "
                "Build the text with this model's processor, which expands each <image> into exactly the number of "
                "tokens the bridge emits, and pass one image per <image>."
            )
        image_features = image_features.to(inputs_embeds.device, inputs_embeds.dtype).reshape(
            -1, inputs_embeds.shape[-1]
        )
        return inputs_embeds.masked_scatter(placeholder_mask.unsqueeze(-1), image_features)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> HfMmLlavaModelOutputWithPast:
        image_kwargs = {
            "vision_feature_layer": vision_feature_layer,
            "vision_feature_select_strategy": vision_feature_select_strategy,
        }
        return self._prefix_forward(
            input_ids,
            pixel_values,
            attention_mask,
            position_ids,
            past_key_values,
            inputs_embeds,
            image_kwargs,
            **kwargs,
        )

    def _prefix_forward(
        self, input_ids, pixel_values, attention_mask, position_ids, past_key_values, inputs_embeds, image_kwargs,
        **kwargs,
    ) -> HfMmLlavaModelOutputWithPast:  # fmt: skip
        """The prefix fusion every family built on this model shares: image features (from `get_image_features`
        with `image_kwargs`) scattered into the `<image>` placeholders, then the LM decoder."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, L, D)
        placeholder_mask = self.get_placeholder_mask(input_ids, inputs_embeds)

        image_features = None
        if pixel_values is not None:
            image_features = self.get_image_features(pixel_values, **image_kwargs).pooler_output  # (B_img, N, D)
            inputs_embeds = self._scatter_image_features(inputs_embeds, placeholder_mask, image_features)
        elif placeholder_mask.any() and (past_key_values is None or past_key_values.get_seq_length() == 0):
            raise ValueError(
                f"Image features and image tokens do not match: tokens: {int(placeholder_mask.sum())}, features: 0. "
                "The text holds <image> placeholders but no pixel_values were given."
            )

        return self._decode(inputs_embeds, attention_mask, position_ids, past_key_values, image_features, **kwargs)

    def _decode(self, inputs_embeds, attention_mask, position_ids, past_key_values, image_features, **kwargs):
        """The LM decoder on the fused embeddings; `image_features` are returned as `image_hidden_states`."""
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            **{**kwargs, "return_dict": True},  # generate() passes return_dict; our outputs are always ModelOutput
        )
        return HfMmLlavaModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
        )


class HfMmLlavaForConditionalGeneration(CausalLMHeadMixin, HfMmLlavaPreTrainedModel, GenerationMixin):
    """`model.{vision_tower, bridge, language_model}` plus `lm_head`, tied to the LM embeddings when the LM ties."""

    _model_class = HfMmLlavaModel  # the inner model: families built on this class swap in their own

    def __init__(self, config: HfMmLlavaConfig):
        super().__init__(config)
        self.model = self._model_class(config)
        embed_dim = self.model.get_input_embeddings().embedding_dim
        self.lm_head = nn.Linear(embed_dim, config.text_config.vocab_size, bias=False)
        # The embedding's parameter name depends on the LM (embed_tokens, wte, decoder.embed_tokens ...).
        self._tied_weights_keys = {
            "lm_head.weight": f"model.language_model.{embedding_weight_name(self.model.language_model)}"
        }
        self.post_init()

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_name_or_path: str,
        text_name_or_path: str,
        bridge_type: str = "mlp2x_gelu",
        dtype=None,
        device_map=None,
        attn_implementation: str | None = None,
        quantization_config=None,
        **config_kwargs,
    ) -> "HfMmLlavaForConditionalGeneration":
        """Compose a model from a pretrained vision encoder (or dual encoder) and a pretrained causal LM.

        Both towers keep their weights; the bridge is freshly initialised. The LM's tokenizer gets `<image>` (and
        ChatML tokens when it has no chat template) through `prepare_tokenizer`, and the embeddings are resized to
        fit, exactly as `HfMmLlavaProcessor.from_vision_text_pretrained` prepares the tokenizer.
        `dtype`, `device_map` and `attn_implementation` go to both towers' `from_pretrained`; `quantization_config`
        goes to the LM only (the tower and bridge stay in full precision, as in QLoRA practice).
        """
        load_kwargs = {"dtype": dtype, "device_map": device_map, "attn_implementation": attn_implementation}
        load_kwargs = {k: v for k, v in load_kwargs.items() if v is not None}
        vision_tower = load_vision_tower(vision_name_or_path, **load_kwargs)
        return cls._compose(
            vision_tower, text_name_or_path, load_kwargs, quantization_config, bridge_type=bridge_type, **config_kwargs
        )

    @classmethod
    def _compose(cls, vision_tower, text_name_or_path, load_kwargs: dict, quantization_config=None, **config_kwargs):
        """The composition every prefix family shares: a loaded vision tower, the LM loaded with its tokenizer
        prepared and its embeddings resized, `cls.config_class` built from both configs plus `config_kwargs`, and a
        fresh bridge."""
        causal_lm = load_causal_lm(text_name_or_path, quantization_config=quantization_config, **load_kwargs)

        # Keep the attention each tower resolved; building the composite config resets the shared sub-configs'.
        text_attn = causal_lm.config._attn_implementation
        vision_attn = vision_tower.config._attn_implementation
        tokenizer, token_ids = cls._prepare_tokenizer(AutoTokenizer.from_pretrained(text_name_or_path))
        if len(tokenizer) > causal_lm.get_input_embeddings().num_embeddings:
            causal_lm.resize_token_embeddings(len(tokenizer))
        config = cls.config_class(
            vision_config=vision_tower.config, text_config=causal_lm.config, **token_ids, **config_kwargs
        )
        config._attn_implementation = {"": text_attn, "text_config": text_attn, "vision_config": vision_attn}
        with torch.device("meta"):  # the towers are replaced below; don't allocate them twice
            model = cls(config)
        model.model.vision_tower = vision_tower
        model.model.language_model, model.lm_head = split_causal_lm(causal_lm)
        model.model.bridge = model._new_bridge(device=next(vision_tower.parameters()).device)
        model.generation_config = causal_lm.generation_config
        stop_at_end_of_turn(model.generation_config, tokenizer)
        if getattr(causal_lm, "hf_quantizer", None) is not None:
            model.hf_quantizer = causal_lm.hf_quantizer
            # The flags the quantizer set on the LM (read by PEFT's prepare_model_for_kbit_training and Trainer).
            for flag in ("is_quantized", "is_loaded_in_4bit", "is_loaded_in_8bit", "quantization_method"):
                if hasattr(causal_lm, flag):
                    setattr(model, flag, getattr(causal_lm, flag))
            model.config.quantization_config = _skip_non_lm_roles(causal_lm.config.quantization_config)
        return model.eval()

    @staticmethod
    def _prepare_tokenizer(tokenizer):
        """(the LM's tokenizer with `<image>` and a chat template, the config's token-id fields); the processor's
        `from_vision_text_pretrained` prepares the tokenizer the same way."""
        tokenizer = prepare_tokenizer(tokenizer)
        return tokenizer, {"image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)}

    def _new_bridge(self, device) -> nn.Module:
        """A freshly initialised bridge for `self.config`, on `device`, in the LM's floating dtype."""
        bridge = self.model.build_bridge(self.config)
        bridge.apply(self._init_weights)
        return bridge.to(device=device, dtype=self.model.get_input_embeddings().weight.dtype)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        return self.model.get_image_features(pixel_values, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> HfMmLlavaCausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **{**kwargs, "return_dict": True},
        )
        return self._head_forward(outputs, input_ids, labels, logits_to_keep, **kwargs)

    def _head_forward(self, outputs, input_ids, labels, logits_to_keep, **kwargs) -> HfMmLlavaCausalLMOutputWithPast:
        """LM head and loss on the inner model's outputs (`heads.CausalLMHeadMixin`): placeholders are never loss
        targets, and the loss keywords (num_items_in_batch, shift_labels) reach transformers' loss."""
        logits, loss = self.lm_logits_and_loss(outputs.last_hidden_state, input_ids, labels, logits_to_keep, **kwargs)
        return HfMmLlavaCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )


__all__ = ["HfMmLlavaPreTrainedModel", "HfMmLlavaModel", "HfMmLlavaForConditionalGeneration"]
